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
