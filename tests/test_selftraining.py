"""Self-training (`data.teacher`): a finished run's confident classes become the next run's labels."""

import dataclasses
import os

import numpy as np
import pytest

from tfstructvae import get_preset
from tfstructvae.config import ConfigError
from tfstructvae.rundir import write_json_atomic

LABELS, HOLD_OUT = 10, 1000


def base_cfg(mnist_dir, **changes):
    return get_preset("mnist-paper").override(**{
        "data.data_dir": mnist_dir, "data.labels_per_class": LABELS, "data.validation_size": HOLD_OUT,
        "data.label_seed": 3, **changes})


def teacher_run(path, cfg, logits):
    """A run directory whose q(y|x) gives every image the class probabilities softmax(`logits`)."""
    from tfstructvae.model import StructuredVAE
    model = StructuredVAE.from_config(cfg.override(**{"model.image_shape": (28, 28, 1)}))
    head = model.q_nets[model.node_index["y"]]
    kernel, bias = [w for w in head.weights if w.shape[-1] == 10][-2:]
    kernel.assign(np.zeros(kernel.shape, np.float32))
    bias.assign(np.asarray(logits, np.float32))
    os.makedirs(path)
    write_json_atomic(os.path.join(path, "config.json"),
                      cfg.override(**{"model.image_shape": (28, 28, 1)}).to_dict())
    model.save_weights(os.path.join(path, "model.weights.h5"))
    return str(path)


def test_a_student_trains_on_its_teachers_confident_classes(tmp_path, mnist_dir):
    from tfstructvae.train import prepare_training
    cfg = base_cfg(mnist_dir)
    threes = teacher_run(tmp_path / "threes", cfg, np.eye(10)[3] * 30.0)     # class 3, probability ~1
    unsure = teacher_run(tmp_path / "unsure", cfg, np.zeros(10))             # 0.1 for every class

    plain = prepare_training(cfg)
    run = prepare_training(cfg.override(**{"data.teacher": (threes,), "data.teacher_threshold": 0.9}))
    pool = plain.split.unlabelled
    assert len(run.split.labelled) == len(plain.split.labelled) + len(pool)
    np.testing.assert_array_equal(run.split.unlabelled, pool)          # the images stay unlabelled too
    np.testing.assert_array_equal(run.split.validation, plain.split.validation)
    assert run.steps == plain.steps                                     # an epoch is as long as without
    assert np.all(run.taught_data.y_train[pool] == 3)
    labelled = plain.split.labelled
    np.testing.assert_array_equal(run.taught_data.y_train[labelled], plain.data.y_train[labelled])
    np.testing.assert_array_equal(run.data.y_train, plain.data.y_train)   # scored against the true labels
    assert run.taught == {"teacher_labelled": len(pool), "unlabelled": len(pool), "teacher_threshold": 0.9,
                          "teacher_label_error": pytest.approx(np.mean(plain.data.y_train[pool] != 3))}
    # what the step sees: the labelled minibatches carry the teacher's class (the 100 true labels are a
    # fraction of a percent of the labelled examples now)
    labels = np.concatenate([y.numpy().reshape(-1) for _, y in run.global_pipeline().take(200)])
    labels = labels[labels >= 0]
    assert len(labels) > 0 and np.mean(labels == 3) > 0.97

    # no image reaches the threshold: the labelled split is the plain one
    run = prepare_training(cfg.override(**{"data.teacher": (unsure,), "data.teacher_threshold": 0.5}))
    np.testing.assert_array_equal(run.split.labelled, plain.split.labelled)
    # two teachers are averaged: class 3 at (1 + 0.1) / 2 = 0.55
    both = cfg.override(**{"data.teacher": (threes, unsure)})
    assert len(prepare_training(both.override(**{"data.teacher_threshold": 0.5})).split.labelled) == \
        len(plain.split.labelled) + len(pool)
    np.testing.assert_array_equal(prepare_training(both.override(**{"data.teacher_threshold": 0.6})).split.labelled,
                                  plain.split.labelled)


def test_a_teacher_from_another_split_or_a_bad_threshold_is_refused(tmp_path, mnist_dir):
    from tfstructvae.train import prepare_training
    cfg = base_cfg(mnist_dir)
    other = teacher_run(tmp_path / "other", base_cfg(mnist_dir, **{"data.label_seed": 4}), np.zeros(10))
    with pytest.raises(ConfigError, match="another labelled split.*label_seed: 4 there, 3 here"):
        prepare_training(cfg.override(**{"data.teacher": (other,)}))
    with pytest.raises(ConfigError, match="teacher_threshold must lie in"):
        cfg.override(**{"data.teacher": (other,), "data.teacher_threshold": 1.0}).validate()
    # one directory given through override (--set data.teacher=DIR) is a list of one; a bare string
    # put in the dataclass directly, which would read as one teacher per character, is refused
    assert cfg.override(**{"data.teacher": other}).data.teacher == (other,)
    with pytest.raises(ConfigError, match="list of run directories"):
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, teacher=other)).validate()
    from tfstructvae.rundir import RunDirError
    with pytest.raises(RunDirError, match="does not exist"):
        prepare_training(cfg.override(**{"data.teacher": (str(tmp_path / "missing"),)}))


