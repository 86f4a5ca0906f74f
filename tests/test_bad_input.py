"""Every bad input gets an error that names the offending value and what was expected.

Run in-process through the CLI (exit code 2, message on stderr) or the library; none
leaves a run directory behind.
"""

import gzip
import os

import numpy as np
import pytest

from conftest import write_fake_mnist, write_idx
from tfstructvae import cli
from tfstructvae.config import Config, ConfigError, DataConfig, parse_overrides
from tfstructvae.data import DataError, training_pipeline


def truncate(d):
    p = os.path.join(d, "train-images-idx3-ubyte.gz")
    data = open(p, "rb").read()
    open(p, "wb").write(data[:-200])


def bad_magic(d):
    with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + b"\x00" * 64)


def count_mismatch(d):
    write_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), np.zeros(7, np.uint8))


def float_npz_out_of_range(d):
    empty(d)
    x = np.full((20, 28, 28), 2.0, np.float32)
    np.savez(os.path.join(d, "mnist.npz"), x_train=x, y_train=np.arange(20) % 10, x_test=x, y_test=np.arange(20) % 10)


def empty(d):
    for name in os.listdir(d):
        os.remove(os.path.join(d, name))


CLI_CASES = [
    # (description, extra args, how to spoil the data dir, expected message)
    ("unknown preset", ["--preset", "mnist-xl"], None, "unknown preset 'mnist-xl'; expected one of"),
    ("unknown estimator", ["--estimator", "reinforce"], None, "unknown estimator 'reinforce'; expected one of"),
    ("rate above 1", ["--supervision-rate", "1.2"], None, r"supervision_rate must lie in \[0, 1\], got 1.2"),
    ("rate below 0", ["--supervision-rate", "-0.1"], None, r"supervision_rate must lie in \[0, 1\], got -0.1"),
    ("labelled mode, no labels", ["--labels-per-class", "0"], None, "labels_per_class is 0"),
    ("batch size 0", ["--batch-size", "0"], None, "batch_size must be >= 1, got 0"),
    ("no steps a call", ["--set", "train.steps_per_execution=0"], None, "steps_per_execution must be >= 1, got 0"),
    ("too many labels", ["--labels-per-class", "9"], None, "labels_per_class=9 but class 0 has only 6"),
    ("bad --set", ["--set", "objective.alpha"], None, "--set expects SECTION.FIELD=VALUE"),
    ("--set, not a number", ["--set", "train.epochs=ten"], None, "train.epochs takes an integer, got 'ten'"),
    ("--set, not a list of integers", ["--set", "model.classifier_filters=32,sixty-four"], None,
     r"model.classifier_filters takes a list of integers \(e.g. \[32,64,128\] or 32,64,128\) or null, "
     "got '32,sixty-four'"),
    ("--set, null where a value is needed", ["--set", "model.style_dim=null"], None, "model.style_dim cannot be null"),
    ("missing data dir", ["--data-dir", "/nonexistent/mnist"], None, "data directory '/nonexistent/mnist' does not exist"),
    ("empty data dir", [], empty, "no mnist data found. Looked in: "),
    ("truncated gzip", [], truncate, r"train-images-idx3-ubyte.gz: cannot be read .*truncated or corrupt"),
    ("wrong magic", [], bad_magic, "train-labels-idx1-ubyte.gz: bad IDX magic number 0x00000d01"),
    ("counts disagree", [], count_mismatch, "holds 20 images but .* holds 7 labels"),
    ("pixels outside [0, 1]", [], float_npz_out_of_range, r"x_train holds floats outside \[0, 1\]"),
]


@pytest.mark.parametrize("what,args,spoil,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input(tmp_path, capsys, monkeypatch, what, args, spoil, message):
    import re
    monkeypatch.setenv("HOME", str(tmp_path))          # no ~/.keras or TFDS copy to fall back on
    data = tmp_path / "data"
    data.mkdir()
    write_fake_mnist(data)                              # 60 train images: 6 per class
    if spoil:
        spoil(str(data))
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(data), "--output-dir", str(out), "--epochs", "1",
            "--validation-size", "0", *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


def test_set_reads_each_value_as_its_fields_type():
    cfg = Config().override(**parse_overrides([
        "model.classifier_filters=32,64,128", "model.hidden_units=500", "objective.alpha=2",
        "data.teacher=runs/t1", "model.classifier_units=null", "train.jit_compile=false"]))
    assert cfg.model.classifier_filters == (32, 64, 128) and cfg.model.hidden_units == (500,)
    assert cfg.objective.alpha == 2.0 and isinstance(cfg.objective.alpha, float)
    assert cfg.data.teacher == ("runs/t1",) and cfg.model.classifier_units is None
    assert cfg.train.jit_compile is False
    # a name that reads as a number stays a name where the field holds names only
    named = Config().override(**parse_overrides(["data.data_dir=2024", "data.teacher=7", "data.teacher_preset=null"]))
    assert named.data.data_dir == "2024" and named.data.teacher == ("7",) and named.data.teacher_preset is None
    for item, message in [("train.epochs=2.5", "train.epochs takes an integer, got 2.5"),
                          ("objective.alpha=true", "objective.alpha takes a number, got True"),
                          ("train.jit_compile=3", "train.jit_compile takes true or false or a string, got 3")]:
        with pytest.raises(ConfigError, match=message):
            Config().override(**parse_overrides([item]))


def test_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    write_fake_mnist(data)
    assert cli.main(["train", "--data-dir", str(data), "--output-dir", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "{}"     # untouched


PIPELINE_CASES = [
    ("labels out of range", dict(y=np.array([0, 1, 10])), r"labels span \[0, 10\]; expected integers in \[0, 10\)"),
    ("negative labels", dict(y=np.array([0, -3, 1])), r"labels span \[-3, 1\]"),
    ("float labels", dict(y=np.array([0.0, 1.0, 2.0])), "labels must be integers, got dtype float64"),
    ("float images", dict(x=np.zeros((3, 28, 28, 1), np.float32)), "must be uint8 pixels"),
    ("no channel axis", dict(x=np.zeros((3, 28, 28), np.uint8)), r"shape \(N, H, W, C\)"),
    ("label count", dict(y=np.array([0, 1])), "3 labelled images but 2 labels"),
]


@pytest.mark.parametrize("what,bad,message", PIPELINE_CASES, ids=[c[0] for c in PIPELINE_CASES])
def test_pipeline_refuses_bad_arrays(what, bad, message):
    x_u = np.zeros((10, 28, 28, 1), np.uint8)
    x_l = bad.get("x", np.zeros((3, 28, 28, 1), np.uint8))
    y_l = bad.get("y", np.array([0, 1, 2]))
    with pytest.raises(DataError, match=message):
        training_pipeline(x_u, x_l, y_l, DataConfig(batch_size=2))
