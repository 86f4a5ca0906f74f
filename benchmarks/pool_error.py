"""q(y|x)'s error on a finished run's unlabelled training images, against their hidden labels.

    python benchmarks/pool_error.py runs/paper_table/mnist-mix-l10-s2 [RUN_DIR ...] --out pool.json
    python benchmarks/pool_error.py RUN_DIR --latest-checkpoint     # a run still training

For a run trained by `tfstructvae train` or `paper_table.py`: draws the run's labelled split again
from its configuration (`data.label_seed`, `data.validation_size`), predicts every unlabelled
training image and reports the error and the largest confusion ("2 -> 1: 1674 of 5948"). The test
set is not read: a failure seen on a test draw can be looked at on the training images
(`validation_curve.py --pool-error` follows the same score during training).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--data-dir", help="where the run's data are now, if they moved")
    p.add_argument("--latest-checkpoint", action="store_true",
                   help="score each run's newest checkpoint (a run still training, or cut short)")
    p.add_argument("--out")
    args = p.parse_args(argv)

    from tfstructvae.rundir import RunDirError, read_run_config, write_json_atomic
    from tfstructvae.train import run_pool_error

    results = []
    for run_dir in args.run_dirs:
        cfg = read_run_config(run_dir)
        try:
            score = run_pool_error(run_dir, args.data_dir, latest_checkpoint=args.latest_checkpoint)
        except RunDirError as e:
            p.error(f"{e}" + ("" if args.latest_checkpoint else " (--latest-checkpoint scores a run still training)"))
        if not score:
            p.error(f"{run_dir}: the pool error scores a dataset with one class label per image")
        results.append({"run_dir": run_dir, "preset": cfg.preset, "label_seed": cfg.data.label_seed,
                        "labels_per_class": cfg.data.labels_per_class, **score})
        at = f" at step {score['step']:,}" if "step" in score else ""
        print(f"{run_dir}{at}: unlabelled-pool error {100 * score['pool_error']:.2f}% "
              f"(most confused: {score['worst_confusion']})", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_json_atomic(args.out, {"runs": results,
                                     "command": " ".join(["python", "benchmarks/pool_error.py",
                                                          *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
