#!/usr/bin/python3
"""Plot a sauron-compress run: channels per layer, model size and Dice,
seconds per epoch, all over the epochs.

    /usr/bin/python3 tools/plot_run.py RUN_DIR OUT.png [--title TEXT] [--force]

RUN_DIR is the run folder sauron-compress writes next to its output
(OUT.sslim.run).  It reads epochs.csv (always written by the trainer) and,
when present, sauron_epochs.csv, sauron_summary.json and summary.txt.

One PNG with three panels sharing the epoch axis:
  (a) output channels of every Sauron pruning point (encoder solid, blue;
      up-convolutions dotted and decoder dashed, red), log2 scale;
  (b) FLOPs per sample (GFLOPs, left axis; the right axis reads the same
      line as % of the imported model) and parameters as % of the imported
      model, with the validation Dice on an extra axis;
  (c) wall seconds per epoch (training + validation) and the mean time of
      one training step.
Epoch 0 is the imported model, evaluated before any training: it is kept
and marked.  Sizes come from sauron_epochs.csv when it covers every epoch:
they are the model after that epoch's pruning, FLOPs per sample at the
training patch.  Otherwise (a --no-prune run) from epochs.csv, whose FLOPs
are per training batch and are divided by the batch size from summary.txt.

A small table (epoch, seconds, step seconds, GFLOPs/sample, params,
channels, Dice) goes to stdout so logs keep the numbers without the PNG.
The PNG is written to a temporary name and renamed; an existing OUT is
kept unless --force.  Needs matplotlib (Debian: python3-matplotlib;
`make deps` installs it for the benchmarks).
"""

import csv
import json
import math
import os
import re
import sys
import tempfile

TOOL = "plot_run"


