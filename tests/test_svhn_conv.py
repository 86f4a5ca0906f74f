"""SVHN .mat loader, TFDS svhn_cropped, convolutional networks and their presets."""

import os

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

from tfstructvae import get_preset
from tfstructvae.config import ModelConfig
from tfstructvae.data import DataError, load_dataset, training_pipeline, labelled_split
from tfstructvae.data.svhn import read_svhn_mat
from tfstructvae.model import StructuredVAE
from tfstructvae.train import build_model, compile_model


def write_svhn(directory, n_train=120, n_test=40, seed=0):
    """Files in the exact official layout: X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""
    rng = np.random.default_rng(seed)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)        # 10 is the digit 0
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        scipy.io.savemat(os.path.join(directory, name), {"X": x, "y": y})


def test_svhn_mat_layout_and_label_mapping(tmp_path):
    write_svhn(tmp_path)
    x, y = read_svhn_mat(str(tmp_path / "train_32x32.mat"), verify_checksum=False)
    raw = scipy.io.loadmat(str(tmp_path / "train_32x32.mat"))
    assert x.shape == (120, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[5], raw["X"][:, :, :, 5])
    assert y[9] == 0 and y[0] == 1 and set(y) == set(range(10))          # 10 -> 0


def test_svhn_checksum_mismatch_and_skip(tmp_path):
    write_svhn(tmp_path)
    with pytest.raises(DataError, match=r"md5 .* does not match the official train_32x32.mat "
                                         r"\(e26dedcc434d2e4c54c9b2d4a06d8373\).*--skip-checksum"):
        load_dataset("svhn", str(tmp_path))
    ds = load_dataset("svhn", str(tmp_path), verify_checksum=False)
    assert ds.image_shape == (32, 32, 3) and len(ds.y_test) == 40


def test_svhn_bad_mat_file(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="test_32x32.mat: cannot be read as a MATLAB .mat file"):
        load_dataset("svhn", str(tmp_path), verify_checksum=False)


def test_svhn_tfds_mock():
    with tfds.testing.mock_data(num_examples=30):
        ds = load_dataset("svhn", source="tfds")
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.y_train.max() < 10


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "normal"])
def test_conv_network_shapes(shape, likelihood):
    model = StructuredVAE(shape, model_config=ModelConfig(style_dim=3, hidden_units=(32,), network="conv",
                                                          likelihood=likelihood))
    x = tf.random.uniform([4, *shape])
    q = model.encode(x)
    assert q["y"].batch_shape == (4,) and q["z"].event_shape == (3,)
    p = model.decode([0, 1, 2, 3], q["z"].mean())
    assert p.batch_shape == (4,) and p.event_shape == shape
    # the enumerated decoder keeps the (K, B) leading axes through the transposed convolutions
    p_all = model.p_x_given_latents([tf.eye(10)[:, None, :], tf.zeros([10, 4, 3])])
    assert p_all.batch_shape == (10, 4) and p_all.log_prob(x).shape == (10, 4)
    assert np.all(np.isfinite(model.objective_terms(x, tf.constant([0, -1, 3, -1]))["elbo"].numpy()))


def few_steps(cfg, x, y, steps=3):
    split = labelled_split(y, cfg.data.labels_per_class, 10, 0)
    ds, _ = training_pipeline(x[split.unlabelled], x[split.labelled], y[split.labelled], cfg.data)
    model = compile_model(build_model(cfg, x.shape[1:]), cfg, steps)
    return model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0).history


def test_mnist_cnn_preset_trains(mnist):
    cfg = get_preset("mnist-cnn").override(**{"data.batch_size": 20, "model.hidden_units": (64,)})
    h = few_steps(cfg, mnist.x_train[:1000], mnist.y_train[:1000])
    assert np.isfinite(h["loss"][0]) and h["labelled_fraction"][0] == pytest.approx(0.2)


def test_svhn_paper_preset_trains(tmp_path):
    write_svhn(tmp_path, n_train=300)
    ds = load_dataset("svhn", str(tmp_path), verify_checksum=False)
    cfg = get_preset("svhn-paper").override(**{"data.batch_size": 20, "data.labels_per_class": 5,
                                               "model.hidden_units": (64,)})
    h = few_steps(cfg, ds.x_train, ds.y_train)
    assert np.isfinite(h["loss"][0]) and np.isfinite(h["reconstruction"][0])