def test_the_cli_takes_one_teacher_or_several_and_records_where_they_are(tmp_path, monkeypatch):
    import argparse
    from tfstructvae.cli import _add_train_args, config_from_args
    p = argparse.ArgumentParser()
    _add_train_args(p)
    args = p.parse_args(["--output-dir", "x", "--teacher", "runs/a", "--teacher", "runs/b",
                         "--set", "data.teacher_threshold=0.95"])
    monkeypatch.chdir(tmp_path)
    cfg = config_from_args(args)
    assert cfg.data.teacher == (str(tmp_path / "runs/a"), str(tmp_path / "runs/b"))
    assert cfg.data.teacher_threshold == 0.95


def test_paper_table_trains_each_draws_teacher_first(tmp_path, mnist_dir):
    import json
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out, runs = tmp_path / "table.json", tmp_path / "runs"
    result = subprocess.run([sys.executable, os.path.join(repo, "benchmarks", "paper_table.py"), "--data-dir", mnist_dir,
                             "--quick", "--presets", "mnist-paper", "--teacher-preset", "mnist-paper", "--epochs", "1",
                             "--steps-per-epoch", "20", "--runs-dir", str(runs), "--out", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=repo)
    assert result.returncode == 0, result.stderr[-3000:]
    (r,) = json.load(open(out))["runs"]
    teacher = os.path.join(f"{runs}-quick", "mnist-paper-l10-s0")
    assert r["config"]["data"]["teacher"] == [teacher] and os.path.isfile(os.path.join(teacher, "model.weights.h5"))
    student = json.load(open(os.path.join(f"{runs}-quick", "mnist-paper-taught-by-mnist-paper-l10-s0", "metrics.json")))
    assert student["teacher_labelled"] == student["unlabelled"] == 59900 and 0 <= r["test_error"] <= 1
    assert r["teacher_test_error"] == json.load(open(os.path.join(teacher, "metrics.json")))["test_error"]
    assert r["teacher_label_error"] == student["teacher_label_error"]


def test_a_preset_with_its_own_teacher_trains_it_first_and_resumes_it(tmp_path, mnist_dir):
    # data.teacher_preset: one command trains the teacher on the run's own split into RUN/teacher,
    # then the student; the saved configuration names the preset, not the directory
    import json
    from tfstructvae.train import train_and_evaluate, train_or_reuse
    cfg = base_cfg(mnist_dir, **{"data.teacher_preset": "mnist-paper", "train.epochs": 1,
                                 "train.steps_per_epoch": 5, "train.jit_compile": False})
    run = str(tmp_path / "run")
    metrics = train_and_evaluate(cfg, run, verbose=0)
    teacher = os.path.join(run, "teacher")
    tcfg = json.load(open(os.path.join(teacher, "config.json")))
    assert tcfg["preset"] == "mnist-paper" and tcfg["train"]["epochs"] == get_preset("mnist-paper").train.epochs
    assert (tcfg["data"]["label_seed"], tcfg["data"]["validation_size"], tcfg["train"]["steps_per_epoch"]) == (3, HOLD_OUT, 5)
    tmetrics = json.load(open(os.path.join(teacher, "metrics.json")))
    assert metrics["teacher_labelled"] == metrics["unlabelled"] == 60000 - HOLD_OUT - 10 * LABELS
    assert metrics["teacher_test_error"] == tmetrics["test_error"]
    assert metrics["recipe_wall_time_s"] == pytest.approx(metrics["wall_time_s"] + tmetrics["wall_time_s"])
    saved = json.load(open(os.path.join(run, "config.json")))["data"]
    assert saved["teacher"] == [] and saved["teacher_preset"] == "mnist-paper"

    # cut short while the teacher trained: the student has its config.json only, the teacher a checkpoint
    for name in ("metrics.json", "model.weights.h5"):
        os.remove(os.path.join(run, name))
        os.remove(os.path.join(teacher, name))
    import shutil
    shutil.rmtree(os.path.join(run, "checkpoints"))
    again = train_or_reuse(cfg, run)
    assert json.load(open(os.path.join(teacher, "metrics.json")))["resumed_from_step"] == 100   # not trained again
    assert again["teacher_labelled"] == metrics["teacher_labelled"] and again["resumed_from_step"] == 0

    with pytest.raises(ConfigError, match="unknown teacher_preset 'mnist-huge'"):
        cfg.override(**{"data.teacher_preset": "mnist-huge"}).validate()
