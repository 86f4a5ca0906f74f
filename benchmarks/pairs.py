"""Two digits in one image: each read from the encoder, each swapped in the decoder.

    python benchmarks/pairs.py --data-dir ../shared/data/mnist --labels 10,100 --seeds 0,1,2 \
        --out benchmarks/results/pairs/pairs.json

Trains the `mnist-pairs` preset (28x56 images of two MNIST digits; `left` and `right` known on
10 * l labelled pairs, l per left digit: 100 and 1,000 pairs for l = 10, 100; a free style) and,
on the same labelled pairs alone, the same networks as a supervised classifier (labelled
minibatches only, no consistency term: `data.labelled_share=1`, `objective.consistency_weight=0`).
Reports per-position and both-correct test error on the 10,000 test pairs (built from MNIST's
test digits only), how well the decoder obeys a swapped right digit (500 test pairs decoded
with each right digit, read back by the encoder: `swap_accuracy/right`, and `swap_kept/left`
for the left digit held), and draws, per run, the right digit swapped 0..9 with the left digit and the
style of a test pair held. Runs are resumable (finished runs are reused).
"""

from __future__ import annotations

import os
import sys

import numpy as np

def errors(model, data, batch: int = 500) -> dict:
    x = data.x_test.astype(np.float32) / 255.0
    truth = {"left": data.y_test, "right": data.node_labels_test["right"]}
    predicted = {n: np.concatenate([model.classify(x[i:i + batch], node=n).numpy().argmax(-1)
                                    for i in range(0, len(x), batch)]) for n in truth}
    wrong = {n: predicted[n] != truth[n] for n in truth}
    return {"test_error/left": float(wrong["left"].mean()), "test_error/right": float(wrong["right"].mean()),
            "test_error/both": float((wrong["left"] | wrong["right"]).mean())}


def swap_accuracy(model, data, n: int = 500, batch: int = 50) -> dict:
    """Control of the right digit in the decoder: n test pairs decoded with `right` set to each of
    0..9 (left digit and style as the encoder reads them), then read back by the encoder.
    `swap_accuracy/right`: how often q(right | decoded) names the digit set;
    `swap_kept/left`: how often q(left | decoded) still names the left digit read from the pair."""
    import tensorflow as tf
    x = data.x_test[:n].astype(np.float32) / 255.0
    hits, kept, total = 0, 0, 0
    for i in range(0, len(x), batch):
        q = model.encode(x[i:i + batch])
        held = {name: model.point_value(name, d) for name, d in q.items()}
        left = tf.argmax(q["left"].probs_parameter(), -1)
        for digit in range(10):
            named = dict(held, right=tf.fill([len(left)], digit))
            decoded = model.decode(**named).mean()
            hits += int(tf.reduce_sum(tf.cast(tf.argmax(model.classify(decoded, node="right"), -1) == digit, tf.int32)))
            kept += int(tf.reduce_sum(tf.cast(tf.argmax(model.classify(decoded, node="left"), -1) == left, tf.int32)))
            total += len(left)
    return {"swap_accuracy/right": hits / total, "swap_kept/left": kept / total, "swap_pairs": len(x)}


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
    from budgets import arguments, run_budgets

    parser = arguments(__doc__, "10,100", "runs/pairs", "the MNIST files")
    parser.add_argument("--swap-pairs", type=int, default=500, help="test pairs decoded with each right digit")
    args = parser.parse_args(argv)
    from tfstructvae.rundir import load_run
    from tfstructvae.train import load_data
    data = {}

    def describe(kind, l, seed, run_dir, metrics):
        cfg, model = load_run(run_dir)
        if "pairs" not in data:
            data["pairs"] = load_data(cfg)
        row = {"labelled_pairs": metrics["labelled_examples"], **errors(model, data["pairs"])}
        line = ""
        if kind == "semi-supervised":
            png = os.path.splitext(args.out)[0] + f"_l{l}_s{seed}.png"
            swap_figure(model, data["pairs"], png)
            row["figure"] = os.path.relpath(png)  # a path that holds on another machine
            row.update(swap_accuracy(model, data["pairs"], args.swap_pairs))
            line = (f"  swapped right read back {100 * row['swap_accuracy/right']:.1f}%, "
                    f"left kept {100 * row['swap_kept/left']:.1f}%")
        return row, (f"{row['labelled_pairs']} labelled pairs: error left {100 * row['test_error/left']:.2f}%  "
                     f"right {100 * row['test_error/right']:.2f}%  both {100 * row['test_error/both']:.2f}%" + line)

    run_budgets("mnist-pairs", args, "pairs.py", describe, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
