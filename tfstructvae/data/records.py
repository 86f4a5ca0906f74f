"""Datasets larger than memory: images in sharded TFRecord files, read by index on demand.

`write_shards` (the `tfstructvae prepare-data` command) writes a dataset's train and test images
as TFRecord shards whose records all have one length: the image's bytes (uint8, H x W x C)
followed by its class as a little-endian int64. Any TFRecord reader can stream them
(`tf.data.TFRecordDataset`); because every record has the same length, record i of a shard also
sits at a known offset, so `ShardedImages` reads any row by index. The training pipeline can
then keep its shuffled *index* stream (data/pipeline.py) and read the rows of each minibatch from
disk: the same minibatches as the in-memory pipeline for a seed, the same exact resumption, and
no more images in memory than the minibatches in flight.

A directory of shards holds `shards.json` (image shape, class count, each split's files and record
counts) and `labels.npz` (the class of every example, and the labels of other graph nodes as in
a Keras-style .npz: y_<node>_train / y_<node>_test): labels are a few bytes an example and stay
in memory.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from tfstructvae.data.formats import DataError, ImageDataset, checked

MANIFEST = "shards.json"
LABELS = "labels.npz"
FORMAT = "tfstructvae-shards/1"
# A TFRecord record: u64 length, u32 masked CRC of the length, the payload, u32 masked CRC of it.
_HEADER, _FOOTER = 12, 4
_LABEL_BYTES = 8


def is_shard_dir(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, MANIFEST))


class ShardedImages:
    """Images stored as fixed-length records in TFRecord shards: a numpy-like, read-only view.

    `len(x)`, `x.shape`, `x.dtype`, `x[i]`, `x[a:b]` and `x[index_array]` read the rows asked
    for (as a uint8 array); `x.subset(index)` is another view, nothing read. `read(rows)` is
    what the training pipeline calls, from several threads at once.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, files: list[str], counts: list[int], image_shape, rows: np.ndarray | None = None):
        self.files, self.counts = list(files), [int(c) for c in counts]
        self.image_shape = tuple(int(d) for d in image_shape)
        self.image_bytes = int(np.prod(self.image_shape))
        self.record_bytes = _HEADER + self.image_bytes + _LABEL_BYTES + _FOOTER
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.rows = rows
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    def _all_rows(self) -> np.ndarray:
        return np.arange(self.starts[-1], dtype=np.int64) if self.rows is None else self.rows

    def subset(self, index) -> "ShardedImages":
        view = ShardedImages(self.files, self.counts, self.image_shape, self._all_rows()[index])
        view._fds, view._lock = self._fds, self._lock          # one set of open files per dataset
        return view

    def concatenate(self, other: "ShardedImages") -> "ShardedImages":
        """This view's rows, then `other`'s (a view of the same shards)."""
        if other.files != self.files:
            raise ValueError("views of different shards cannot be concatenated")
        view = self.subset(slice(None))
        view.rows = np.concatenate([self._all_rows(), other._all_rows()])
        return view

    def tf_read(self, index):
        """In a tf.data map: the images at positions `index` of this view. uint8 (len(index), H, W, C)"""
        import tensorflow as tf
        rows = self._all_rows()
        x = tf.numpy_function(lambda i: self.read(rows[i]), [index], tf.uint8, stateful=False)
        return tf.ensure_shape(x, [None, *self.image_shape])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.read_local(np.array([key]))[0]
        return self.read_local(key)

    def __array__(self, dtype=None, copy=None):
        x = self.read_local(slice(None))
        return x if dtype is None else x.astype(dtype)

    def read_local(self, key) -> np.ndarray:
        """Rows `key` (an index, slice or index array) of this view."""
        return self.read(self._all_rows()[key])

    def _fd(self, shard: int) -> int:
        with self._lock:
            if shard not in self._fds:
                self._fds[shard] = os.open(self.files[shard], os.O_RDONLY)
            return self._fds[shard]

    def read(self, rows) -> np.ndarray:
        """Rows of the underlying shards (not of this view), in the order given. (len(rows), H, W, C)"""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), *self.image_shape), np.uint8)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.starts[-1]):
            raise IndexError(f"rows span [{rows.min()}, {rows.max()}]; the shards hold {self.starts[-1]}")
        shards = np.searchsorted(self.starts, rows, side="right") - 1
        flat = out.reshape(len(rows), -1)
        for i in np.argsort(rows, kind="stable"):            # in file order: sequential where it can be
            s = int(shards[i])
            offset = (int(rows[i]) - int(self.starts[s])) * self.record_bytes + _HEADER
            data = os.pread(self._fd(s), self.image_bytes, offset)
            if len(data) != self.image_bytes:
                raise DataError(f"{self.files[s]}: record {int(rows[i] - self.starts[s])} is cut short; "
                                "the shard is truncated: write the dataset again with tfstructvae prepare-data")
            flat[i] = np.frombuffer(data, np.uint8)
        return out

    def __getstate__(self):         # open files do not cross processes
        state = dict(self.__dict__)
        state["_fds"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self):
        if self.rows is None:       # the base view owns the files
            for fd in getattr(self, "_fds", {}).values():
                try:
                    os.close(fd)
                except OSError:
                    pass


def take_rows(x, index):
    """Rows `index` of an image array (the images) or of shards (a view: nothing read)."""
    return x.subset(index) if isinstance(x, ShardedImages) else x[index]


def _shard_name(split: str, k: int, n: int) -> str:
    return f"{split}-{k:05d}-of-{n:05d}.tfrecord"


