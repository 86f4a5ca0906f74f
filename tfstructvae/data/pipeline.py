"""tf.data pipelines that decide which minibatches are labelled.

Every element is (x, y): x float32 in [0, 1] of shape (B, H, W, C), y int32 of
shape (B,) with -1 marking an unlabelled example; or, for a graph with several
labelled nodes, y a dict {node: labels} with -1 (integer labels) or NaN (real
labels) marking an example that carries no value for that node. Two modes:

- `rate` (the paper): a fraction r of minibatches are labelled minibatches drawn
  from the labelled pool, which is reshuffled and repeated, so each labelled
  point is re-observed among different unlabelled batches. r=0: unsupervised;
  r=1: labelled pool only.
- `share` (Kingma et al.): every minibatch holds round(s * B) labelled examples.

Both are seeded (data_seed) and deterministic for a seed, with no Python per step,
and can start at any step of the stream (for exact resumption).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfstructvae.config import DataConfig
from tfstructvae.data.formats import DataError
from tfstructvae.data.records import ShardedImages

AUTOTUNE = tf.data.AUTOTUNE


def _label_dtype(y):
    return tf.int32 if y.dtype.is_integer else tf.float32


def to_model_inputs(x, y):
    labels = tf.nest.map_structure(lambda v: tf.cast(v, _label_dtype(v)), y)
    return tf.cast(x, tf.float32) / 255.0, labels


def missing_labels(like: np.ndarray, n: int) -> np.ndarray:
    """n rows of 'no value' in the layout of `like`: -1 for integer labels, NaN for real ones."""
    if np.issubdtype(like.dtype, np.integer):
        return np.full((n, *like.shape[1:]), -1, np.int32)
    return np.full((n, *like.shape[1:]), np.nan, np.float32)


def _has_node_label(pool_y: dict, n: int) -> np.ndarray:
    """Which of the pool's first n examples carry a value for some node (-1 / NaN: none)."""
    has = np.zeros(n, bool)
    for y in pool_y.values():
        y = np.asarray(y[:n])
        given = y >= 0 if np.issubdtype(y.dtype, np.integer) else ~np.isnan(y)
        has |= given.reshape(n, -1).all(axis=1)
    return has


def check_node_labels(labels: dict, n: int, sizes: dict | None = None, what: str = "labelled") -> None:
    """{node: labels} for n examples: integers >= -1 (below the node's size when known) or floats."""
    for node, y in labels.items():
        y = np.asarray(y)
        if len(y) != n:
            raise DataError(f"{n} {what} images but {len(y)} labels for node {node!r}")
        if np.issubdtype(y.dtype, np.integer):
            size = (sizes or {}).get(node)
            if len(y) and (y.min() < -1 or (size is not None and y.max() >= size)):
                raise DataError(f"labels of node {node!r} span [{y.min()}, {y.max()}]; expected -1 (missing) "
                                f"or integers in [0, {size if size is not None else 'size'})")
        elif not np.issubdtype(y.dtype, np.floating):
            raise DataError(f"labels of node {node!r} must be integers or floats, got dtype {y.dtype}")


def check_arrays(x_unlabelled, x_labelled, y_labelled, num_classes: int = 10) -> None:
    """uint8 images of one shape; integer labels in [0, num_classes), one per labelled image
    (or a dict of node labels, checked by `check_node_labels`)."""
    for name, x in (("unlabelled images", x_unlabelled), ("labelled images", x_labelled)):
        if x.dtype != np.uint8:
            raise DataError(f"{name} must be uint8 pixels (0..255), got dtype {x.dtype}")
        if x.ndim != 4:
            raise DataError(f"{name} must have shape (N, H, W, C), got {x.shape}")
    if len(x_unlabelled) and len(x_labelled) and x_unlabelled.shape[1:] != x_labelled.shape[1:]:
        raise DataError(f"labelled images {x_labelled.shape[1:]} and unlabelled images "
                        f"{x_unlabelled.shape[1:]} differ in shape")
    if isinstance(y_labelled, dict):
        return check_node_labels(y_labelled, len(x_labelled))
    if not np.issubdtype(y_labelled.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y_labelled.dtype}")
    if len(y_labelled) != len(x_labelled):
        raise DataError(f"{len(x_labelled)} labelled images but {len(y_labelled)} labels")
    if len(y_labelled) and (y_labelled.min() < 0 or y_labelled.max() >= num_classes):
        raise DataError(f"labels span [{y_labelled.min()}, {y_labelled.max()}]; "
                        f"expected integers in [0, {num_classes})")


