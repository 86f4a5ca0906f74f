"""tf.data pipelines that decide which minibatches are labelled.

Every element is (x, y): x float32 in [0, 1] of shape (B, H, W, C), y int32 of
shape (B,) with -1 marking an unlabelled example. Two modes:

- `rate` (the paper): a fraction r of minibatches are labelled minibatches drawn
  from the labelled pool, which is reshuffled and repeated, so each labelled
  point is re-observed among different unlabelled batches. r=0: unsupervised;
  r=1: labelled pool only.
- `share` (Kingma et al.): every minibatch holds round(s * B) labelled examples.

Both are seeded (data_seed) and deterministic for a seed, with no Python per step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfstructvae.config import DataConfig
from tfstructvae.data.formats import DataError

AUTOTUNE = tf.data.AUTOTUNE


def to_model_inputs(x, y):
    return tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32)


def _repeated_batches(x, y, batch_size, seed):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return (ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
              .repeat()
              .batch(batch_size, drop_remainder=True))


def training_pipeline(x_unlabelled: np.ndarray, x_labelled: np.ndarray, y_labelled: np.ndarray,
                      cfg: DataConfig) -> tuple[tf.data.Dataset, int]:
    """An infinite dataset of training minibatches and the number of steps in an epoch.

    An epoch is (unlabelled + labelled examples) // batch_size steps in every mode,
    so runs that differ only in r or s take the same number of steps.
    """
    cfg.validate()
    B = cfg.batch_size
    n_u, n_l = len(x_unlabelled), len(x_labelled)
    y_unlabelled = np.full([n_u], -1, np.int32)
    # Seeds per part, derived from data_seed, so the parts do not shuffle in lockstep.
    seed_u, seed_l, seed_mix = (cfg.data_seed * 3 + k for k in range(3))
    if cfg.supervision_mode == "rate":
        share_labelled = cfg.supervision_rate
    else:
        share_labelled = cfg.labelled_share
    needs_u, needs_l = share_labelled < 1, share_labelled > 0
    if needs_u and n_u == 0:
        raise DataError(f"{cfg.supervision_mode}={share_labelled} needs unlabelled examples, "
                        "but every training example is labelled")
    if needs_l and n_l == 0:
        raise DataError(f"{cfg.supervision_mode}={share_labelled} needs labelled examples, "
                        "but the labelled pool is empty")

    if cfg.supervision_mode == "rate":
        parts = []
        if needs_u:
            parts.append(_repeated_batches(x_unlabelled, y_unlabelled, B, seed_u))
        if needs_l:
            parts.append(_repeated_batches(x_labelled, y_labelled.astype(np.int32), B, seed_l))
        if len(parts) == 1:
            ds = parts[0]
        else:
            ds = tf.data.Dataset.sample_from_datasets(
                parts, weights=[1.0 - share_labelled, share_labelled], seed=seed_mix)
    else:
        b_l = round(share_labelled * B) if needs_u and needs_l else (B if needs_l else 0)
        if needs_u and needs_l:
            u = _repeated_batches(x_unlabelled, y_unlabelled, B - b_l, seed_u)
            lab = _repeated_batches(x_labelled, y_labelled.astype(np.int32), b_l, seed_l)
            ds = tf.data.Dataset.zip(u, lab).map(
                lambda a, b: (tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0)))
        elif needs_l:
            ds = _repeated_batches(x_labelled, y_labelled.astype(np.int32), B, seed_l)
        else:
            ds = _repeated_batches(x_unlabelled, y_unlabelled, B, seed_u)

    steps = max(1, (n_u + n_l) // B)
    return ds.map(to_model_inputs, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE), steps


def evaluation_pipeline(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Labelled examples in order, for `evaluate` and validation."""
    return (tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
            .batch(batch_size)
            .map(to_model_inputs, num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE))
