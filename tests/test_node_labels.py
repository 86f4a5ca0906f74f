"""Records that carry several labels: pipelines, exact resume, .npz node arrays, a whole run."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from tfstructvae.config import Config, ConfigError, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig
from tfstructvae.data import DataError, load_dataset, training_pipeline


def pools(n_u=40, n_l=10, seed=0):
    rng = np.random.default_rng(seed)
    x_u, x_l = (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8) for n in (n_u, n_l))
    y_l = {"y": np.arange(n_l) % 10, "slant": rng.normal(size=(n_l, 1)).astype(np.float32)}
    y_u = {"slant": np.where(rng.uniform(size=(n_u, 1)) < 0.3, 1.5, np.nan).astype(np.float32)}
    return x_u, x_l, y_l, y_u


@pytest.mark.parametrize("mode", ["rate", "share"])
def test_pipeline_carries_every_node_and_resumes_exactly(mode):
    x_u, x_l, y_l, y_u = pools()
    cfg = DataConfig(batch_size=10, supervision_mode=mode, supervision_rate=0.5, labelled_share=0.2, data_seed=3)
    ds, steps = training_pipeline(x_u, x_l, y_l, cfg, y_unlabelled=y_u)
    batches = list(ds.take(12).as_numpy_iterator())
    for x, labels in batches:
        assert set(labels) == {"y", "slant"} and labels["y"].dtype == np.int32 and labels["slant"].shape == (10, 1)
        labelled = labels["y"] >= 0
        # the class is present exactly on the labelled pool, whose slant is always known;
        # unlabelled examples carry slant 1.5 or NaN, as given
        assert np.all(np.isfinite(labels["slant"][labelled]))
        rest = labels["slant"][~labelled]
        assert np.all(np.isnan(rest) | (rest == 1.5))
    later, _ = training_pipeline(x_u, x_l, y_l, cfg, start_step=7, y_unlabelled=y_u)
    for (xa, la), (xb, lb) in zip(batches[7:], later.take(5).as_numpy_iterator()):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la["y"], lb["y"])
        np.testing.assert_array_equal(la["slant"], lb["slant"])


def test_a_node_labelled_share_redraws_the_examples_that_carry_another_nodes_label():
    x_u, x_l, y_l, y_u = pools()
    carriers = np.flatnonzero(~np.isnan(y_u["slant"][:, 0]))
    cfg = DataConfig(batch_size=10, supervision_mode="share", labelled_share=0.2, node_labelled_share=0.3,
                     data_seed=3)
    ds, steps = training_pipeline(x_u, x_l, y_l, cfg, y_unlabelled=y_u)
    assert steps == 5                                      # (40 + 10) // 10, as without the share
    batches = list(ds.take(2 * len(carriers)).as_numpy_iterator())
    seen = []
    for x, labels in batches:
        middle, tail = slice(5, 8), slice(8, 10)
        assert (labels["y"][tail] >= 0).all() and (labels["y"][:8] == -1).all()       # the labelled tail stays last
        assert (labels["slant"][middle] == 1.5).all()                                 # 3 carriers in every minibatch
        for row in x[middle]:
            seen.append(int(np.flatnonzero((x_u.astype(np.float32) / 255.0 == row).all(axis=(1, 2, 3)))[0]))
    assert set(seen) == set(carriers.tolist())             # each carrier re-drawn, none other
    later, _ = training_pipeline(x_u, x_l, y_l, cfg, start_step=5, y_unlabelled=y_u)
    for (xa, la), (xb, lb) in zip(batches[5:], later.take(4).as_numpy_iterator()):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la["slant"], lb["slant"])
    with pytest.raises(DataError, match="no unlabelled example carries a label of another node"):
        training_pipeline(x_u, x_l, y_l, cfg, y_unlabelled={"slant": np.full_like(y_u["slant"], np.nan)})
    with pytest.raises(ConfigError, match="needs supervision_mode='share' and 0 < labelled_share < 1"):
        DataConfig(supervision_mode="rate", node_labelled_share=0.1).validate()
    with pytest.raises(ConfigError, match="gives 0 examples next to 20 labelled ones"):
        DataConfig(supervision_mode="share", labelled_share=0.2, node_labelled_share=0.001).validate()


def test_bad_node_labels_are_refused():
    x_u, x_l, y_l, y_u = pools()
    cfg = DataConfig(batch_size=10)
    with pytest.raises(DataError, match="10 labelled images but 9 labels for node 'slant'"):
        training_pipeline(x_u, x_l, {**y_l, "slant": y_l["slant"][:9]}, cfg)
    with pytest.raises(DataError, match=r"labels of node 'y' span \[-3, 6\]"):
        training_pipeline(x_u, x_l, {**y_l, "y": y_l["y"] - 3}, cfg)
    with pytest.raises(DataError, match="40 unlabelled images but 5 labels for node 'slant'"):
        training_pipeline(x_u, x_l, y_l, cfg, y_unlabelled={"slant": y_u["slant"][:5]})


def write_npz_with_slant(directory, n_train=300, n_test=50, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, np.arange(n) % 10
        slant = x.mean(axis=(1, 2), keepdims=False)[:, None] / 255.0
        arrays[f"y_slant_{part}"] = np.where(rng.uniform(size=(n, 1)) < 0.2, slant, np.nan).astype(np.float32)
    np.savez(os.path.join(directory, "mnist.npz"), **arrays)


def test_a_graph_with_a_supervised_real_factor_trains_from_npz_and_resumes(tmp_path):
    from tfstructvae.train import train_and_evaluate
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_npz_with_slant(data_dir)
    ds = load_dataset("mnist", str(data_dir))
    assert set(ds.node_labels_train) == {"slant"} and ds.node_labels_test["slant"].shape == (50, 1)
    graph = ({"family": "categorical", "name": "y", "size": 10, "labelled": True, "estimator": "enumerate"},
             {"family": "normal", "name": "slant", "size": 1, "labelled": True, "alpha": 5.0},
             {"family": "normal", "name": "z", "size": 2, "parents": ["y", "slant"]})
    cfg = Config(data=DataConfig(data_dir=str(data_dir), labels_per_class=3, batch_size=30,
                                 supervision_mode="share", labelled_share=0.2, node_labelled_share=0.2),
                 model=ModelConfig(hidden_units=(16,), graph=graph),
                 objective=ObjectiveConfig(alpha=10.0),
                 train=TrainConfig(epochs=2, steps_per_epoch=3)).validate()
    run = tmp_path / "run"
    metrics = train_and_evaluate(cfg, str(run), verbose=0)
    assert np.isfinite(metrics["test_kl/slant"]) and 0.0 <= metrics["test_error"] <= 1.0
    assert metrics["test_r2/slant"] <= 1.0 and metrics["test_rmse/slant"] > 0     # on the ~20% of test images with a slant
    with open(run / "history.csv") as f:
        header = next(csv.reader(f))
    assert {"kl/slant", "log_q/slant", "log_q/y", "kl/z", "labelled_accuracy"} <= set(header)
    assert not [k for k in header if k.startswith("val_")]    # no validation split: no NA columns
    saved = Config.from_dict(json.load(open(run / "config.json")))
    assert saved.model.image_shape == (28, 28, 1)                 # read from the data and recorded
    unresolved = dataclasses.replace(saved, model=dataclasses.replace(saved.model, image_shape=None))
    assert unresolved == cfg and saved.model.latent_graph()["slant"].alpha == 5.0
    # a labelled node without labels in the data is refused by name
    no_labels = cfg.override(**{"model.graph": (graph[0], {**graph[1], "name": "width"},
                                                {**graph[2], "parents": ["y", "width"]})})
    with pytest.raises(ConfigError, match=r"labelled nodes \['width'\] have no labels"):
        train_and_evaluate(no_labels, str(tmp_path / "run2"), verbose=0)


def test_digit_pairs_are_deterministic_and_right_labels_follow_the_split(mnist):
    from tfstructvae.data.pairs import digit_pairs, mnist_pairs
    from tfstructvae.train import Training, node_labels
    x, left, right = digit_pairs(mnist.x_test[:100], mnist.y_test[:100], 50, seed=3)
    again = digit_pairs(mnist.x_test[:100], mnist.y_test[:100], 50, seed=3)
    assert x.shape == (50, 28, 56, 1) and np.array_equal(x, again[0]) and np.array_equal(right, again[2])
    rng = np.random.default_rng(3)
    li, ri = rng.integers(0, 100, 50), rng.integers(0, 100, 50)       # the documented draw
    np.testing.assert_array_equal(x[:, :, :28], mnist.x_test[li])
    np.testing.assert_array_equal(x[:, :, 28:], mnist.x_test[ri])
    assert np.array_equal(left, mnist.y_test[li]) and np.array_equal(right, mnist.y_test[ri])
    pairs = mnist_pairs(mnist, n_train=300, n_test=40)
    assert pairs.image_shape == (28, 56, 1) and set(pairs.node_labels_test) == {"right"}
    graph = ({"family": "categorical", "name": "left", "size": 10, "labelled": True},
             {"family": "categorical", "name": "right", "size": 10, "labelled": True},
             {"family": "normal", "name": "style", "size": 2, "parents": ["left", "right"]})
    for mode, expect_right_outside in (("all", True), ("labelled", False)):
        cfg = Config(data=DataConfig(labels_per_class=2, batch_size=20, node_labels=mode),
                     model=ModelConfig(hidden_units=(8,), graph=graph)).validate()
        from tfstructvae.data import labelled_split
        split = labelled_split(pairs.y_train, 2, 10, 0)
        run = Training(cfg, pairs, split, 1, None, None)
        _, batch = next(iter(run.pipeline().take(1)))
        outside = batch["left"].numpy() < 0
        assert (batch["right"].numpy()[outside] >= 0).all() == expect_right_outside
        assert (batch["right"].numpy()[~outside] >= 0).all()
    assert set(node_labels(cfg, pairs, "test")) == {"left", "right"}
