"""Readers for the image-dataset formats users already hold.

- IDX (LeCun's MNIST format), gzip-compressed or raw: `train-images-idx3-ubyte[.gz]`, ...
- Keras-style `.npz` with arrays `x_train, y_train, x_test, y_test`, and for a graph with
  more labelled nodes one pair `y_<node>_train, y_<node>_test` per node (-1 or NaN = missing)
- TFDS, when a prepared copy exists (or downloading is allowed)

Every reader returns uint8 images of shape (N, H, W, C) and int64 labels, and
fails with a `DataError` that names the file and what was expected.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A data file that is missing, corrupt or inconsistent."""


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images (uint8, (N, H, W, C)) with int64 labels in [0, num_classes).

    `node_labels_train` / `node_labels_test`: labels of further graph nodes, {node: array of N rows},
    integers with -1 or floats with NaN where an example carries no value.
    """
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str
    node_labels_train: dict = field(default_factory=dict)
    node_labels_test: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


_IDX_UBYTE = 0x08


def read_idx(path: str, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (`.gz` or raw) into a uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: cannot be read as {'gzip-compressed ' if opener is gzip.open else ''}"
                        f"IDX ({type(e).__name__}: {e}); the file is truncated or corrupt, "
                        "download it again") from e
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != _IDX_UBYTE:
        magic = data[:4].hex() if len(data) >= 4 else data.hex()
        raise DataError(f"{path}: bad IDX magic number 0x{magic or '(empty)'}; expected "
                        "0x00000801 (labels) or 0x00000803 (images) of unsigned bytes")
    ndim = data[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim} "
                        f"({'images' if expected_ndim == 3 else 'labels'}); wrong file?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    body = memoryview(data)[header:]
    if len(body) != math.prod(dims):
        raise DataError(f"{path}: header says shape {dims} ({math.prod(dims)} bytes) but the file "
                        f"holds {len(body)} bytes of data; it is truncated or corrupt")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_file(directory: str, base: str) -> str | None:
    """`base.gz` or `base` (also `base.gz` named with a dot as in some mirrors) in directory."""
    for name in (base + ".gz", base, base.replace("-idx", ".idx") + ".gz", base.replace("-idx", ".idx")):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def load_idx_dir(directory: str, name: str, num_classes: int = 10) -> ImageDataset | None:
    """MNIST-layout IDX files in `directory`; None when the directory holds none of them."""
    paths = {split: [find_file(directory, b) for b in bases] for split, bases in IDX_NAMES.items()}
    found = [p for ps in paths.values() for p in ps if p]
    if not found:
        return None
    missing = [b for split, bases in IDX_NAMES.items() for b, p in zip(bases, paths[split]) if not p]
    if missing:
        raise DataError(f"{directory}: has some IDX files ({', '.join(map(os.path.basename, found))}) "
                        f"but not {', '.join(m + '[.gz]' for m in missing)}")
    arrays = {}
    for split, (img_path, lab_path) in paths.items():
        x, y = read_idx(img_path, expected_ndim=3), read_idx(lab_path, expected_ndim=1)
        if len(x) != len(y):
            raise DataError(f"{img_path} holds {len(x)} images but {lab_path} holds {len(y)} labels; "
                            "the counts must agree")
        arrays[split] = (x[..., None], y.astype(np.int64))
    return checked(ImageDataset(name, *arrays["train"], *arrays["test"], num_classes, directory))


def integral_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Labels as int64: integers, or floats that are whole numbers; anything else is refused."""
    y = np.asarray(y).reshape(-1)
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.floating):
        raise DataError(f"{where}: labels have dtype {y.dtype}; expected integers")
    bad = y[~np.isfinite(y) | (y != np.round(y))]
    if bad.size:
        raise DataError(f"{where}: labels must be whole numbers; found {np.unique(bad)[:5].tolist()}"
                        f"{' and more' if np.unique(bad).size > 5 else ''} (of dtype {y.dtype})")
    return y.astype(np.int64)


