"""Two MNIST digits side by side: a 28x56 image whose left and right digits are two labels.

`digit_pairs` composes images deterministically from a seed: training pairs from training
digits only and test pairs from test digits only. As a dataset (`mnist_pairs`) the class is
the left digit and the node label `right` the right one, for a graph such as

    LatentGraph(Categorical("left", 10, labelled=True), Categorical("right", 10, labelled=True),
                Normal("style", 8, parents=("left", "right")))

with `data.node_labels="labelled"`, so that `right` is known on the labelled pairs only.
"""

from __future__ import annotations

import numpy as np

from tfstructvae.data.formats import ImageDataset, checked

PAIR_SEED = 0


def digit_pairs(x: np.ndarray, y: np.ndarray, n: int, seed: int = PAIR_SEED):
    """n images (n, H, 2W, C) of two digits drawn with replacement, and their (left, right) labels."""
    rng = np.random.default_rng(seed)
    left, right = rng.integers(0, len(x), n), rng.integers(0, len(x), n)
    return np.concatenate([x[left], x[right]], axis=2), y[left], y[right]


def mnist_pairs(mnist: ImageDataset, n_train: int | None = None, n_test: int | None = None) -> ImageDataset:
    """As many pairs as digits by default (60,000 training, 10,000 test pairs)."""
    x_tr, left_tr, right_tr = digit_pairs(mnist.x_train, mnist.y_train, n_train or len(mnist.y_train), PAIR_SEED)
    x_te, left_te, right_te = digit_pairs(mnist.x_test, mnist.y_test, n_test or len(mnist.y_test), PAIR_SEED + 1)
    return checked(ImageDataset("mnist_pairs", x_tr, left_tr, x_te, left_te, mnist.num_classes,
                                f"pairs of {mnist.source}", {"right": right_tr}, {"right": right_te}))
