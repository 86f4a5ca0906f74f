"""Where datasets are found: `--data-dir`, `$TFSTRUCTVAE_DATA_DIR`, known places, TFDS."""

from __future__ import annotations

import os

from tfstructvae.data.formats import DataError, ImageDataset, load_idx_dir, load_npz, load_tfds
from tfstructvae.data.records import is_shard_dir, load_shards
from tfstructvae.data.svhn import load_svhn_dir
from tfstructvae.data.yaleb import ARCHIVE as YALEB_ARCHIVE, find_yaleb, load_yaleb

ENV_VAR = "TFSTRUCTVAE_DATA_DIR"

IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "svhn": (32, 32, 3), "yaleb": (24, 24, 1),
                "mnist_pairs": (28, 56, 1), "mnist_morpho": (28, 28, 1)}

# name -> (TFDS name, Keras .npz file names, system directories that may hold IDX files)
DATASETS = {
    "mnist": ("mnist", ("mnist.npz",), ()),
    "fashion_mnist": ("fashion_mnist", ("fashion-mnist.npz", "fashion_mnist.npz"),
                      ("/usr/share/datasets/fashion-mnist",)),
    "svhn": ("svhn_cropped", (), ()),
    "yaleb": (None, (), ()),
}


def candidate_dirs(name: str, data_dir: str | None) -> list[str]:
    """Directories searched, in order. An explicit data_dir is the only one searched."""
    if data_dir:
        return [data_dir, os.path.join(data_dir, name)]
    dirs = []
    if os.environ.get(ENV_VAR):
        root = os.environ[ENV_VAR]
        dirs += [root, os.path.join(root, name), os.path.join(root, name.replace("_", "-"))]
    dirs += list(DATASETS[name][2])
    dirs.append(os.path.expanduser("~/.keras/datasets"))
    return dirs


def load_dataset(name: str = "mnist", data_dir: str | None = None, source: str = "auto",
                 download: bool = False, verify_checksum: bool = True, use_extra: bool = False) -> ImageDataset:
    """Load `name` from IDX, .npz or (SVHN) .mat files, or from TFDS; or, when `data_dir` is a
    `.npz` file or a directory of TFRecord shards (`tfstructvae prepare-data`), that data
    whatever its name, image shape and class count (shards: images read on demand).

    source: "auto" (files, then a prepared TFDS copy), "files", or "tfds".
    download: let TFDS download when no prepared copy exists (needs network).
    verify_checksum, use_extra: SVHN only (official md5 sums; add extra_32x32.mat to train).
    """
    if is_shard_dir(data_dir):  # written by `tfstructvae prepare-data`: read on demand, whatever its name
        return load_shards(data_dir)
    if name == "mnist_pairs":   # built from the MNIST files wherever they are found
        from tfstructvae.data.pairs import mnist_pairs
        return mnist_pairs(load_dataset("mnist", data_dir, source, download))
    if name == "mnist_morpho":  # MNIST with measured slant and thickness (data/morpho.py)
        from tfstructvae.data.morpho import mnist_morpho
        return mnist_morpho(load_dataset("mnist", data_dir, source, download))
    if name not in DATASETS and not (data_dir and os.path.isfile(data_dir)):
        raise DataError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}, or a .npz file as data_dir")
    if source not in ("auto", "files", "tfds"):
        raise DataError(f"unknown data source {source!r}; expected 'auto', 'files' or 'tfds'")
    tfds_name, npz_names, _ = DATASETS[name]
    if data_dir and os.path.isfile(data_dir):
        if not data_dir.endswith(".npz"):
            raise DataError(f"--data-dir {data_dir!r} is a file but not a .npz; give a directory of IDX or "
                            ".npz files, or a Keras-style .npz file (x_train, y_train, x_test, y_test)")
        # the user's own data: its shape and class count are read from the file
        return load_npz(data_dir, os.path.splitext(os.path.basename(data_dir))[0], num_classes=None)
    if data_dir and not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir!r} does not exist")
    looked = []
    if source in ("auto", "files"):
        for d in candidate_dirs(name, data_dir):
            if not os.path.isdir(d):
                continue
            looked.append(d)
            if name == "yaleb":
                found = find_yaleb(d)
                ds = load_yaleb(found) if found else None
            else:
                ds = (load_svhn_dir(d, verify_checksum, use_extra) if name == "svhn" else load_idx_dir(d, name))
            if ds is not None:
                return ds
            for npz in npz_names:
                if os.path.isfile(os.path.join(d, npz)):
                    return load_npz(os.path.join(d, npz), name)
    tfds_error = None
    if source in ("auto", "tfds") and tfds_name:
        try:
            return load_tfds(tfds_name, data_dir=data_dir if source == "tfds" else None,
                             download=download)
        except DataError as e:
            tfds_error = e
            if source == "tfds":
                raise
    raise DataError(
        f"no {name} data found. Looked in: {', '.join(looked) or '(no existing directory)'}"
        f"{' (of ' + ', '.join(candidate_dirs(name, data_dir)) + ')' if not data_dir else ''}. "
        + ("Expected train_32x32.mat and test_32x32.mat (SVHN cropped digits); " if name == "svhn" else
           f"Expected {YALEB_ARCHIVE} or its extracted CroppedYale24/ folder; " if name == "yaleb" else
           "Expected the IDX files train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
           f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] or {' / '.join(npz_names)}; ") +
        f"pass --data-dir or set ${ENV_VAR}."
        + (f" TFDS: {tfds_error}" if tfds_error else ""))