def load_npz(path: str, name: str, num_classes: int | None = 10) -> ImageDataset:
    """A Keras-style `.npz` (x_train, y_train, x_test, y_test); `num_classes=None` reads the class
    count from the labels (max + 1) and refuses a class without a training example."""
    try:
        with np.load(path) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)}; a Keras-style .npz holds "
                                "x_train, y_train, x_test, y_test")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            nodes = {k[2:-6] for k in f.files if k.startswith("y_") and k.endswith("_train") and k != "y_train"}
            for node in sorted(nodes):
                if f"y_{node}_test" not in f.files:
                    raise DataError(f"{path}: has y_{node}_train but not y_{node}_test; node labels come in pairs")
            node_train = {n: f[f"y_{n}_train"] for n in nodes}
            node_test = {n: f[f"y_{n}_test"] for n in nodes}
    except (OSError, ValueError, zlib.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot be read as .npz ({e}); truncated or corrupt") from e
    x_train, x_test = (_as_nhwc_uint8(arrays[k], path, k) for k in ("x_train", "x_test"))
    y_train, y_test = (integral_labels(arrays[k], f"{path}: {k}") for k in ("y_train", "y_test"))
    if num_classes is None:
        if y_train.size and y_train.min() < 0:
            raise DataError(f"{path}: y_train labels span [{y_train.min()}, {y_train.max()}]; expected integers >= 0")
        num_classes = int(y_train.max()) + 1 if y_train.size else 0
        absent = sorted(set(range(num_classes)) - set(np.unique(y_train).tolist()))
        if num_classes < 2 or absent:
            raise DataError(f"{path}: classes are read as 0..{num_classes - 1} from y_train, but "
                            + (f"classes {absent[:10]} have no training example" if absent else "that is one class")
                            + "; labels must number the classes 0..K-1, each with examples")
    return checked(ImageDataset(name, x_train, y_train, x_test, y_test,
                                num_classes, path, node_train, node_test))


def load_tfds(name: str, data_dir: str | None = None, download: bool = False,
              num_classes: int = 10) -> ImageDataset:
    """A TFDS dataset (`mnist`, `fashion_mnist`, ...) as arrays; raises DataError if unavailable."""
    import tensorflow_datasets as tfds
    try:
        splits = tfds.load(name, split=["train", "test"], as_supervised=True,
                           data_dir=data_dir, download=download)
        # Gathered in large batches: batch_size=-1 aborts under tfds.testing.mock_data.
        (x_train, y_train), (x_test, y_test) = (
            tuple(np.concatenate(part) for part in zip(*tfds.as_numpy(ds.batch(8192))))
            for ds in splits)
    except Exception as e:   # TFDS raises several types for "not prepared" / "no network"
        raise DataError(f"TFDS dataset {name!r} is not available "
                        f"({'download failed' if download else 'no prepared copy'}"
                        f"{' in ' + data_dir if data_dir else ''}): {type(e).__name__}: {e}") from e
    return checked(ImageDataset(name, _as_nhwc_uint8(x_train, "tfds", "train"), y_train.astype(np.int64),
                                _as_nhwc_uint8(x_test, "tfds", "test"), y_test.astype(np.int64),
                                num_classes, f"tfds:{name}"))


def _as_nhwc_uint8(x: np.ndarray, where: str, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{where}: {key} has shape {x.shape}; expected (N, H, W) or (N, H, W, C)")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{where}: {key} holds {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} "
                            "infinite pixel values; expected finite pixels")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{where}: {key} holds floats outside [0, 1]; expected uint8 pixels "
                            "or floats in [0, 1]")
        return np.round(x * 255).astype(np.uint8)
    raise DataError(f"{where}: {key} has dtype {x.dtype}; expected uint8 or float in [0, 1]")


def checked(ds: ImageDataset) -> ImageDataset:
    """Validate shapes, counts and label range; return the dataset unchanged."""
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if len(x) != len(y):
            raise DataError(f"{ds.source}: {split} has {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{ds.source}: {split} split is empty")
        if y.min() < 0 or y.max() >= ds.num_classes:
            raise DataError(f"{ds.source}: {split} labels span [{y.min()}, {y.max()}]; "
                            f"expected integers in [0, {ds.num_classes})")
        for node, labels in (ds.node_labels_train if split == "train" else ds.node_labels_test).items():
            if len(labels) != len(x):
                raise DataError(f"{ds.source}: {split} has {len(x)} images but {len(labels)} labels "
                                f"for node {node!r} (y_{node}_{split})")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DataError(f"{ds.source}: train images {ds.x_train.shape[1:]} and test images "
                        f"{ds.x_test.shape[1:]} differ in shape")
    return ds
