"""A user's own .npz, any image shape and class count: trained, reloaded, exported, served, drawn;
and every input that would be misread refused by name, before anything is written."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfstructvae import cli


def write_npz(path, n_train=200, n_test=50, shape=(32, 32, 3), classes=5, seed=0, **replace):
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
              "y_train": np.arange(n_train) % classes,
              "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
              "y_test": np.arange(n_test) % classes}
    arrays.update(replace)
    np.savez(path, **arrays)
    return str(path)


def train_args(data, out, *extra):
    return ["train", "--data-dir", data, "--output-dir", out, "--labels-per-class", "4", "--batch-size", "20",
            "--epochs", "1", "--steps-per-epoch", "3", "--verbose", "0", "--set", "model.hidden_units=[32]",
            "--set", "model.classifier_units=[32]", *extra]


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_own_colour_data_with_five_classes_end_to_end(tmp_path, capsys, network):
    data = write_npz(tmp_path / "my_data.npz")
    run, saved = str(tmp_path / "run"), str(tmp_path / "saved")
    assert cli.main(train_args(data, run, "--set", f"model.network={network}")) == 0
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["model"]["image_shape"] == [32, 32, 3] and cfg["model"]["num_classes"] == 5
    assert cfg["data"]["validation_size"] == 20             # at most a tenth of the 200 images
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["test_error"] <= 1 and metrics["test_examples"] == 50
    assert cli.main(["evaluate", run]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_error"] == pytest.approx(metrics["test_error"], abs=1e-6)
    assert cli.main(["export", run, saved]) == 0
    capsys.readouterr()
    served = tf.saved_model.load(saved)
    images = tf.constant(np.random.default_rng(1).uniform(size=(3, 32, 32, 3)), tf.float32)
    assert served.signatures["classify"](images=images)["probabilities"].shape == (3, 5)
    assert served.signatures["reconstruct"](images=images)["pixel_probabilities"].shape == (3, 32, 32, 3)
    png = str(tmp_path / "analogies.png")
    assert cli.main(["analogies", run, "--out", png, "--count", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"][2] == 3 and os.path.getsize(png) > 0


def fractional_labels(d):
    return write_npz(d / "x.npz", y_train=(np.arange(200) % 5) + 0.5)


def integral_float_labels(d):
    return write_npz(d / "x.npz", y_train=(np.arange(200) % 5).astype(np.float32))


def nan_pixels(d):
    x = np.random.default_rng(0).uniform(size=(200, 8, 8, 1)).astype(np.float32)
    x[3, 2, 2, 0] = np.nan
    return write_npz(d / "x.npz", x_train=x, x_test=x[:50])


def missing_class(d):
    return write_npz(d / "x.npz", y_train=np.where(np.arange(200) % 5 == 2, 3, np.arange(200) % 5))


def other_test_shape(d):
    return write_npz(d / "x.npz", x_test=np.zeros((50, 28, 28, 3), np.uint8))


def not_npz(d):
    (d / "images.csv").write_text("1,2,3\n")
    return str(d / "images.csv")


def labels_out_of_range(d):
    return write_npz(d / "x.npz", y_test=np.arange(50) % 7)


BAD_DATA = [
    ("fractional float labels", fractional_labels, r"labels must be whole numbers; found \[0.5, 1.5, 2.5, 3.5, 4.5\]"),
    ("NaN pixels", nan_pixels, "x_train holds 1 NaN and 0 infinite pixel values"),
    ("a class without examples", missing_class, r"classes \[2\] have no training example"),
    ("test images of another shape", other_test_shape, r"train images \(32, 32, 3\) and test images \(28, 28, 3\)"),
    ("test labels out of range", labels_out_of_range, r"test labels span \[0, 6\]; expected integers in \[0, 5\)"),
    ("a file that is not .npz", not_npz, "is a file but not a .npz"),
]


@pytest.mark.parametrize("what,make,message", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_refused_before_anything_is_written(tmp_path, capsys, what, make, message):
    import re
    data = make(tmp_path)
    out = tmp_path / "run"
    assert cli.main(train_args(data, str(out))) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists()


def test_integral_float_labels_are_read_as_classes(tmp_path, capsys):
    assert cli.main(train_args(integral_float_labels(tmp_path), str(tmp_path / "run"))) == 0


def test_path_mistakes_give_messages_not_tracebacks(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [
        (train_args(data, str(a_file)), "notes.txt is a file, not a directory"),
        (train_args(data, str(a_file / "run")), "cannot create the run directory"),
        (["evaluate", str(a_file)], "is not a run directory (a file)"),
        (["evaluate", str(tmp_path / "nowhere")], "is not a run directory (it does not exist)"),
        (["export", str(tmp_path), str(tmp_path / "out")], "holds no run: config.json is missing"),
        (["analogies", str(a_file), "--out", str(tmp_path / "a.png")], "is not a run directory"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert a_file.read_text() == "x"
