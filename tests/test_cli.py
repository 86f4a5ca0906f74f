"""The command line through a subprocess, on a slice of real MNIST."""

import csv
import json
import re
import os
import subprocess
import sys

import pytest


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tfstructvae.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, mnist_dir):
    run_dir = str(tmp_path_factory.mktemp("cli") / "run")
    result = run_cli("train", "--preset", "mnist-paper", "--data-dir", mnist_dir,
                     "--labels-per-class", "10", "--epochs", "2", "--steps-per-epoch", "100",
                     "--batch-size", "100", "--seed", "1", "--output-dir", run_dir, "--verbose", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_train_writes_a_complete_run(trained_run):
    run_dir, result = trained_run
    for name in ("config.json", "metrics.json", "history.csv", "model.weights.h5"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert os.listdir(os.path.join(run_dir, "logs", "train"))             # TensorBoard events
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    for key in ("test_error", "test_elbo", "test_reconstruction", "test_kl/z", "test_kl/y", "wall_time_s"):
        assert key in metrics, key
    assert 0 <= metrics["test_error"] < 0.5          # learned: chance is 0.9
    assert metrics["labelled_examples"] == 100
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["data"]["label_seed"] == cfg["data"]["data_seed"] == cfg["train"]["init_seed"] == 1
    assert "Epoch 2/2" in result.stdout                                   # Keras progress output
    assert metrics["validation_error"] is not None                        # 5,000 held out by default
    rows = list(csv.DictReader(open(os.path.join(run_dir, "history.csv"))))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(0 <= float(r["val_accuracy"]) <= 1 and float(r["epoch_time_s"]) > 0 for r in rows)


def test_a_quiet_start_and_a_short_progress_line(trained_run):
    _, result = trained_run
    noise = [ln for ln in result.stderr.splitlines() if ln.startswith(("E0000", "W0000", "I0000"))]
    assert not noise, noise
    epoch_lines = [ln for ln in result.stdout.splitlines() if " - loss: " in ln]
    assert epoch_lines and all("val_accuracy" in ln and "kl/z" not in ln for ln in epoch_lines)
    assert all(len(ln) <= 100 for ln in epoch_lines), epoch_lines


def test_evaluate_reloads_the_run(trained_run, mnist_dir):
    run_dir, _ = trained_run
    result = run_cli("evaluate", run_dir, "--data-dir", mnist_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout[result.stdout.index("{"):])
    saved = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["test_error"] == pytest.approx(saved["test_error"], abs=1e-6)


def test_a_validation_run_leaves_the_test_set_unscored(tmp_path, mnist_dir):
    run_dir = str(tmp_path / "val")
    result = run_cli("train", "--preset", "mnist-paper", "--data-dir", mnist_dir, "--labels-per-class", "10",
                     "--epochs", "1", "--steps-per-epoch", "30", "--validation-size", "500", "--no-test",
                     "--output-dir", run_dir, "--verbose", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics["test_scored"] is False and not any(k.startswith("test_e") for k in metrics)
    assert 0 <= metrics["validation_error"] < 0.9
    later = run_cli("evaluate", run_dir, "--data-dir", mnist_dir)        # the test set, scored on request
    assert later.returncode == 0, later.stderr[-3000:]
    assert 0 <= json.loads(later.stdout[later.stdout.index("{"):])["test_error"] <= 1


def test_existing_run_is_refused(trained_run, mnist_dir):
    run_dir, _ = trained_run
    result = run_cli("train", "--data-dir", mnist_dir, "--output-dir", run_dir, "--epochs", "1")
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--overwrite" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--preset", "mnist-huge"], "unknown preset 'mnist-huge'"),
    (["--estimator", "sampled"], "unknown estimator 'sampled'"),
    (["--supervision-rate", "2"], r"supervision_rate must lie in \[0, 1\], got 2.0"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--labels-per-class", "7000"], "labels_per_class=7000 but class 0 has only"),
    (["--set", "model.depth=3"], "unknown configuration field 'model.depth'"),
])
def test_bad_arguments_fail_clearly(tmp_path, mnist_dir, args, message):
    out = str(tmp_path / "run")
    result = run_cli("train", "--data-dir", mnist_dir, "--output-dir", out, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not os.path.exists(out)                     # nothing half-written


def test_missing_data_dir_says_where_it_looked(tmp_path):
    result = run_cli("train", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "run"),
                     env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "no mnist data found" in result.stderr and str(tmp_path) in result.stderr


def test_example_runs_in_smoke_mode(tmp_path, mnist_dir):
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "semi_supervised_mnist.py")
    result = subprocess.run([sys.executable, script, "--data-dir", mnist_dir, "--smoke",
                             "--output-dir", str(tmp_path / "ex")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "q(y|x) argmax" in result.stdout and "analogy grid" in result.stdout


SERVE = """
import sys, json, numpy as np
import importlib.abc


class HideTfstructvae(importlib.abc.MetaPathFinder):   # editable installs use finders, not sys.path
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tfstructvae":
            raise ImportError("tfstructvae is hidden in this process")


sys.meta_path.insert(0, HideTfstructvae())
try:
    import tfstructvae  # noqa: F401
    raise SystemExit("tfstructvae should not be importable here")
except ImportError:
    pass
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
x = tf.constant(np.load(sys.argv[2]))
out = {"classify": m.signatures["classify"](images=x)["probabilities"].numpy().tolist(),
       "encode_z_mean": m.signatures["encode"](images=x)["z_mean"].numpy().tolist(),
       "decode": m.signatures["decode"](classes=tf.constant([1, 2], tf.int32),
                                        z=tf.zeros([2, 2]))["pixel_probabilities"].numpy().shape,
       "reconstruct": m.signatures["reconstruct"](images=x)["pixel_probabilities"].numpy().shape}
for bad in (tf.zeros([2, 28, 28, 1], tf.int32), tf.zeros([2, 32, 32, 3])):
    try:
        m.signatures["classify"](images=bad)
        out.setdefault("accepted_bad", []).append(str(bad.shape))
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
        out.setdefault("refused", []).append(type(e).__name__)
try:
    m.signatures["classify"](images=tf.fill([1, 28, 28, 1], 255.0))
except tf.errors.InvalidArgumentError as e:
    out["range_error"] = "in [0, 1]" in str(e)
print(json.dumps(out))
"""


def test_export_serves_in_a_fresh_process_without_the_package(trained_run, tmp_path, mnist):
    import numpy as np
    run_dir, _ = trained_run
    out = str(tmp_path / "saved")
    result = run_cli("export", run_dir, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classify(images: float32[None, 28, 28, 1]) -> probabilities: float32[None, 10]" in result.stdout
    x = (mnist.x_test[:3] / 255.0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    served = subprocess.run([sys.executable, str(script), out, str(tmp_path / "x.npy")], capture_output=True,
                            text=True, timeout=300, cwd=str(tmp_path),
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert served.returncode == 0, served.stderr[-3000:]
    got = json.loads(served.stdout.strip().splitlines()[-1])
    from tfstructvae.train import load_run
    _, model = load_run(run_dir)
    np.testing.assert_allclose(got["classify"], model.classify(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(got["encode_z_mean"], model.encode(x)["z"].mean().numpy(), atol=1e-5)
    assert got["decode"] == [2, 28, 28, 1] and got["reconstruct"] == [3, 28, 28, 1]
    assert len(got["refused"]) == 2 and "accepted_bad" not in got and got["range_error"] is True


@pytest.mark.parametrize("source", ["run", "saved_model"])
def test_analogies_and_style_grid_commands(trained_run, tmp_path, mnist_dir, source):
    import tensorflow as tf
    run_dir, _ = trained_run
    model = run_dir
    if source == "saved_model":
        model = str(tmp_path / "sm")
        assert run_cli("export", run_dir, model).returncode == 0
    png = str(tmp_path / "analogies.png")
    result = run_cli("analogies", model, "--out", png, "--data-dir", mnist_dir, "--count", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert tf.io.decode_png(tf.io.read_file(png)).shape == (4 * 29 - 1, 12 * 29 - 1, 1)
    grid = str(tmp_path / "grid.png")
    result = run_cli("style-grid", model, "--out", grid, "--steps", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert tf.io.decode_png(tf.io.read_file(grid)).shape[-1] == 1


def test_the_shipped_model_serves_without_the_package_and_classifies_well(tmp_path, mnist):
    import numpy as np
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_models", "mnist-l10")
    x = (mnist.x_test[:200] / 255.0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "serve.py"
    script.write_text(SERVE.replace("import tensorflow as tf\n", "import tensorflow as tf\n"
                                    "assert 'tensorflow_probability' not in sys.modules\n", 1))
    served = subprocess.run([sys.executable, str(script), shipped, str(tmp_path / "x.npy")], capture_output=True,
                            text=True, timeout=300, cwd=str(tmp_path),
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert served.returncode == 0, served.stderr[-3000:]
    got = json.loads(served.stdout.strip().splitlines()[-1])
    accuracy = (np.argmax(got["classify"], -1) == mnist.y_test[:200]).mean()
    assert accuracy > 0.95 and got["decode"] == [2, 28, 28, 1]
    metrics = json.load(open(os.path.join(shipped, "metrics.json")))
    assert metrics["preset"] == "mnist-shift" and metrics["test_error"] < 0.03     # config.DEFAULT_PRESET


def test_two_digit_example_runs_in_smoke_mode(mnist_dir):
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "two_digits.py")
    result = subprocess.run([sys.executable, script, "--data-dir", mnist_dir, "--smoke"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [float(ln.split(":")[1].strip(" %")) for ln in result.stdout.splitlines() if "digit test error" in ln]
    assert len(errors) == 2 and all(0 <= e <= 100 for e in errors)
    assert "right digit swapped 0..9, image shape: (10, 28, 56, 1)" in result.stdout


def test_train_without_a_preset_builds_the_default_and_says_which():
    import argparse
    from tfstructvae.cli import _add_train_args, config_from_args
    from tfstructvae.config import DEFAULT_PRESET, get_preset
    parser = argparse.ArgumentParser()
    _add_train_args(parser)
    cfg = config_from_args(parser.parse_args(["--output-dir", "runs/x"]))
    assert cfg.preset == DEFAULT_PRESET == "mnist-shift"
    assert cfg.objective == get_preset(DEFAULT_PRESET).objective and cfg.objective.augment_weight > 0
    assert f"default: {DEFAULT_PRESET}" in parser.format_help()
