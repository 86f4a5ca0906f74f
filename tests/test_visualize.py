"""Analogy and style grids, PNG output, TensorBoard image summaries."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfstructvae import visualize
from tfstructvae.config import ModelConfig
from tfstructvae.model import StructuredVAE


@pytest.fixture(scope="module")
def model():
    return StructuredVAE((28, 28, 1), model_config=ModelConfig(style_dim=2, hidden_units=(16,)))


def test_analogies_hold_style_and_vary_class(model):
    images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    grid = visualize.analogies(visualize.Codec(model), images)
    assert grid.shape == (3, 10, 28, 28, 1) and grid.min() >= 0 and grid.max() <= 1
    # column k of row i is p(x | y=k, z_i): the decoder's mean at the source's style
    z = model.encode(images)["z"].mean()
    np.testing.assert_allclose(grid[1, 4], model.decode([4], z[1:2]).mean().numpy()[0], atol=1e-6)
    fig = visualize.analogy_figure(visualize.Codec(model), images)
    assert fig.shape == (3 * 29 - 1, 12 * 29 - 1, 1)


def test_style_grid_uses_prior_quantiles(model):
    grid = visualize.style_grid(visualize.Codec(model), steps=4)
    assert grid.shape == (10, 4, 4, 28, 28, 1) and 0 <= grid.min() and grid.max() <= 1
    # the centre of a symmetric grid straddles z = 0; the corner is the 5% / 95% quantile
    corner = model.decode([0], [[-1.6448536, 1.6448536]]).mean().numpy()[0]
    np.testing.assert_allclose(grid[0, 0, 0], corner, atol=1e-5)
    fig = visualize.style_figure(visualize.Codec(model), steps=4)
    assert fig.ndim == 3 and fig.shape[-1] == 1


def test_style_grid_needs_two_dims():
    m = StructuredVAE((28, 28, 1), model_config=ModelConfig(style_dim=3, hidden_units=(8,)))
    with pytest.raises(ValueError, match="2-d style latent.*3 dims"):
        visualize.style_grid(visualize.Codec(m))


def test_png_round_trip(tmp_path):
    image = np.linspace(0, 1, 20 * 30).reshape(20, 30, 1).astype(np.float32)
    path = visualize.save_png(image, str(tmp_path / "a" / "x.png"))
    decoded = tf.io.decode_png(tf.io.read_file(path)).numpy()
    assert decoded.shape == (20, 30, 1) and decoded.dtype == np.uint8
    np.testing.assert_allclose(decoded / 255.0, image, atol=1 / 255)


def test_tensorboard_callback_writes_readable_images(model, tmp_path):
    cb = visualize.ImageSummaries(str(tmp_path), np.random.default_rng(0).uniform(size=(4, 28, 28, 1)))
    cb.set_model(model)
    cb.on_epoch_end(0)
    files = glob.glob(os.path.join(tmp_path, "images", "events.out.tfevents.*"))
    assert files
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(files[0]):
        for value in event.summary.value:
            tags.add(value.tag)
            if value.tag == "analogies":
                png = tf.make_ndarray(value.tensor)[2]          # [width, height, encoded png]
                assert tf.io.decode_png(png).shape[0] == 4 * 29 - 1
    assert tags == {"reconstructions", "analogies", "style_grid"}
