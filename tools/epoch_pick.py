#!/usr/bin/python3
"""Which epoch a pruning run writes, re-derived from its run folder.

    /usr/bin/python3 tools/epoch_pick.py RUN_DIR [--check]

sauron-compress writes the epoch with the fewest FLOPs whose validation
Dice is within --max-dice-drop of the imported model's (epoch 0), ties to
the higher Dice, then the earlier epoch.  Since the ninth session a run
that tunes its decision rule judges that by each epoch's Dice at its best
class biases (`dice_tuned` in epochs.csv); before, by the Dice as trained
(`dice_mean`).  This prints the epoch each rule picks from RUN/epochs.csv,
the margin from RUN/sauron_summary.json, and the epoch the run wrote, so
one run shows what the older rule would have written.  --check exits 1
unless the run wrote the epoch its own rule picks (the tuned one when the
column has values): an independent check of the pruner's choice.

Standard library only.
"""
import argparse
import csv
import json
import math
import os
import sys


def pick(rows, col, margin):
    """(epoch, dice, flops) chosen by column col, or None."""
    ref = float(rows[0][col])
    if math.isnan(ref):
        return None
    best = None
    for r in rows:
        d, f = float(r[col]), float(r["flops"])
        if math.isnan(d) or d < ref - margin - 1e-12:
            continue
        if best is None or f < best[2] or (f == best[2] and d > best[1]):
            best = (int(r["epoch"]), d, f)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run folder of sauron-compress")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless the written epoch is the run's pick")
    a = ap.parse_args()
    try:
        with open(os.path.join(a.run, "epochs.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        with open(os.path.join(a.run, "sauron_summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"epoch_pick.py: cannot read the run folder '{a.run}': {e}; "
                 "give the folder of a finished pruning run")
    if not rows or "dice_mean" not in rows[0] or "flops" not in rows[0]:
        sys.exit(f"epoch_pick.py: '{a.run}/epochs.csv' has no dice_mean or "
                 "flops column; give the folder of a pruning run")
    margin = float(summary["max_dice_drop"])
    written = int(summary["written_epoch"])
    f0 = float(rows[0]["flops"])
    picks = {}
    for col, name in (("dice_mean", "as trained"), ("dice_tuned", "tuned")):
        p = pick(rows, col, margin) if col in rows[0] else None
        picks[col] = p
        if p is None:
            print(f"{name:>10}: no values")
            continue
        print(f"{name:>10}: epoch {p[0]}, {100 * (1 - p[2] / f0):.1f}% fewer "
              f"FLOPs, Dice {p[1]:.4f} (epoch 0: {float(rows[0][col]):.4f}, "
              f"margin {margin:g})")
    print(f"{'written':>10}: epoch {written}")
    own = picks["dice_tuned"] or picks["dice_mean"]
    if a.check and (own is None or own[0] != written):
        sys.exit(f"epoch_pick.py: the run wrote epoch {written} but its rule "
                 f"picks {own[0] if own else 'none'}")


if __name__ == "__main__":
    main()
