"""The paper's SVHN row: test error with l labelled examples per class (conv encoder, plug-in).

Needs the cropped-digit files users download (http://ufldl.stanford.edu/housenumbers/):
`train_32x32.mat` and `test_32x32.mat` (official md5 sums are checked) in DATA_DIR.

    python benchmarks/svhn.py --data-dir DATA_DIR --labels 100,300 --seeds 0,1,2 \
        --out benchmarks/results/svhn.json

Paper: 30.32% with 100 labels per class (M1+M2: 36.02%). Runs resume as in paper_table.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

PAPER = {100: 30.32}
M1_M2 = {100: 36.02}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="svhn-paper")
    p.add_argument("--labels", default="100,300")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--skip-checksum", action="store_true", help="for files made by hand in the official layout")
    p.add_argument("--runs-dir", default="runs/svhn")
    args = p.parse_args(argv)

    from tfstructvae import get_preset
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import train_or_reuse

    runs = []
    for l in [int(v) for v in args.labels.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            cfg = get_preset(args.preset).override(**{
                "data.data_dir": args.data_dir, "data.validation_size": 0,  # the papers train on all of it
                "data.labels_per_class": l, "data.label_seed": seed,
                "data.data_seed": seed, "train.init_seed": seed, "train.epochs": args.epochs,
                "train.steps_per_epoch": args.steps_per_epoch,
                "data.verify_checksum": False if args.skip_checksum else None})
            run_dir = os.path.join(args.runs_dir, f"{args.preset}-l{l}-s{seed}")
            metrics = train_or_reuse(cfg, run_dir)
            runs.append({"preset": args.preset, "labels_per_class": l, "seed": seed,
                         "test_error": metrics["test_error"], "epochs": metrics["epochs"],
                         "wall_time_s": metrics["wall_time_s"]})
            print(f"l={l:<4d} seed={seed} test error {100 * metrics['test_error']:.2f}%", flush=True)
            write_json_atomic(args.out, {"runs": runs, "paper": PAPER, "m1_m2": M1_M2, "command": " ".join(
                ["python", "benchmarks/svhn.py", *(argv or sys.argv[1:])])})
    print("\n| l per class | paper | M1+M2 | this package |\n| --- | --- | --- | --- |")
    for l in sorted({r["labels_per_class"] for r in runs}):
        errs = [100 * r["test_error"] for r in runs if r["labels_per_class"] == l]
        sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
        print(f"| {l} | {PAPER.get(l, '')} | {M1_M2.get(l, '')} | {statistics.mean(errs):.2f} ± {sd:.2f} "
              f"(n={len(errs)}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
