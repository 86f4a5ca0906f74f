"""Slant and thickness measures (Morpho-MNIST's definitions) on strokes drawn with known values."""

import numpy as np
import pytest

from tfstructvae.data.morpho import cached_measures, measure, measure_batch


def drawn_stroke(angle_deg, width, size=28, supersample=8, length=10.0):
    """A straight stroke of `width` pixels through the centre, `angle_deg` from vertical (> 0 leans
    right), rendered at `supersample` times the resolution and box-averaged to size x size."""
    n = size * supersample
    yy, xx = np.mgrid[:n, :n] + 0.5
    t, c, half = np.deg2rad(angle_deg), n / 2, length * supersample
    x0, y0, x1, y1 = c - half * np.sin(t), c + half * np.cos(t), c + half * np.sin(t), c - half * np.cos(t)
    dx, dy = x1 - x0, y1 - y0
    u = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
    inside = np.hypot(xx - x0 - u * dx, yy - y0 - u * dy) <= width * supersample / 2
    return inside.astype(float).reshape(size, supersample, size, supersample).mean((1, 3))


@pytest.mark.parametrize("angle", [-30, -10, 0, 15, 30])
@pytest.mark.parametrize("width", [1.5, 2.0, 4.0])
def test_a_drawn_stroke_measures_its_angle_and_width(angle, width):
    m = measure(drawn_stroke(angle, width))
    assert np.rad2deg(m["slant"]) == pytest.approx(angle, abs=1.5)
    # within half a pixel: a stroke 1.5 px wide on the pixel grid can cover two whole pixels
    assert m["thickness"] == pytest.approx(width, abs=0.5)


def test_measures_order_strokes_and_accept_a_channel_axis():
    thin, thick = measure(drawn_stroke(0, 1.5)), measure(drawn_stroke(0, 4.0)[..., None])
    assert thin["thickness"] < thick["thickness"]
    leaning = measure_batch(np.stack([drawn_stroke(a, 2.5) for a in (-20, 0, 20)]), progress=False)
    assert np.all(np.diff(leaning["slant"]) > 0) and leaning["slant"].dtype == np.float32


def test_blank_and_misshapen_images_are_refused():
    with pytest.raises(ValueError, match="blank image"):
        measure(np.zeros((28, 28)))
    with pytest.raises(ValueError, match=r"single greyscale image.*\(2, 28, 28\)"):
        measure(np.zeros((2, 28, 28)))


def test_measures_are_cached_and_remeasured_when_the_images_change(tmp_path):
    images = np.stack([drawn_stroke(a, 2.0) for a in (-10, 10)])
    path = str(tmp_path / "measures.npz")
    first = cached_measures(images, path, progress=False)
    with np.load(path) as f:
        np.testing.assert_array_equal(f["slant"], first["slant"])
    np.savez(path, slant=np.full(2, 7.0, np.float32), thickness=np.full(2, 7.0, np.float32))
    assert cached_measures(images, path)["slant"][0] == 7.0                    # read back, not measured
    more = cached_measures(np.concatenate([images, images[:1]]), path, progress=False)
    assert len(more["slant"]) == 3 and more["slant"][0] == pytest.approx(first["slant"][0])


def small_mnist_npz(mnist, path, n_train=300, n_test=40):
    np.savez(path, x_train=mnist.x_train[:n_train, ..., 0], y_train=mnist.y_train[:n_train],
             x_test=mnist.x_test[:n_test, ..., 0], y_test=mnist.y_test[:n_test])
    return str(path)


def test_mnist_morpho_gives_standardised_measures_on_one_percent_and_trains(mnist, tmp_path, monkeypatch):
    from tfstructvae import get_preset
    from tfstructvae.data import load_dataset
    from tfstructvae.data import morpho
    from tfstructvae.train import train_and_evaluate

    monkeypatch.setenv(morpho.CACHE_ENV_VAR, str(tmp_path / "cache"))
    npz = small_mnist_npz(mnist, tmp_path / "mnist.npz", n_train=1000)
    ds = load_dataset("mnist_morpho", npz)
    slant, thickness = ds.node_labels_train["slant"], ds.node_labels_train["thickness"]
    assert slant.shape == (1000, 1) and ds.node_labels_test["thickness"].shape == (40, 1)
    given = ~np.isnan(slant[:, 0])
    assert given.sum() == 10 and np.array_equal(given, ~np.isnan(thickness[:, 0]))
    assert abs(slant[given].mean()) < 1e-5 and slant[given].std() == pytest.approx(1.0, abs=1e-4)
    assert np.isfinite(ds.node_labels_test["slant"]).all()
    raw = measure_batch(mnist.x_train[:1000][given] / 255.0, progress=False)
    np.testing.assert_allclose(slant[given, 0], (raw["slant"] - raw["slant"].mean()) / raw["slant"].std(),
                               rtol=1e-4, atol=1e-4)
    log_width = np.log(raw["thickness"])                                      # thickness: log width, standardised
    np.testing.assert_allclose(thickness[given, 0], (log_width - log_width.mean()) / log_width.std(),
                               rtol=1e-4, atol=1e-4)
    assert len(list((tmp_path / "cache").glob("morpho-*.npz"))) == 2         # train and test, by content
    every, test, given_too = morpho.standardised_measures(ds)                # every image's value, same scale
    assert np.array_equal(given_too, given) and np.isfinite(every["slant"]).all()
    np.testing.assert_array_equal(every["thickness"][given], thickness[given, 0])
    np.testing.assert_array_equal(test["slant"], ds.node_labels_test["slant"][:, 0])
    monkeypatch.setattr(morpho, "measure_batch", lambda *a, **k: pytest.fail("measured again"))
    again = load_dataset("mnist_morpho", npz)
    np.testing.assert_array_equal(again.node_labels_train["slant"], slant)

    cfg = get_preset("mnist-morpho").override(**{
        "data.data_dir": npz, "data.labels_per_class": 3, "data.batch_size": 20, "data.validation_size": 0,
        "model.hidden_units": (16,), "model.classifier_units": (16,), "objective.consistency_weight": 0.0,
        "train.epochs": 1, "train.steps_per_epoch": 3, "train.jit_compile": False})
    metrics = train_and_evaluate(cfg, str(tmp_path / "run"), verbose=0)
    for name in ("slant", "thickness"):
        assert metrics[f"test_r2/{name}"] <= 1.0 and metrics[f"test_rmse/{name}"] > 0
    assert 0.0 <= metrics["test_error"] <= 1.0