def epoch_steps(n_unlabelled: int, n_labelled: int, batch_size: int) -> int:
    """Steps in an epoch: (unlabelled + labelled examples) // batch_size, in every mode."""
    return max(1, (n_unlabelled + n_labelled) // batch_size)


def _index_batches(indices: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches of indices into the pool, reshuffled every pass, repeated forever."""
    return (tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
            .shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(batch_size, drop_remainder=True))


def training_pipeline(x_unlabelled: np.ndarray, x_labelled: np.ndarray, y_labelled,
                      cfg: DataConfig, start_step: int = 0, num_classes: int = 10,
                      y_unlabelled: dict | None = None) -> tuple[tf.data.Dataset, int]:
    """An infinite dataset of training minibatches and the number of steps in an epoch.

    An epoch is (unlabelled + labelled examples) // batch_size steps in every mode,
    so runs that differ only in r or s take the same number of steps.

    The pipeline shuffles and mixes *indices* and gathers the images last, so
    `start_step=k` (skipping k batches of indices, which is cheap) yields exactly
    the batches an uninterrupted run sees from step k on: this is how a resumed
    run continues the same data stream.

    `y_labelled` may be a dict {node: labels of the labelled pool}; the unlabelled pool
    then carries `y_unlabelled[node]` where given (labels of other nodes on examples
    outside the labelled split) and no value elsewhere.
    """
    cfg.validate()
    check_arrays(x_unlabelled, x_labelled, y_labelled, num_classes)
    B = cfg.batch_size
    n_u, n_l = len(x_unlabelled), len(x_labelled)
    # One pool: unlabelled examples first (label -1), then the labelled ones. Images in shards
    # (data/records.py) stay there: the pool is a list of rows, read a minibatch at a time.
    if isinstance(x_unlabelled, ShardedImages):
        pool_x = x_unlabelled.concatenate(x_labelled)
    else:
        pool_x = np.concatenate([x_unlabelled, x_labelled]) if n_l else x_unlabelled
    if isinstance(y_labelled, dict):
        y_unlabelled = y_unlabelled or {}
        check_node_labels(y_unlabelled, n_u, what="unlabelled")
        pool_y = {node: np.concatenate([np.asarray(y_unlabelled[node]).astype(y.dtype) if node in y_unlabelled
                                        else missing_labels(y, n_u), y])
                  for node, y in ((k, np.asarray(v)) for k, v in y_labelled.items())}
    else:
        pool_y = np.concatenate([np.full([n_u], -1, np.int32), y_labelled.astype(np.int32)])
    u_idx, l_idx = np.arange(n_u), n_u + np.arange(n_l)
    # Seeds per part, derived from data_seed, so the parts do not shuffle in lockstep.
    seed_u, seed_l, seed_mix = (cfg.data_seed * 3 + k for k in range(3))
    share_labelled = cfg.supervision_rate if cfg.supervision_mode == "rate" else cfg.labelled_share
    needs_u, needs_l = share_labelled < 1, share_labelled > 0
    if needs_u and n_u == 0:
        raise DataError(f"{cfg.supervision_mode}={share_labelled} needs unlabelled examples, "
                        "but every training example is labelled")
    if needs_l and n_l == 0:
        raise DataError(f"{cfg.supervision_mode}={share_labelled} needs labelled examples, "
                        "but the labelled pool is empty")

    if not needs_l:
        idx = _index_batches(u_idx, B, seed_u)
    elif not needs_u:
        idx = _index_batches(l_idx, B, seed_l)
    elif cfg.supervision_mode == "rate":
        idx = tf.data.Dataset.sample_from_datasets(
            [_index_batches(u_idx, B, seed_u), _index_batches(l_idx, B, seed_l)],
            weights=[1.0 - share_labelled, share_labelled], seed=seed_mix)
    else:
        b_l = round(share_labelled * B)
        b_n = round(cfg.node_labelled_share * B)
        parts = [_index_batches(u_idx, B - b_l - b_n, seed_u)]
        if b_n:   # the unlabelled examples that carry another node's label, re-drawn (config.py)
            n_idx = u_idx[_has_node_label(pool_y, n_u)] if isinstance(pool_y, dict) else u_idx[:0]
            if not len(n_idx):
                raise DataError(f"node_labelled_share={cfg.node_labelled_share}, but no unlabelled example "
                                "carries a label of another node")
            parts.append(_index_batches(n_idx, b_n, cfg.data_seed * 3 + 3))
        parts.append(_index_batches(l_idx, b_l, seed_l))      # last: the labelled tail (model.py)
        idx = tf.data.Dataset.zip(*parts).map(lambda *p: tf.concat(p, 0))

    labels = tf.nest.map_structure(tf.constant, pool_y)
    if isinstance(pool_x, ShardedImages):
        read = pool_x.tf_read
    else:
        images = tf.constant(pool_x)

        def read(batch_indices):
            return tf.gather(images, batch_indices)

    def gather(batch_indices):
        return to_model_inputs(read(batch_indices),
                               tf.nest.map_structure(lambda y: tf.gather(y, batch_indices), labels))

    steps = epoch_steps(n_u, n_l, B)
    return (idx.skip(start_step).map(gather, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE), steps)


def evaluation_pipeline(x: np.ndarray, y, batch_size: int) -> tf.data.Dataset:
    """Labelled examples in order, for `evaluate` and validation; y an array or {node: labels}."""
    y = {k: np.asarray(v) for k, v in y.items()} if isinstance(y, dict) else y.astype(np.int32)
    if isinstance(x, ShardedImages):       # read a batch at a time from the shards
        return (tf.data.Dataset.from_tensor_slices((np.arange(len(x)), y))
                .batch(batch_size)
                .map(lambda i, labels: to_model_inputs(x.tf_read(i), labels), num_parallel_calls=AUTOTUNE)
                .prefetch(AUTOTUNE))
    return (tf.data.Dataset.from_tensor_slices((x, y))
            .batch(batch_size)
            .map(to_model_inputs, num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE))
