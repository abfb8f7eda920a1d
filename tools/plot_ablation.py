#!/usr/bin/python3
"""FLOPs kept against validation Dice for several sauron-compress runs,
one point per epoch, one line per run.

    /usr/bin/python3 tools/plot_ablation.py OUT.png RUN_DIR[=LABEL] ...
        [--title TEXT] [--force]

Each RUN_DIR is a run folder (OUT.sslim.run).  Its epochs.jsonl gives,
for each epoch, the FLOPs and the validation Dice of the same network:
the one validated at the end of that epoch, before that epoch's last
pruning step (sauron_epochs.jsonl lists the sizes after it, the ones the
next epoch trains with, so its FLOPs do not belong to its Dice).  A
--no-prune run keeps 100% of the FLOPs.  Epoch 0 (the imported model) is
every line's first point; the epoch the run wrote is ringed when its
summary names it (sauron_summary.json, "written_epoch").  A dashed line
marks one Dice point below the imported model's validation Dice.

The table behind the picture goes to stdout (run, epoch, % FLOPs kept,
Dice).  The PNG is written to a temporary name and renamed; an existing
OUT is kept unless --force.  Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import os
import sys


def load(run):
    """[(epoch, flops, dice)], best epoch or None"""
    pts = []
    with open(os.path.join(run, "epochs.jsonl")) as f:
        for line in f:
            d = json.loads(line)
            pts.append((d["epoch"], float(d["flops"]), float(d["dice_mean"])))
    best = None
    summ = os.path.join(run, "sauron_summary.json")
    if os.path.exists(summ):
        with open(summ) as f:
            best = json.load(f).get("written_epoch")
    return pts, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_png")
    ap.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR=LABEL")
    ap.add_argument("--title", default="")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if os.path.exists(args.out_png) and not args.force:
        sys.exit(f"error: plot_ablation: {args.out_png} exists; "
                 "pass --force to replace it")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: plot_ablation: matplotlib missing "
                 "(Debian package python3-matplotlib)")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ref = None
    for spec in args.runs:
        run, _, label = spec.partition("=")
        label = label or os.path.basename(run.rstrip("/")).removesuffix(
            ".run")
        try:
            pts, best = load(run)
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"error: plot_ablation: cannot read {run}: {e}")
        if not pts:
            sys.exit(f"error: plot_ablation: {run} holds no epoch")
        f0 = pts[0][1]
        xs = [100.0 * p[1] / f0 for p in pts]
        ys = [p[2] for p in pts]
        if ref is None:
            ref = ys[0]
        line, = ax.plot(xs, ys, "o-", ms=3, lw=1, label=label)
        for (e, _, d), x in zip(pts, xs):
            print(f"{label} {e} {x:.2f} {d:.4f}")
            if best is not None and e == best:
                ax.plot([x], [d], "o", ms=10, mfc="none",
                        mec=line.get_color(), mew=1.5)
    ax.axhline(ref - 0.01, color="grey", ls="--", lw=0.8)
    ax.text(99, ref - 0.01, " 1 point below the imported model",
            va="bottom", ha="right", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs kept (% of the imported model, log scale)")
    ax.set_ylabel("validation Dice")
    ticks = [t for t in (100, 70, 50, 30, 20, 10, 7, 5, 3, 2, 1)
             if t >= ax.get_xlim()[0] * 0.9]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(args.title or "FLOPs kept against Dice, one point per epoch "
                 "(ring: model written)", fontsize=10)
    fig.tight_layout()
    tmp = args.out_png + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out_png)


if __name__ == "__main__":
    main()
