"""Class-balanced labelled subset, unlabelled rest, optional held-out validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfstructvae.data.formats import DataError


@dataclass(frozen=True)
class LabelledSplit:
    """Indices into the training set."""
    labelled: np.ndarray     # l per class, by `label_seed`
    unlabelled: np.ndarray   # the rest of the training pool
    validation: np.ndarray   # held out of training altogether


def labelled_split(y: np.ndarray, labels_per_class: int, num_classes: int, seed: int,
                   validation_size: int = 0) -> LabelledSplit:
    """Hold out `validation_size` examples, then pick `labels_per_class` of each class.

    The choice depends on `seed` alone (not on the data-order or model seeds).
    """
    n = len(y)
    if validation_size >= n:
        raise DataError(f"validation_size={validation_size} leaves no training data (n={n})")
    perm = np.random.default_rng(seed).permutation(n)
    validation, pool = perm[:validation_size], perm[validation_size:]
    chosen = []
    for c in range(num_classes):
        of_class = pool[y[pool] == c]
        if len(of_class) < labels_per_class:
            raise DataError(f"labels_per_class={labels_per_class} but class {c} has only "
                            f"{len(of_class)} training examples (after the validation hold-out)")
        chosen.append(of_class[:labels_per_class])
    labelled = np.sort(np.concatenate(chosen)) if chosen else np.zeros([0], np.int64)
    unlabelled = np.setdiff1d(pool, labelled)
    return LabelledSplit(labelled, unlabelled, np.sort(validation))
