"""Two digits in one image, each labelled on a few images: a graph with two class nodes, with model.fit.

    python examples/two_digits.py --data-dir ../shared/data/mnist
    python examples/two_digits.py --data-dir ../shared/data/mnist --smoke   # seconds

q(left | x) q(right | x) q(style | x, left, right); both digits are enumerated together
(10 x 10 rows per image in one decoder call). 100 of the 60,000 training pairs carry
both labels; every other pair carries none (-1).
"""

import argparse

import numpy as np
import tensorflow as tf

import keras
from tfstructvae import Categorical, LatentGraph, Normal, StructuredVAE
from tfstructvae.config import ModelConfig, ObjectiveConfig
from tfstructvae.data import load_dataset
from tfstructvae.data.pairs import mnist_pairs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--labelled", type=int, default=100, help="pairs that carry both labels")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="a few steps only, to check the set-up")
    args = p.parse_args()

    pairs = mnist_pairs(load_dataset("mnist", args.data_dir))
    x = pairs.x_train.astype("float32") / 255.0                                   # (60000, 28, 56, 1)
    labelled = np.random.default_rng(0).permutation(len(x))[:args.labelled]
    left = np.full(len(x), -1, np.int32)
    right = np.full(len(x), -1, np.int32)
    left[labelled], right[labelled] = pairs.y_train[labelled], pairs.node_labels_train["right"][labelled]

    graph = LatentGraph(Categorical("left", 10, labelled=True, estimator="enumerate"),
                        Categorical("right", 10, labelled=True, estimator="enumerate"),
                        Normal("style", 4, parents=("left", "right")))
    model = StructuredVAE(pairs.image_shape, graph, model_config=ModelConfig(hidden_units=(256,)),
                          objective_config=ObjectiveConfig(alpha=50.0, consistency_weight=50.0, entropy_weight=1.0))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    # Labelled pairs are few: draw them in every batch (20 of 100), as the `share` pipelines do.
    unlabelled = tf.data.Dataset.from_tensor_slices((x, {"left": left, "right": right})).shuffle(10000, seed=0)
    few = tf.data.Dataset.from_tensor_slices((x[labelled], {"left": left[labelled], "right": right[labelled]}))
    ds = tf.data.Dataset.zip(unlabelled.repeat().batch(80), few.repeat().shuffle(100, seed=1).batch(20)).map(
        lambda u, l: (tf.concat([u[0], l[0]], 0), {k: tf.concat([u[1][k], l[1][k]], 0) for k in ("left", "right")}))
    steps = 20 if args.smoke else len(x) // 100
    model.fit(ds, epochs=1 if args.smoke else args.epochs, steps_per_epoch=steps, verbose=2)

    x_test = pairs.x_test[:2000].astype("float32") / 255.0
    for node, truth in (("left", pairs.y_test[:2000]), ("right", pairs.node_labels_test["right"][:2000])):
        error = (model.classify(x_test, node=node).numpy().argmax(-1) != truth).mean()
        print(f"{node} digit test error: {100 * error:.2f}%")
    # swap the right digit while the left digit and the style stay fixed
    q = model.encode(x_test[:1])
    row = model.decode(left=tf.fill([10], int(q["left"].probs_parameter().numpy().argmax())),
                       right=tf.range(10), style=tf.repeat(q["style"].mean(), 10, axis=0)).mean()
    print("right digit swapped 0..9, image shape:", tuple(row.shape))


if __name__ == "__main__":
    main()