def write_shards(batches_by_split: dict, out_dir: str, name: str, num_classes: int, num_shards: int = 4,
                 node_labels: dict | None = None, progress=None) -> str:
    """Write each split's images as `num_shards` TFRecord shards of fixed-length records.

    `batches_by_split`: {"train": ..., "test": ...}, each (count, iterable of (x, y) batches:
    uint8 (b, H, W, C) images and integer classes), so a dataset need never be in memory whole.
    `node_labels`: {"y_<node>_train": array, ...} for further graph nodes. Returns `out_dir`.
    """
    import tensorflow as tf
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"format": FORMAT, "name": name, "num_classes": int(num_classes), "splits": {}}
    labels, image_shape = {}, None
    for split, (count, batches) in batches_by_split.items():
        if count < 1:
            raise DataError(f"the {split} split is empty")
        bounds = np.linspace(0, count, num_shards + 1).astype(int)
        files = [_shard_name(split, k, num_shards) for k in range(num_shards)]
        writers = [tf.io.TFRecordWriter(os.path.join(out_dir, f)) for f in files]
        ys, seen = [], 0
        try:
            for x, y in batches:
                x, y = np.asarray(x), np.asarray(y)
                if x.dtype != np.uint8 or x.ndim != 4:
                    raise DataError(f"{split} images must be uint8 of shape (N, H, W, C), got {x.dtype} {x.shape}")
                if image_shape is None:
                    image_shape = x.shape[1:]
                elif x.shape[1:] != image_shape:
                    raise DataError(f"{split} images of shape {x.shape[1:]} after images of shape {image_shape}")
                for image, label in zip(x, y.astype("<i8")):
                    shard = int(np.searchsorted(bounds, seen, side="right") - 1)
                    writers[shard].write(image.tobytes() + label.tobytes())
                    seen += 1
                ys.append(y.astype(np.int64))
                if progress:
                    progress(split, seen, count)
        finally:
            for w in writers:
                w.close()
        if seen != count:
            raise DataError(f"the {split} split announced {count} examples but gave {seen}")
        labels[f"y_{split}"] = np.concatenate(ys)
        manifest["splits"][split] = {"files": files, "counts": np.diff(bounds).tolist()}
    manifest["image_shape"] = list(image_shape)
    np.savez(os.path.join(out_dir, LABELS), **labels, **(node_labels or {}))
    with open(os.path.join(out_dir, MANIFEST), "w") as f:     # last: a directory without it is unfinished
        json.dump(manifest, f, indent=2)
    return out_dir


def write_dataset(data: ImageDataset, out_dir: str, num_shards: int = 4, batch_size: int = 8192,
                  progress=None) -> str:
    """An in-memory ImageDataset as shards (see `write_shards`)."""
    def batches(x, y):
        return len(x), ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
    nodes = {f"y_{n}_train": v for n, v in data.node_labels_train.items()}
    nodes |= {f"y_{n}_test": v for n, v in data.node_labels_test.items()}
    return write_shards({"train": batches(data.x_train, data.y_train), "test": batches(data.x_test, data.y_test)},
                        out_dir, data.name, data.num_classes, num_shards, nodes, progress)


def write_tfds(name: str, out_dir: str, num_shards: int = 4, data_dir: str | None = None,
               download: bool = False, num_classes: int = 10, batch_size: int = 8192, progress=None) -> str:
    """A TFDS dataset as shards, streamed from `as_dataset` a batch at a time: memory stays flat
    however large the dataset (SVHN's extra split, a corpus of one's own)."""
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
        parts = {}
        for split in ("train", "test"):
            ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
            count = int(ds.cardinality())
            count = count if count >= 0 else builder.info.splits[split].num_examples
            ds = ds.batch(batch_size)
            parts[split] = (count,
                            ((x.reshape(*x.shape[:3], -1) if x.ndim == 3 else x, y) for x, y in tfds.as_numpy(ds)))
        return write_shards(parts, out_dir, name, num_classes, num_shards, progress=progress)
    except DataError:
        raise
    except Exception as e:   # TFDS raises several types for "not prepared" / "no network"
        raise DataError(f"TFDS dataset {name!r} is not available ({'download failed' if download else 'no prepared copy'}"
                        f"{' in ' + data_dir if data_dir else ''}): {type(e).__name__}: {e}") from e


def load_shards(path: str) -> ImageDataset:
    """A directory written by `write_shards`: images read on demand, labels in memory."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}/{MANIFEST}: cannot be read ({e}); write the shards again with "
                        "tfstructvae prepare-data") from e
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}/{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    try:
        with np.load(os.path.join(path, LABELS)) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}/{LABELS}: cannot be read ({e}); write the shards again") from e
    images = {}
    for split in ("train", "test"):
        if split not in manifest["splits"] or f"y_{split}" not in arrays:
            raise DataError(f"{path}: no {split} split; prepare-data writes train and test")
        part = manifest["splits"][split]
        files = [os.path.join(path, f) for f in part["files"]]
        x = ShardedImages(files, part["counts"], manifest["image_shape"])
        for file, count in zip(files, x.counts):
            if not os.path.isfile(file):
                raise DataError(f"{file}: missing shard ({split}, {count} records); write the shards again")
            size = os.path.getsize(file)
            if size != count * x.record_bytes:
                raise DataError(f"{file}: {size} bytes, expected {count} records of {x.record_bytes} "
                                f"({count * x.record_bytes} bytes): truncated or corrupt, write the shards again")
        images[split] = x
    nodes = {k[2:-6]: v for k, v in arrays.items() if k.startswith("y_") and k.endswith("_train")
             and k != "y_train"}
    return checked(ImageDataset(manifest["name"], images["train"], arrays["y_train"], images["test"],
                                arrays["y_test"], int(manifest["num_classes"]), f"{path} (TFRecord shards)",
                                nodes, {n: arrays[f"y_{n}_test"] for n in nodes}))