def die(msg):
    print(f"error: {TOOL}: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv):
    pos, title, force = [], None, False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--force":
            force = True
        elif a == "--title":
            if i + 1 >= len(argv):
                die("--title needs a value")
            i += 1
            title = argv[i]
        elif a in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        elif a.startswith("--"):
            die(f"unknown option {a}; usage: plot_run.py RUN_DIR OUT.png "
                "[--title TEXT] [--force]")
        else:
            pos.append(a)
        i += 1
    if len(pos) != 2:
        die("usage: plot_run.py RUN_DIR OUT.png [--title TEXT] [--force]")
    return pos[0], pos[1], title, force


def num(s):
    s = s.strip()
    return math.nan if s == "" else float(s)  # float() reads "nan" too


def read_csv(path):
    """Columns of a numeric CSV as {name: [float]}, rows sorted by epoch
    (the last row wins if a resumed run repeated an epoch)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        die(f"cannot read {path}: {e.strerror}")
    if not rows or "epoch" not in rows[0]:
        die(f"{path} has no header with an 'epoch' column; "
            "is this a run folder written by sauron-compress?")
    head = rows[0]
    if len(set(head)) != len(head):
        die(f"{path}: repeated column names in the header")
    by_epoch = {}
    for ln, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        if len(r) != len(head):
            die(f"{path} line {ln}: {len(r)} fields, the header has "
                f"{len(head)}; truncated file? re-run or repair it")
        try:
            v = [num(x) for x in r]
        except ValueError:
            die(f"{path} line {ln}: a field is not a number")
        e = v[head.index("epoch")]
        if not (e >= 0 and e == int(e)):
            die(f"{path} line {ln}: epoch {r[head.index('epoch')]} is not "
                "a whole number >= 0")
        by_epoch[int(e)] = v
    if not by_epoch:
        die(f"{path} has a header but no rows; the run wrote no epoch")
    eps = sorted(by_epoch)
    return {h: [by_epoch[e][k] for e in eps] for k, h in enumerate(head)}


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def summary_field(text, pattern):
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else None


def load_run(run):
    if not os.path.isdir(run):
        die(f"{run} is not a directory; give the run folder sauron-compress "
            "wrote (OUT.sslim.run)")
    ep_path = os.path.join(run, "epochs.csv")
    if not os.path.isfile(ep_path):
        die(f"no epochs.csv in {run}; is it a run folder written by "
            "sauron-compress (OUT.sslim.run)?")
    ep = read_csv(ep_path)
    if "seconds" not in ep:
        die(f"{ep_path} has no 'seconds' column; not a trainer epochs.csv")
    text = read_text(os.path.join(run, "summary.txt"))
    batch = summary_field(text, r"\bbatch (\d+)")
    info = {
        "model": summary_field(text, r"^model:\s+(.+?)\s*$"),
        "patch": summary_field(text, r"\bpatch (\S+)"),
        "iters": summary_field(text, r"^epochs:\s+\d+ x (\d+) iterations"),
        "written": summary_field(
            text, r"^result: the network (?:of|after) epoch (\d+)"),
    }
    ssum = {}
    sj = os.path.join(run, "sauron_summary.json")
    if os.path.isfile(sj):
        try:
            with open(sj) as f:
                ssum = json.load(f)
        except (OSError, ValueError) as e:
            die(f"{sj} is not readable JSON ({e}); re-run sauron-compress "
                "or delete the file")
    if isinstance(ssum.get("written_epoch"), int):
        info["written"] = ssum["written_epoch"]
    if info["written"] is not None:
        info["written"] = int(info["written"])

    r = {"epoch": [int(e) for e in ep["epoch"]], "seconds": ep["seconds"]}
    n = len(r["epoch"])
    nans = [math.nan] * n
    # Epoch 0 trains nothing: its step time is 0, which is no measurement.
    r["step"] = [s if s > 0 else math.nan
                 for s in ep.get("step_seconds", nans)]
    r["dice"] = ep.get("dice_mean", ep.get("dice", nans))

    size, src, per = ep, "epochs.csv", "batch"
    sp = os.path.join(run, "sauron_epochs.csv")
    if os.path.isfile(sp):
        se = read_csv(sp)
        if set(r["epoch"]) <= {int(e) for e in se["epoch"]}:
            keep = [i for i, e in enumerate(se["epoch"])
                    if int(e) in set(r["epoch"])]
            size = {k: [v[i] for i in keep] for k, v in se.items()}
            src, per = "sauron_epochs.csv", "sample"
    flops = size.get("flops", nans)
    if per == "batch" and batch:
        flops = [f / int(batch) for f in flops]
        per = "sample"
    r["flops"], r["flops_per"], r["size_src"] = flops, per, src
    r["params"] = size.get("params", nans)
    r["channels"] = size.get("channels")
    r["points"] = [(k[3:], v) for k, v in size.items() if k.startswith("ch_")]
    r["info"] = info
    return r


def short_names(names):
    """ONNX node names -> short labels: /net/enc.0/enc.0.0/enc.0.0.0/Conv
    -> enc.0.0, /net/up.0/ConvTranspose -> up.0.  Falls back to longer
    names if the short ones collide."""
    cores = []
    for nm in names:
        p = [c for c in nm.split("/") if c]
        # The last part is the op type (Conv, ConvTranspose_3), not a module.
        if len(p) > 1 and re.fullmatch(r"[A-Z][A-Za-z0-9_]*", p[-1]):
            p = p[:-1]
        cores.append(p or [nm])
    # A wrapper module every name shares (net) says nothing.
    while (len(cores) > 1 and all(len(c) > 1 for c in cores)
           and len({c[0] for c in cores}) == 1):
        cores = [c[1:] for c in cores]
    labels = []
    for c in cores:
        lab = c[-1]
        # enc.0.0.0 is the first layer (the conv) of block enc.0.0.
        if len(c) > 1 and lab == c[-2] + ".0":
            lab = c[-2]
        labels.append(lab)
    if len(set(labels)) != len(labels):
        labels = ["/".join(c) for c in cores]
    if len(set(labels)) != len(labels):
        labels = list(names)
    return labels


def group_of(label):
    head = re.split(r"[./_]", label.lower())[0]
    if head.startswith(("enc", "down")):
        return "enc"
    if head.startswith("up"):
        return "up"
    if head.startswith("dec"):
        return "dec"
    return "other"


def fmt(x, spec, width):
    s = "-" if x is None or (isinstance(x, float) and math.isnan(x)) \
        else format(x, spec)
    return s.rjust(width)


def print_table(r, run):
    per = r["flops_per"]
    print(f"# {run}: epoch 0 = imported model, evaluated only; sizes from "
          f"{r['size_src']}")
    print(f"{'epoch':>5} {'seconds':>8} {'step_s':>7} "
          f"{'GFLOPs/' + per:>14} {'params':>9} {'channels':>8} "
          f"{'dice_mean':>9}")
    ch = r["channels"]
    for i, e in enumerate(r["epoch"]):
        p = r["params"][i]
        c = ch[i] if ch is not None else None
        print(f"{e:>5} {fmt(r['seconds'][i], '.2f', 8)} "
              f"{fmt(r['step'][i], '.3f', 7)} "
              f"{fmt(r['flops'][i] / 1e9, '.3f', 14)} "
              f"{fmt(None if math.isnan(p) else int(p), 'd', 9)} "
              f"{fmt(None if c is None or math.isnan(c) else int(c), 'd', 8)}"
              f" {fmt(r['dice'][i], '.4f', 9)}")
    sys.stdout.flush()


def import_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator
    except ImportError:
        die("matplotlib is missing; install python3-matplotlib "
            "(apt-get install python3-matplotlib; `make deps` does it for "
            "the benchmarks) and run /usr/bin/python3")
    return plt, FixedLocator, MaxNLocator, NullLocator


# Panel (b) keeps its data below this fraction of the height: the legend
# goes in the band above, where no line can run under it.
ROOM = 0.78


def count_str(x):
    return f"{x / 1e6:.3g} M" if x >= 1e6 else f"{x / 1e3:.4g} k"


def finite(xs):
    return [x for x in xs if not math.isnan(x)]


def plot(r, out_tmp, title):
    plt, FixedLocator, MaxNLocator, NullLocator = import_pyplot()
    eps = r["epoch"]
    info = r["info"]
    fig, axes = plt.subplots(
        3, 1, sharex=True, figsize=(11, 12.5),
        gridspec_kw={"height_ratios": [1.5, 1.0, 0.8]})
    fig.subplots_adjust(left=0.08, right=0.74, top=0.94, bottom=0.09,
                        hspace=0.12)
    fig.suptitle(title, fontsize=13)
    a_ch, a_sz, a_t = axes
    written = info["written"]
    # End values quoted in labels are those of the model written.
    k = eps.index(written) if written in eps else len(eps) - 1
    at = f"epoch {eps[k]}"
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if written is not None and written in eps:
            ax.axvline(written, color="0.4", lw=1, ls=":", zorder=0)
    if written is not None and written in eps:
        a_ch.annotate(f"model written: epoch {written}", (written, 1.0),
                      xycoords=("data", "axes fraction"),
                      xytext=(-4, -4), textcoords="offset points",
                      ha="right", va="top", fontsize=8, color="0.3")

    # (a) channels per pruning point
    pts = r["points"]
    if pts:
        labels = short_names([nm for nm, _ in pts])
        groups = [group_of(lab) for lab in labels]
        style = {"enc": ("Blues", "-"), "up": ("Reds", ":"),
                 "dec": ("Reds", "--"), "other": ("Greens", "-.")}
        cmaps = {"Blues": plt.get_cmap("Blues"), "Reds": plt.get_cmap("Reds"),
                 "Greens": plt.get_cmap("Greens")}
        # Shade by position inside a colour family so neighbours differ;
        # up and dec share the red family, ordered as in the graph.
        fam = {g: ("dec" if g == "up" else g) for g in set(groups)}
        count, seen = {}, {}
        for g in groups:
            count[fam[g]] = count.get(fam[g], 0) + 1
        lo = math.inf
        for (nm, ys), lab, g in zip(pts, labels, groups):
            f = fam[g]
            j = seen.get(f, 0)
            seen[f] = j + 1
            cm, ls = style[g]
            shade = 0.4 + 0.6 * (j / max(1, count[f] - 1))
            a_ch.plot(eps, ys, ls=ls, lw=1.6, marker="o", ms=2.5,
                      color=cmaps[cm](shade), label=lab)
            lo = min([lo] + [y for y in finite(ys) if y > 0])
        lo = 1.0 if lo == math.inf else lo
        a_ch.set_yscale("log", base=2)
        hi = max(max(finite(ys), default=1) for _, ys in pts)
        ticks = [2 ** k for k in range(0, 12)
                 if lo / 1.5 <= 2 ** k <= hi * 1.5]
        a_ch.yaxis.set_major_locator(FixedLocator(ticks))
        a_ch.yaxis.set_minor_locator(NullLocator())
        a_ch.set_yticklabels([str(t) for t in ticks])
        a_ch.set_ylim(lo / 1.25, hi * 1.25)
        enc_n = sum(1 for g in groups if g == "enc")
        a_ch.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    fontsize=8, ncol=2 if len(pts) > 14 else 1,
                    title=(f"{len(pts)} pruning points\n"
                           f"encoder (blue, solid): {enc_n}\n"
                           f"decoder (red): up-conv dotted,\nconvs dashed"),
                    title_fontsize=8, frameon=False)
        a_ch.set_ylabel("output channels (log2)")
        ch = r["channels"]
        if ch is not None and finite(ch):
            a_ch.set_title(f"(a) channels per pruning point: total "
                           f"{int(ch[0])} -> {int(ch[k])} at {at}",
                           loc="left", fontsize=10)
        else:
            a_ch.set_title("(a) channels per pruning point", loc="left",
                           fontsize=10)
    else:
        a_ch.text(0.5, 0.5, "no per-layer channel columns (ch_*) in this "
                  "run:\na --no-prune run, or a model without Sauron points;\n"
                  "channels stay as imported", transform=a_ch.transAxes,
                  ha="center", va="center", fontsize=11, color="0.3")
        a_ch.set_yticks([])
        a_ch.set_title("(a) channels per pruning point", loc="left",
                       fontsize=10)

    # (b) FLOPs, params, Dice
    per = r["flops_per"]
    # Small test models would read 0.05 GFLOPs: use M below 1 G.
    big = finite(r["flops"]) and r["flops"][0] >= 1e9
    unit, div = ("G", 1e9) if big else ("M", 1e6)
    gf = [f / div for f in r["flops"]]
    handles = []
    if finite(gf) and gf[0] > 0:
        f0 = gf[0]
        h, = a_sz.plot(eps, gf, color="tab:purple", lw=2, marker="o", ms=3,
                       label=f"FLOPs/{per}: {gf[0]:.4g} -> {gf[k]:.4g} "
                       f"{unit} at {at} ({100 * gf[k] / f0:.1f}%)")
        handles.append(h)
        a_sz.set_ylim(0, f0 / ROOM)
        a_sz.set_ylabel(f"{unit}FLOPs per {per}", color="tab:purple")
        pct = a_sz.twinx()
        # Same line on a % scale, so params (%) read against it directly.
        pct.set_ylim(0, 100 / ROOM)
        pct.yaxis.set_major_locator(FixedLocator([0, 20, 40, 60, 80, 100]))
        pct.set_ylabel("% of the imported model (epoch 0)")
        pr = r["params"]
        if finite(pr) and pr[0] > 0:
            pp = [100 * p / pr[0] for p in pr]
            h, = pct.plot(eps, pp, color="tab:green", lw=2, ls="--",
                          marker="s", ms=3,
                          label=f"parameters: {count_str(pr[0])} -> "
                          f"{count_str(pr[k])} ({pp[k]:.1f}%)")
            handles.append(h)
    else:
        a_sz.text(0.5, 0.5, "no FLOPs column", transform=a_sz.transAxes,
                  ha="center", va="center")
    dice = r["dice"]
    if finite(dice):
        dax = a_sz.twinx()
        dax.spines["right"].set_position(("axes", 1.12))
        h, = dax.plot(eps, dice, color="tab:orange", lw=1.5, marker="^",
                      ms=4, label=f"validation Dice (mean): {dice[0]:.4f} -> "
                      f"{dice[k]:.4f} at {at}")
        handles.append(h)
        d = finite(dice)
        span = max(max(d) - min(d), 0.01)
        bot = min(d) - 0.15 * span
        dax.set_ylim(bot, bot + (max(d) - bot) / ROOM)
        # The headroom for the legend may pass 1; Dice ticks above 1 mean
        # nothing.
        dax.yaxis.set_major_locator(FixedLocator(
            [t for t in dax.get_yticks() if bot <= t <= 1.0 + 1e-9]))
        dax.set_ylabel("validation Dice", color="tab:orange")
    if handles:
        a_sz.legend(handles=handles, loc="upper left", fontsize=8,
                    framealpha=0.9)
    a_sz.set_title("(b) model size and validation Dice", loc="left",
                   fontsize=10)

    # (c) time per epoch
    secs = r["seconds"]
    train = [(e, s) for e, s in zip(eps, secs) if e > 0]
    h = []
    if train:
        h += a_t.plot([e for e, _ in train], [s for _, s in train],
                      color="tab:blue", lw=2, marker="o", ms=3,
                      label="epoch wall time (training + validation)")
    if 0 in eps:
        s0 = secs[eps.index(0)]
        h += a_t.plot([0], [s0], ls="none", marker="o", ms=6, mfc="white",
                      color="tab:blue", label="epoch 0: validation only")
    a_t.set_ylim(0, max(finite(secs), default=1) * 1.1)
    a_t.set_ylabel("seconds per epoch", color="tab:blue")
    step = r["step"]
    if finite(step):
        sax = a_t.twinx()
        iters = info["iters"]
        if iters:
            # Scaled so the step line sits at its share of the epoch: the
            # gap to the wall time is validation and overhead.
            sax.set_ylim(0, a_t.get_ylim()[1] / int(iters))
            lab = (f"mean training step (right axis; x {iters} "
                   "iterations = training time)")
        else:
            sax.set_ylim(0, max(finite(step)) * 1.1)
            lab = "mean training step (right axis)"
        h += sax.plot(eps, step, color="tab:cyan", lw=1.5, ls="--",
                      marker="s", ms=3, label=lab)
        sax.set_ylabel("seconds per training step", color="tab:cyan")
    a_t.legend(handles=h, loc="upper right", fontsize=8, framealpha=0.9)
    a_t.set_title("(c) time per epoch", loc="left", fontsize=10)
    a_t.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True,
                                            steps=[1, 2, 5, 10]))
    a_t.set_xlim(min(eps) - 0.5, max(eps) + 0.5)
    a_t.set_xlabel("epoch (0 = the imported model, evaluated before any "
                   "training)")

    if r["size_src"] == "sauron_epochs.csv":
        notes = ["Sizes: the model after each epoch's pruning "
                 "(sauron_epochs.csv)"]
    else:
        notes = ["Sizes as validated in each epoch (epochs.csv)"]
    if per == "sample" and info["patch"]:
        notes.append(f"FLOPs per sample at the training patch {info['patch']}")
    elif per == "batch":
        notes.append("FLOPs per training batch (no batch size in "
                     "summary.txt)")
    notes.append("wall times are of this run on its machine")
    fig.text(0.08, 0.02, "; ".join(notes) + ".", fontsize=8, color="0.3")
    fig.savefig(out_tmp, format="png", dpi=110)
    plt.close(fig)


def main():
    run, out, title, force = parse_args(sys.argv[1:])
    if os.path.exists(out) and not force:
        die(f"{out} exists; pass --force to overwrite it")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        die(f"the folder of {out} does not exist; create {out_dir} first")
    r = load_run(run)
    print_table(r, run)
    if title is None:
        name = os.path.basename(os.path.normpath(run))
        model = r["info"]["model"]
        title = f"sauron-compress run {name}" + (f": {model}" if model else "")
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".",
                               suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        plot(r, tmp, title)
        # mkstemp makes the file 0600; a plot is an ordinary output
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"# wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
