import gzip
import os
import struct

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_mnist():
    for d in (os.environ.get("TFSTRUCTVAE_TEST_MNIST"), os.path.join(REPO, "..", "shared", "data", "mnist")):
        if d and os.path.isfile(os.path.join(d, "train-images-idx3-ubyte.gz")):
            return os.path.abspath(d)
    return None


@pytest.fixture(scope="session")
def mnist_dir():
    d = _find_mnist()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("real MNIST IDX files not found (../shared/data/mnist or $TFSTRUCTVAE_TEST_MNIST)")
        pytest.skip("real MNIST not available")
    return d


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from tfstructvae.data import load_dataset
    return load_dataset("mnist", mnist_dir)


def write_idx(path, array, magic_dtype=0x08):
    """Write `array` (uint8) as an IDX file (gzip if the path ends in .gz)."""
    header = bytes([0, 0, magic_dtype, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def write_fake_mnist(directory, n_train=60, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte{ext}"), x)
        write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte{ext}"), y)
        arrays[split] = (x, y)
    return arrays


@pytest.fixture
def fake_mnist_dir(tmp_path):
    write_fake_mnist(tmp_path)
    return tmp_path
