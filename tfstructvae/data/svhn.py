"""SVHN cropped digits as users download them: `train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`.

Each file holds `X` of shape (32, 32, 3, N) uint8 and `y` of shape (N, 1), where 10 means
the digit 0. The official files are checked against their published md5 sums; files a
user made in the same layout can skip the check (`verify_checksum=False`, `--skip-checksum`).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from tfstructvae.data.formats import DataError, ImageDataset, checked

OFFICIAL_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}


def md5sum(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_svhn_mat(path: str, verify_checksum: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 in [0, 10) from one SVHN .mat file."""
    name = os.path.basename(path)
    if verify_checksum and name in OFFICIAL_MD5:
        got = md5sum(path)
        if got != OFFICIAL_MD5[name]:
            raise DataError(f"{path}: md5 {got} does not match the official {name} ({OFFICIAL_MD5[name]}); "
                            "the download is corrupt or incomplete. For a file you made yourself in this "
                            "layout, pass --skip-checksum")
    import scipy.io
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:   # scipy raises several types for a damaged file
        raise DataError(f"{path}: cannot be read as a MATLAB .mat file ({type(e).__name__}: {e})") from e
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: expected arrays 'X' (32, 32, 3, N) and 'y' (N, 1), found {sorted(mat)}")
    x, y = mat["X"], mat["y"].reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path}: X has shape {x.shape} and y {mat['y'].shape}; expected (32, 32, 3, N) "
                        "and (N, 1)")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: X has dtype {x.dtype}; expected uint8")
    y = y.astype(np.int64)
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels span [{y.min()}, {y.max()}]; SVHN labels are 1..10 (10 = digit 0)")
    y[y == 10] = 0
    return np.ascontiguousarray(np.transpose(x, (3, 0, 1, 2))), y


def load_svhn_dir(directory: str, verify_checksum: bool = True, use_extra: bool = False) -> ImageDataset | None:
    """SVHN .mat files in `directory`; None when it holds neither train nor test file."""
    train, test = (os.path.join(directory, f) for f in ("train_32x32.mat", "test_32x32.mat"))
    if not (os.path.isfile(train) or os.path.isfile(test)):
        return None
    for path in (train, test):
        if not os.path.isfile(path):
            raise DataError(f"{directory}: has SVHN files but not {os.path.basename(path)}")
    x_train, y_train = read_svhn_mat(train, verify_checksum)
    if use_extra:
        extra = os.path.join(directory, "extra_32x32.mat")
        if not os.path.isfile(extra):
            raise DataError(f"use_extra: {extra} is missing")
        x_extra, y_extra = read_svhn_mat(extra, verify_checksum)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    x_test, y_test = read_svhn_mat(test, verify_checksum)
    return checked(ImageDataset("svhn", x_train, y_train, x_test, y_test, 10, directory))
