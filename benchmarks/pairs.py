"""Two digits in one image: each read from the encoder, each swapped in the decoder.

    python benchmarks/pairs.py --data-dir ../shared/data/mnist --labels 10,100 --seeds 0,1,2 \
        --out benchmarks/results/pairs/pairs.json

Trains the `mnist-pairs` preset (28x56 images of two MNIST digits; `left` and `right` known on
10 * l labelled pairs, l per left digit: 100 and 1,000 pairs for l = 10, 100; a free style) and,
on the same labelled pairs alone, the same networks as a supervised classifier (labelled
minibatches only, no consistency term: `data.labelled_share=1`, `objective.consistency_weight=0`).
Reports per-position and both-correct test error on the 10,000 test pairs (built from MNIST's
test digits only), and draws, per run, the right digit swapped 0..9 with the left digit and the
style of a test pair held. Runs are resumable (finished runs are reused).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

SUPERVISED = {"data.labelled_share": 1.0, "objective.consistency_weight": 0.0}


def errors(model, data, batch: int = 500) -> dict:
    x = data.x_test.astype(np.float32) / 255.0
    truth = {"left": data.y_test, "right": data.node_labels_test["right"]}
    predicted = {n: np.concatenate([model.classify(x[i:i + batch], node=n).numpy().argmax(-1)
                                    for i in range(0, len(x), batch)]) for n in truth}
    wrong = {n: predicted[n] != truth[n] for n in truth}
    return {"test_error/left": float(wrong["left"].mean()), "test_error/right": float(wrong["right"].mean()),
            "test_error/both": float((wrong["left"] | wrong["right"]).mean())}


def swap_figure(model, data, path: str, rows: int = 4) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf
    x = data.x_test[:rows].astype(np.float32) / 255.0
    q = model.encode(x)
    held = {n: model.point_value(n, d) for n, d in q.items()}
    fig, axes = plt.subplots(rows, 11, figsize=(11 * 1.0, rows * 0.6 + 0.4), dpi=120)
    for r in range(rows):
        axes[r, 0].imshow(x[r, ..., 0], cmap="gray_r")
        named = {n: tf.repeat(v[r:r + 1], 10, axis=0) for n, v in held.items()}
        named["right"] = tf.range(10)
        images = model.decode(**named).mean().numpy()
        for c in range(10):
            axes[r, c + 1].imshow(images[c, ..., 0], cmap="gray_r", vmin=0, vmax=1)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("test pair", fontsize=7)
    fig.suptitle("right digit set to 0..9; left digit and style of the test pair held", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the MNIST files")
    p.add_argument("--out", required=True)
    p.add_argument("--labels", default="10,100", help="labelled pairs per left digit")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--validation-size", type=int, default=0)
    p.add_argument("--runs-dir", default="runs/pairs")
    p.add_argument("--no-baseline", action="store_true", help="skip the supervised classifier")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(argv)

    from tfstructvae import get_preset
    from tfstructvae.config import parse_overrides
    from tfstructvae.rundir import load_run, write_json_atomic
    from tfstructvae.train import load_data, train_or_reuse

    rows, data = [], None
    for l in [int(v) for v in args.labels.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for kind in ("semi-supervised", *(() if args.no_baseline else ("supervised",))):
                cfg = get_preset("mnist-pairs").override(**{
                    "data.data_dir": args.data_dir, "data.labels_per_class": l,
                    "data.validation_size": args.validation_size, "data.label_seed": seed,
                    "data.data_seed": seed, "train.init_seed": seed,
                    **({"train.epochs": args.epochs} if args.epochs else {}),
                    "train.steps_per_epoch": args.steps_per_epoch,
                    **(SUPERVISED if kind == "supervised" else {}), **parse_overrides(args.set)})
                run_dir = os.path.join(args.runs_dir, f"{kind}-l{l}-s{seed}")
                metrics = train_or_reuse(cfg, run_dir)
                cfg, model = load_run(run_dir)
                data = data or load_data(cfg)
                row = {"kind": kind, "labels_per_class": l, "labelled_pairs": metrics["labelled_examples"],
                       "seed": seed, **errors(model, data), "epochs": metrics["epochs"],
                       "wall_time_s": metrics["wall_time_s"]}
                if kind == "semi-supervised":
                    row["figure"] = os.path.splitext(args.out)[0] + f"_l{l}_s{seed}.png"
                    swap_figure(model, data, row["figure"])
                rows.append(row)
                print(f"{kind:15s} {row['labelled_pairs']:5d} labelled pairs, seed {seed}: error left "
                      f"{100 * row['test_error/left']:.2f}%  right {100 * row['test_error/right']:.2f}%  both "
                      f"{100 * row['test_error/both']:.2f}%  ({row['wall_time_s']:.0f} s)", flush=True)
                write_json_atomic(args.out, {"runs": rows, "command": " ".join(
                    ["python", "benchmarks/pairs.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
