"""Loaders, labelled split and supervision-rate pipelines."""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import write_fake_mnist, write_idx
from tfstructvae.config import ConfigError, DataConfig
from tfstructvae.data import (DataError, labelled_split, load_dataset, load_npz, read_idx,
                              training_pipeline)


# ------------------------------------------------------------------ formats

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = write_fake_mnist(tmp_path, gz=gz)
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.x_train.shape == (60, 28, 28, 1) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k"][1])


def test_real_mnist_counts(mnist):
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_truncated_gzip_names_the_file(fake_mnist_dir):
    path = os.path.join(fake_mnist_dir, "train-images-idx3-ubyte.gz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated"):
        load_dataset("mnist", str(fake_mnist_dir))


def test_bad_magic_number(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x12\x34\x56\x78" + b"\x00" * 20)
    with pytest.raises(DataError, match="bad IDX magic number 0x12345678"):
        read_idx(str(path))


def test_header_and_body_disagree(tmp_path):
    path = tmp_path / "x"
    write_idx(path, np.zeros((4, 2, 2), np.uint8))
    open(path, "ab").write(b"\x00")
    with pytest.raises(DataError, match=r"shape \(4, 2, 2\).*17 bytes"):
        read_idx(str(path))


def test_image_and_label_counts_must_agree(fake_mnist_dir):
    write_idx(os.path.join(fake_mnist_dir, "train-labels-idx1-ubyte.gz"), np.zeros(59, np.uint8))
    with pytest.raises(DataError, match="60 images but .* 59 labels"):
        load_dataset("mnist", str(fake_mnist_dir))


def test_labels_out_of_range(fake_mnist_dir):
    write_idx(os.path.join(fake_mnist_dir, "t10k-labels-idx1-ubyte.gz"), np.full(20, 12, np.uint8))
    with pytest.raises(DataError, match=r"labels span \[12, 12\]; expected integers in \[0, 10\)"):
        load_dataset("mnist", str(fake_mnist_dir))


def test_missing_and_empty_directories(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", str(tmp_path / "nope"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"no mnist data found. Looked in: .*train-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path), source="files")


def test_partial_idx_directory(fake_mnist_dir):
    os.remove(os.path.join(fake_mnist_dir, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(DataError, match=r"but not t10k-labels-idx1-ubyte\[.gz\]"):
        load_dataset("mnist", str(fake_mnist_dir))


def test_env_var_is_searched(fake_mnist_dir, monkeypatch):
    monkeypatch.setenv("TFSTRUCTVAE_DATA_DIR", str(fake_mnist_dir))
    assert load_dataset("mnist").source == str(fake_mnist_dir)


def test_keras_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 255, (30, 28, 28), dtype=np.uint8), y_train=np.arange(30) % 10,
             x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10))
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.y_test.tolist() == list(range(10))
    np.savez(path, x_train=np.zeros((3, 28, 28)))
    with pytest.raises(DataError, match="missing arrays"):
        load_npz(str(path), "mnist")


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=40):
        ds = load_dataset("mnist", source="tfds")
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.source == "tfds:mnist" and ds.y_train.max() < 10


# ------------------------------------------------------------------- split

def test_labelled_split_is_balanced_disjoint_and_seeded():
    y = np.arange(1000) % 10
    s = labelled_split(y, 7, 10, seed=3, validation_size=100)
    assert np.bincount(y[s.labelled], minlength=10).tolist() == [7] * 10
    assert len(s.validation) == 100 and len(s.unlabelled) == 1000 - 100 - 70
    everything = np.concatenate([s.labelled, s.unlabelled, s.validation])
    assert len(np.unique(everything)) == 1000
    again = labelled_split(y, 7, 10, seed=3, validation_size=100)
    np.testing.assert_array_equal(s.labelled, again.labelled)
    other = labelled_split(y, 7, 10, seed=4, validation_size=100)
    assert not np.array_equal(s.labelled, other.labelled)


def test_too_many_labels_per_class():
    with pytest.raises(DataError, match="labels_per_class=200 but class 0 has only 100"):
        labelled_split(np.arange(1000) % 10, 200, 10, seed=0)


# ---------------------------------------------------------------- pipeline

def pools(n_u=500, n_l=50):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 255, (n_u, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 255, (n_l, 28, 28, 1), dtype=np.uint8), np.arange(n_l) % 10)


def labelled_counts(ds, n_batches):
    return np.array([int((y.numpy() >= 0).sum()) for _, y in ds.take(n_batches)])


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.05, 0.1, 0.5, 1.0])
def test_supervision_rate(rate):
    cfg = DataConfig(batch_size=20, supervision_rate=rate, data_seed=1)
    ds, steps = training_pipeline(*pools(), cfg)
    assert steps == 550 // 20
    counts = labelled_counts(ds, 2000)
    assert set(np.unique(counts)) <= {0, 20}              # whole batches are labelled or not
    assert abs((counts == 20).mean() - rate) < 0.02
    x, y = next(iter(ds))
    assert x.dtype.name == "float32" and x.shape == (20, 28, 28, 1) and 0 <= x.numpy().min() <= 1
    assert y.dtype.name == "int32"


@pytest.mark.parametrize("share,expected", [(0.0, 0), (0.25, 5), (1.0, 20)])
def test_labelled_share(share, expected):
    cfg = DataConfig(batch_size=20, supervision_mode="share", labelled_share=share)
    ds, _ = training_pipeline(*pools(), cfg)
    assert labelled_counts(ds, 50).tolist() == [expected] * 50


def test_labelled_pool_is_reshuffled_and_repeated():
    x_u, x_l, y_l = pools(n_l=10)
    ds, _ = training_pipeline(x_u, x_l, y_l, DataConfig(batch_size=10, supervision_rate=1.0))
    epochs = [sorted(y.numpy().tolist()) for _, y in ds.take(5)]
    assert all(e == sorted(y_l.tolist()) for e in epochs)      # each batch is one pass of the pool
    orders = {tuple(y.numpy().tolist()) for _, y in ds.take(5)}
    assert len(orders) > 1                                     # in a different order each time


def test_pipeline_is_deterministic_for_a_seed():
    cfg = DataConfig(batch_size=20, supervision_rate=0.3, data_seed=7)
    run = lambda c: [y.numpy().tolist() for _, y in training_pipeline(*pools(), c)[0].take(30)]  # noqa: E731
    assert run(cfg) == run(cfg)
    assert run(cfg) != run(DataConfig(batch_size=20, supervision_rate=0.3, data_seed=8))


@pytest.mark.parametrize("changes,message", [
    ({"supervision_rate": 1.5}, r"supervision_rate must lie in \[0, 1\], got 1.5"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"labels_per_class": 0, "supervision_rate": 0.1}, "labels_per_class is 0"),
    ({"supervision_mode": "sometimes"}, "unknown supervision_mode 'sometimes'"),
    ({"supervision_mode": "share", "labelled_share": 0.01, "batch_size": 20}, "rounds to 0"),
])
def test_impossible_data_configs(changes, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**changes).validate()


@pytest.mark.parametrize("mode", ["rate", "share"])
def test_pipeline_resumes_exactly_at_a_step(mode):
    cfg = DataConfig(batch_size=20, supervision_mode=mode, supervision_rate=0.3, labelled_share=0.25, data_seed=5)
    full, _ = training_pipeline(*pools(), cfg)
    later, _ = training_pipeline(*pools(), cfg, start_step=37)
    expected = list(full.take(37 + 10))[37:]
    for (xa, ya), (xb, yb) in zip(expected, later.take(10)):
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
