"""`tfstructvae tune`: a grid chosen on held-out training images, resumable, and its choice trained
with `tfstructvae train --config`."""

import json
import os

import numpy as np
import pytest

from tfstructvae import cli
from tfstructvae.config import ConfigError
from tfstructvae.tune import parse_grid


def separable_npz(path, n_train=400, n_test=50, classes=4, seed=0):
    """Each class lights a different quadrant over noise: learnable in a few steps at a sane rate."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % classes
        x = rng.integers(0, 60, (n, 12, 12)).astype(np.uint8)
        for k in range(classes):
            r, c = divmod(k, 2)
            x[y == k, 6 * r:6 * r + 6, 6 * c:6 * c + 6] = 220
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x, y
    np.savez(path, **arrays)
    return str(path)


def tune_args(data, out, *extra):
    return ["tune", "--data-dir", data, "--output-dir", out, "--labels-per-class", "10", "--batch-size", "20",
            "--epochs", "3", "--steps-per-epoch", "15", "--validation-size", "40", "--no-xla",
            "--set", "model.hidden_units=[32]", "--set", "model.classifier_units=[32]",
            "--set", "objective.consistency_weight=0", *extra]


def test_tune_chooses_on_validation_resumes_and_its_choice_trains(tmp_path, capsys):
    data, out = separable_npz(tmp_path / "d.npz"), str(tmp_path / "tune")
    grid = ["--grid", "train.learning_rate=0.000001,0.003"]
    assert cli.main(tune_args(data, out, *grid)) == 0
    assert "chosen: {'train.learning_rate': 0.003}" in capsys.readouterr().out
    trials = json.load(open(os.path.join(out, "trials.json")))["trials"]
    assert [t["overrides"] for t in trials] == [{"train.learning_rate": 1e-6}, {"train.learning_rate": 0.003}]
    assert all(len(t["curve"]) == 3 for t in trials)
    assert trials[1]["validation_error"] < 0.3 < trials[0]["validation_error"]
    best = json.load(open(os.path.join(out, "best_config.json")))
    assert best["train"]["learning_rate"] == 0.003 and best["data"]["validation_size"] == 40

    # a second call finds both points done and trains nothing
    mtime = os.path.getmtime(os.path.join(out, "trials.json"))
    assert cli.main(tune_args(data, out, *grid)) == 0
    assert capsys.readouterr().out.count("done before, kept") == 2
    assert os.path.getmtime(os.path.join(out, "trials.json")) == mtime

    run = str(tmp_path / "run")
    assert cli.main(["train", "--config", os.path.join(out, "best_config.json"), "--output-dir", run,
                     "--epochs", "1", "--verbose", "0"]) == 0
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["train"]["learning_rate"] == 0.003 and saved["train"]["epochs"] == 1


@pytest.mark.parametrize("extra,message", [
    (["--grid", "data.dataset=mnist,svhn"], "cannot vary data.dataset"),
    (["--grid", "objective.alpha"], "expects SECTION.FIELD=VALUE1,VALUE2"),
    (["--grid", "objective.alpha=5,-1"], "alpha must be >= 0"),
    (["--validation-size", "0"], "set data.validation_size >= 1"),
    (["--preset", "mnist", "--config", "x.json"], "give --preset or --config, not both"),
])
def test_tune_refuses_what_it_cannot_compare(tmp_path, capsys, extra, message):
    data = separable_npz(tmp_path / "d.npz")
    assert cli.main(tune_args(data, str(tmp_path / "tune"), *extra)) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "tune" / "trials.json")


def test_grid_values_parse_as_json_and_keep_lists_whole():
    assert parse_grid(["model.classifier_units=[64,32],[128]", "objective.augment_flip=true,false"]) == {
        "model.classifier_units": [(64, 32), (128,)], "objective.augment_flip": [True, False]}
    with pytest.raises(ConfigError, match="cannot vary data.validation_size"):
        parse_grid(["data.validation_size=10,20"])
    from tfstructvae import get_preset
    from tfstructvae.tune import point_config
    grid = parse_grid(["model.classifier_units=null,[256]"])          # null: the field's None
    units = [point_config(get_preset("mnist-best"), {"model.classifier_units": v}).model.classifier_units
             for v in grid["model.classifier_units"]]
    assert units == [None, (256,)]


def test_a_recipe_brings_a_presets_objective_and_classifier_and_keeps_the_rest():
    from tfstructvae import get_preset
    from tfstructvae.tune import DEFAULT_GRID, point_config
    assert parse_grid(["recipe=mnist-shift,fashion-mnist"]) == DEFAULT_GRID
    with pytest.raises(ConfigError, match="unknown recipe 'mnist-bset'"):
        parse_grid(["recipe=mnist-best,mnist-bset"])
    mine = get_preset("mnist-paper").override(**{"train.epochs": 3, "data.labels_per_class": 7,
                                                  "model.hidden_units": (64,)})
    fashion = get_preset("fashion-mnist")
    cfg = point_config(mine, {"recipe": "fashion-mnist", "train.learning_rate": 0.01})
    assert cfg.objective == fashion.objective and cfg.model.classifier_network == "conv"
    assert cfg.model.classifier_units == fashion.model.classifier_units == (1200, 600, 300)
    assert (cfg.train.epochs, cfg.data.labels_per_class, cfg.model.hidden_units, cfg.train.learning_rate) == (
        3, 7, (64,), 0.01)
    assert cfg.data.dataset == "mnist"                      # the data stay the user's
    back = point_config(mine, {"recipe": "mnist-best"})
    assert back.objective == get_preset("mnist-best").objective and back.model.classifier_network is None
    # what the user set explicitly wins over the recipe
    kept = point_config(mine, {"recipe": "fashion-mnist"}, {"objective.augment_weight": 5.0, "objective.alpha": None})
    assert kept.objective.augment_weight == 5.0
    assert kept.objective.augment_cutout == fashion.objective.augment_cutout == 12    # the rest is the recipe's


def test_tune_tries_recipes_on_your_data(tmp_path, capsys):
    data, out = separable_npz(tmp_path / "d.npz"), str(tmp_path / "tune")
    assert cli.main(tune_args(data, out, "--epochs", "1", "--grid", "recipe=mnist-paper,fashion-mnist")) == 0
    assert "chosen: {'recipe':" in capsys.readouterr().out
    trials = json.load(open(os.path.join(out, "trials.json")))["trials"]
    assert [t["overrides"] for t in trials] == [{"recipe": "mnist-paper"}, {"recipe": "fashion-mnist"}]
    assert [t["config"]["objective"]["estimator"] for t in trials] == ["plugin", "plugin"]
    assert [t["config"]["objective"]["augment_weight"] for t in trials] == [0.0, 50.0]
    # --set objective.consistency_weight=0 (in tune_args) holds in both; the recipe sets the rest
    assert all(t["config"]["objective"]["consistency_weight"] == 0 for t in trials)
    assert [t["config"]["model"]["classifier_units"] for t in trials] == [[32], [32]]


def test_tune_over_several_label_draws_keeps_the_lowest_mean(tmp_path, capsys):
    data, out = separable_npz(tmp_path / "d.npz"), str(tmp_path / "tune")
    grid = ["--grid", "train.learning_rate=0.000001,0.003", "--seeds", "3,4", "--epochs", "2"]
    assert cli.main(tune_args(data, out, *grid)) == 0
    printed = capsys.readouterr().out
    assert "chosen: {'train.learning_rate': 0.003}" in printed and "the mean over seeds [3, 4]" in printed
    trials = json.load(open(os.path.join(out, "trials.json")))["trials"]
    assert [(t["overrides"]["train.learning_rate"], t["seed"]) for t in trials] == [
        (1e-6, 3), (1e-6, 4), (0.003, 3), (0.003, 4)]
    # each draw is its own labelled examples, hold-out, data order and initial weights
    assert [(t["config"]["data"]["label_seed"], t["config"]["data"]["data_seed"], t["config"]["train"]["init_seed"])
            for t in trials] == [(3, 3, 3), (4, 4, 4), (3, 3, 3), (4, 4, 4)]
    summary = json.loads(printed[printed.index("{\n"):])
    fast = summary["trials"][1]
    assert fast["seeds"] == [3, 4] and fast["validation_errors"] == [t["validation_error"] for t in trials[2:]]
    assert fast["validation_error"] == pytest.approx(sum(fast["validation_errors"]) / 2)
    # the chosen configuration trains on the seeds the user gave, not on the last draw tried
    best = json.load(open(os.path.join(out, "best_config.json")))
    assert best["train"]["learning_rate"] == 0.003 and best["data"]["label_seed"] == 0
    # a draw not yet trained is trained; the finished ones are kept
    assert cli.main(tune_args(data, out, *grid[:2], "--seeds", "3,5", "--epochs", "2")) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before, kept") == 2 and "seed 5\n" in printed


@pytest.mark.parametrize("seeds", ["0,x", "1,1", "-1"])
def test_tune_refuses_bad_seeds(tmp_path, capsys, seeds):
    data = separable_npz(tmp_path / "d.npz")
    assert cli.main(tune_args(data, str(tmp_path / "tune"), "--seeds", seeds)) == 2
    assert "seeds" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "tune" / "trials.json")
