"""Interrupted runs resume exactly; same seeds give the same run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

EPOCHS, STEPS, EVERY = 2, 150, 20


def train_cmd(run_dir, mnist_dir, *extra):
    return [sys.executable, "-m", "tfstructvae.cli", "train", "--preset", "mnist-paper", "--data-dir", mnist_dir,
            "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS), "--seed", "3", "--output-dir", run_dir,
            "--set", f"train.checkpoint_every_steps={EVERY}", "--set", "train.deterministic=true",
            "--verbose", "0", *extra]


def comparable(run_dir):
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    return {k: v for k, v in metrics.items() if not k.endswith("time_s") and k != "resumed_from_step"}


def weights(run_dir):
    import h5py
    out = {}
    with h5py.File(os.path.join(run_dir, "model.weights.h5")) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
    return out


def checkpoint_step(run_dir):
    from tfstructvae.checkpointing import latest_step
    return latest_step(os.path.join(run_dir, "checkpoints"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mnist_dir):
    run_dir = str(tmp_path_factory.mktemp("ref") / "run")
    result = subprocess.run(train_cmd(run_dir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_same_seed_runs_are_identical(reference_run, tmp_path, mnist_dir):
    run_dir = str(tmp_path / "again")
    result = subprocess.run(train_cmd(run_dir, mnist_dir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(run_dir) == comparable(reference_run)
    a, b = weights(run_dir), weights(reference_run)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def wait_then(proc, run_dir, min_step, sig):
    deadline = time.time() + 300
    while checkpoint_step(run_dir) < min_step:
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.wait(timeout=300)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(reference_run, tmp_path, mnist_dir):
    run_dir = str(tmp_path / "killed")
    proc = subprocess.Popen(train_cmd(run_dir, mnist_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_then(proc, run_dir, STEPS + EVERY, signal.SIGKILL)             # in the second epoch
    killed_at = checkpoint_step(run_dir)
    assert STEPS < killed_at < EPOCHS * STEPS and not os.path.exists(os.path.join(run_dir, "metrics.json"))
    result = subprocess.run(train_cmd(run_dir, mnist_dir, "--resume"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["resumed_from_step"] == killed_at
    assert comparable(run_dir) == comparable(reference_run)
    a, b = weights(run_dir), weights(reference_run)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sigterm_saves_state_and_says_how_to_resume(reference_run, tmp_path, mnist_dir):
    run_dir = str(tmp_path / "term")
    proc = subprocess.Popen(train_cmd(run_dir, mnist_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    code = wait_then(proc, run_dir, EVERY, signal.SIGTERM)
    stderr = proc.stderr.read()
    assert code == 130, stderr[-2000:]
    assert "interrupted by SIGTERM at step" in stderr and "--resume" in stderr
    stopped = checkpoint_step(run_dir)
    assert stopped >= EVERY
    result = subprocess.run(train_cmd(run_dir, mnist_dir, "--resume"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(run_dir) == comparable(reference_run)


def test_benchmark_reuse_resumes_a_run_cut_short(reference_run, tmp_path, mnist_dir):
    # Benchmarks call train_or_reuse: a run killed mid-way continues from its checkpoint rather
    # than starting over, and ends where the uninterrupted run ends.
    run_dir = str(tmp_path / "cut")
    proc = subprocess.Popen(train_cmd(run_dir, mnist_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_then(proc, run_dir, EVERY, signal.SIGKILL)
    killed_at = checkpoint_step(run_dir)
    code = ("import sys; from tfstructvae.train import train_or_reuse, read_run_config; "
            "train_or_reuse(read_run_config(sys.argv[1]), sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", code, run_dir], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from its last checkpoint" in result.stdout
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["resumed_from_step"] == killed_at > 0
    assert comparable(run_dir) == comparable(reference_run)


def test_a_finished_run_goes_on_for_more_epochs_as_if_trained_that_long(reference_run, tmp_path, mnist_dir):
    # A run at a constant learning rate trained for 1 epoch, then resumed with --epochs 2 (the CLI)
    # or asked for 2 by a benchmark (train_or_reuse), ends exactly where the 2-epoch run ends.
    short = [a if a != str(EPOCHS) else "1" for a in train_cmd("RUN", mnist_dir)]
    for way in ("cli", "reuse"):
        run_dir = str(tmp_path / way)
        first = subprocess.run([a if a != "RUN" else run_dir for a in short], capture_output=True, text=True,
                               timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        assert json.load(open(os.path.join(run_dir, "metrics.json")))["epochs"] == 1
        if way == "cli":
            result = subprocess.run(train_cmd(run_dir, mnist_dir, "--resume"), capture_output=True, text=True,
                                    timeout=600)
        else:
            code = ("import sys; from tfstructvae.train import train_or_reuse, read_run_config; "
                    "train_or_reuse(read_run_config(sys.argv[1]).override(**{'train.epochs': 2}), sys.argv[1])")
            result = subprocess.run([sys.executable, "-c", code, run_dir], capture_output=True, text=True,
                                    timeout=600)
            assert "trained for 1 epochs; going on to 2" in result.stdout
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.load(open(os.path.join(run_dir, "config.json")))["train"]["epochs"] == EPOCHS
        assert json.load(open(os.path.join(run_dir, "metrics.json")))["resumed_from_step"] == STEPS
        assert comparable(run_dir) == comparable(reference_run)


def test_a_longer_cosine_schedule_or_other_settings_are_refused_on_resume():
    from tfstructvae.config import ConfigError, get_preset
    from tfstructvae.train import _check_extension
    saved = get_preset("mnist-paper")
    _check_extension(saved, saved.override(**{"train.epochs": 40}), "run")      # constant rate: allowed
    cosine = get_preset("mnist-shift")
    with pytest.raises(ConfigError, match="only at a constant learning rate"):
        _check_extension(cosine, cosine.override(**{"train.epochs": 40}), "run")
    with pytest.raises(ConfigError, match="the configuration differs"):
        _check_extension(saved, saved.override(**{"train.epochs": 40, "objective.alpha": 5.0}), "run")
    with pytest.raises(ConfigError, match="it can go on to more, not 10"):
        _check_extension(saved, saved.override(**{"train.epochs": 10}), "run")


def test_a_weight_averaged_run_killed_mid_epoch_resumes_exactly(reference_run, tmp_path, mnist_dir):
    # Keras would put the average in place at the end of the first of the two fit calls of a run
    # resumed mid-epoch; the average replaces the weights once, after training (train.Adam).
    ema = ("--set", "train.ema_momentum=0.99")
    whole = str(tmp_path / "whole")
    result = subprocess.run(train_cmd(whole, mnist_dir, *ema), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a, ref = weights(whole), weights(reference_run)
    assert not all(np.array_equal(a[k], ref[k]) for k in a)      # the averaged weights are another model
    run_dir = str(tmp_path / "killed")
    proc = subprocess.Popen(train_cmd(run_dir, mnist_dir, *ema), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_then(proc, run_dir, EVERY, signal.SIGKILL)                 # in the first epoch: two fit calls
    assert 0 < checkpoint_step(run_dir) < STEPS
    result = subprocess.run(train_cmd(run_dir, mnist_dir, *ema, "--resume"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert comparable(run_dir) == comparable(whole)
    b = weights(run_dir)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_several_steps_per_call_train_the_same_run(reference_run, tmp_path, mnist_dir):
    # train.steps_per_execution=10 runs ten steps per call of the compiled function: the same steps
    # on the same minibatches as one a call, checkpoints where the steps passed a multiple of
    # EVERY; killed and resumed, it still ends where the uninterrupted run of one step a call does
    run_dir = str(tmp_path / "ten")
    cmd = train_cmd(run_dir, mnist_dir, "--set", "train.steps_per_execution=10")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_then(proc, run_dir, STEPS + EVERY, signal.SIGKILL)
    killed_at = checkpoint_step(run_dir)
    assert killed_at % EVERY == 0 and killed_at % 10 == 0
    result = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps run per call instead" not in result.stdout
    assert checkpoint_step(run_dir) == EPOCHS * STEPS
    assert json.load(open(os.path.join(run_dir, "config.json")))["train"]["steps_per_execution"] == 10
    a, b = weights(run_dir), weights(reference_run)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    assert abs(comparable(run_dir)["test_error"] - comparable(reference_run)["test_error"]) < 1e-3


def test_steps_per_execution_falls_back_to_a_divisor_of_the_epoch():
    from tfstructvae.config import Config, TrainConfig
    from tfstructvae.train import steps_per_execution
    for wanted, steps, used in ((5, 150, 5), (7, 150, 6), (64, 150, 50), (1, 150, 1), (10, 4, 4), (4, 7, 1)):
        assert steps_per_execution(Config(train=TrainConfig(steps_per_execution=wanted)), steps) == used
