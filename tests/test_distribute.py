"""`train.distribute`: strategies from the command line, TF_CONFIG, chief-only writes, XLA refusal."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tfstructvae.config import ConfigError, TrainConfig
from tfstructvae.distribution import is_chief, read_tf_config

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "train_distributed.py")


def tf_config(workers, index, kind="worker", chief=None):
    cluster = {"worker": workers, **({"chief": chief} if chief else {})}
    return {"cluster": cluster, "task": {"type": kind, "index": index}}


def test_tf_config_is_read_and_refused_by_name():
    good = tf_config(["127.0.0.1:1", "127.0.0.1:2"], 1)
    assert read_tf_config({"TF_CONFIG": json.dumps(good)}) == good
    for environ, message in [
        ({}, "TF_CONFIG environment variable, which is not set"),
        ({"TF_CONFIG": "{cluster"}, "TF_CONFIG is not JSON"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}})}, "needs a 'cluster' and a 'task'"),
        ({"TF_CONFIG": json.dumps(tf_config([], 0))}, "lists no 'worker'"),
        ({"TF_CONFIG": json.dumps(tf_config(["a:1", "b:2"], 2))}, r"task .* is not one of the cluster's"),
        ({"TF_CONFIG": json.dumps(tf_config(["a:1"], 0, kind="ps"))}, "is not one of the cluster's"),
    ]:
        with pytest.raises(ConfigError, match=message):
            read_tf_config(environ)
    with pytest.raises(ConfigError, match="unknown distribute 'horovod'"):
        TrainConfig(distribute="horovod").validate()


def test_the_chief_is_the_chief_task_or_else_worker_zero():
    assert is_chief(None)
    assert is_chief(tf_config(["a:1", "b:2"], 0)) and not is_chief(tf_config(["a:1", "b:2"], 1))
    with_chief = dict(chief=["c:3"])
    assert not is_chief(tf_config(["a:1"], 0, **with_chief))
    assert is_chief(tf_config(["a:1"], 0, kind="chief", **with_chief))


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, x_train=mnist.x_train[:600, ..., 0], y_train=mnist.y_train[:600],
             x_test=mnist.x_test[:100, ..., 0], y_test=mnist.y_test[:100])
    return str(path)


# Every source of noise at once: Normal samples, relaxed (Gumbel) samples, the adversarial
# direction, the random shifts; and a learned classifier of its own.
NOISY = ("--preset", "mnist-best", "--estimator", "relaxed", "--set", "objective.augment_weight=1",
         "--set", "model.classifier_units=[32]")


def launch(npz, run_dir, distribute, cpus=1, env=None, extra=()):
    return subprocess.Popen([sys.executable, SCRIPT, npz, str(run_dir), distribute, str(cpus), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def test_mirrored_on_two_logical_cpus_says_once_that_xla_is_off(tmp_path, small_npz):
    out = finish(launch(small_npz, tmp_path / "run", "mirrored", cpus=2))
    assert out.count("XLA is off for this run: 2 replicas on CPU devices") == 1
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["replicas"] == 2 and metrics["xla"] is False and np.isfinite(metrics["test_elbo"])
    assert json.load(open(tmp_path / "run" / "config.json"))["train"]["distribute"] == "mirrored"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a worker prints when its port was taken (gRPC binds 0.0.0.0:port).
PORT_CLASH = ("could not start grpc server", "failed to add port", "address already in use")


def start_workers(npz, run_dir, until_step, extra, attempts=3, timeout=300):
    """Two workers on fresh localhost ports, polled until the chief's checkpoint reaches
    `until_step`. A port that `free_port` handed out can be taken by a test running beside this
    one before the worker binds it: then both are stopped and started again on new ports. Any
    other early exit fails with the dead worker's stderr, so the failure names its cause."""
    import time

    from tfstructvae.checkpointing import latest_step
    for _ in range(attempts):
        workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        procs = [launch(npz, run_dir, "multiworker", env={"TF_CONFIG": json.dumps(tf_config(workers, i))},
                        extra=extra) for i in range(2)]
        deadline = time.time() + timeout
        while latest_step(str(run_dir / "checkpoints")) < until_step:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                break
            assert time.time() < deadline, f"no checkpoint at step {until_step} within {timeout} s"
            time.sleep(0.05)
        else:
            return procs
        for p in procs:
            p.kill()
        errors = [p.communicate()[1] for p in procs]
        shutil.rmtree(run_dir, ignore_errors=True)          # a retry starts a new run, not a resume
        if not any(clash in e.lower() for e in errors for clash in PORT_CLASH):
            died = [(i, p.returncode, e[-3000:]) for i, (p, e) in enumerate(zip(procs, errors)) if p in dead]
            raise AssertionError(f"training ended before it could be killed (step "
                                 f"{latest_step(str(run_dir / 'checkpoints'))}): {died}")
    raise AssertionError(f"no two free ports in {attempts} attempts")


def weights(run_dir):
    import h5py
    with h5py.File(os.path.join(run_dir, "model.weights.h5")) as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return found


def assert_as_one_device(run, single):
    """The same examples and the same noise on every example: equal but for the order of the
    gradient sum, which Adam can turn into a step of the learning rate (1e-3) on a weight whose
    gradient is near zero. The last epoch's losses agree to 1e-5 relative, most weights to 1e-6."""
    ours, theirs = weights(run), weights(single)
    assert ours.keys() == theirs.keys() and len(ours) > 20
    gaps = np.concatenate([np.abs(ours[k] - theirs[k]).ravel() for k in ours])
    assert np.median(gaps) < 1e-6 and np.mean(gaps < 1e-5) > 0.99 and gaps.max() < 1e-2
    # the last epoch's mean loss (a resumed run's history has the cut epoch from the resume on)
    a, b = (list(csv.DictReader(open(os.path.join(r, "history.csv"))))[-1] for r in (run, single))
    assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)


def test_two_workers_on_localhost_train_as_one_device_and_only_the_chief_writes(tmp_path, small_npz):
    """Two worker processes with one CPU each against one process without XLA (the workers' CPUs
    cannot compile the replicated step), same seeds and global batch of 20, 10 steps."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    run = tmp_path / "run"
    procs = [launch(small_npz, run, "multiworker", env={"TF_CONFIG": json.dumps(tf_config(workers, i))},
                    extra=NOISY) for i in range(2)]
    outs = [finish(p) for p in procs]
    finish(launch(small_npz, tmp_path / "single", "none", extra=(*NOISY, "--no-xla")))
    assert_as_one_device(run, tmp_path / "single")
    metrics = json.load(open(run / "metrics.json"))
    assert metrics["replicas"] == 2 and np.isfinite(metrics["test_elbo"])
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]               # one writer: not a row per worker
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert sorted(os.listdir(run / "checkpoints")) == ["checkpoint", "ckpt-10.data-00000-of-00001",
                                                       "ckpt-10.index", "ckpt-5.data-00000-of-00001",
                                                       "ckpt-5.index"]
    assert all("XLA is off for this run" in out for out in outs)


def test_multiworker_without_tf_config_fails_with_the_remedy(tmp_path, small_npz):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "tfstructvae.cli", "train", "--data-dir", small_npz,
                             "--output-dir", str(tmp_path / "run"), "--distribute", "multiworker"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "TF_CONFIG environment variable, which is not set" in result.stderr
    assert not (tmp_path / "run").exists()


def replica_batches(npz, distribute, cpus=1, env=None):
    script = os.path.join(os.path.dirname(__file__), "scripts", "global_batches.py")
    return subprocess.Popen([sys.executable, script, npz, distribute, str(cpus)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def batches_of(process):
    out = finish(process)
    return json.loads(out.split("BATCHES ", 1)[1])


def test_replicas_share_each_global_minibatch_as_one_device_sees_it(small_npz):
    """Mirrored (2 logical CPUs) and two workers: replica r gets rows [10 r, 10 r + 10) of each
    minibatch of 20 that a single device gets at that step (from step 3 on: a resumed stream)."""
    single = batches_of(replica_batches(small_npz, "none"))
    assert len(single) == 4 and all(len(step) == 1 and len(step[0][0]) == 20 for step in single)
    glued = [[sum((replica[k] for replica in step), []) for k in range(2)] for step in single]
    mirrored = batches_of(replica_batches(small_npz, "mirrored", cpus=2))
    assert [[sum((r[k] for r in step), []) for k in range(2)] for step in mirrored] == glued
    assert all(len(r[0]) == 10 for step in mirrored for r in step)
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = [replica_batches(small_npz, "multiworker", env={"TF_CONFIG": json.dumps(tf_config(workers, i))})
             for i in range(2)]
    first, second = [batches_of(p) for p in procs]
    assert [[a[0][k] + b[0][k] for k in range(2)] for a, b in zip(first, second)] == glued
    labelled = [y for step in single for y in step[0][0] if y >= 0]
    assert len(labelled) == 16                     # mnist-best: 4 labelled examples in every 20


def test_two_workers_killed_mid_epoch_resume_where_one_device_ends(tmp_path, small_npz):
    """Both workers SIGKILLed after the chief's checkpoint at step >= 6 of 2 x 12; both restarted
    with --resume continue from the chief's checkpoint and end exactly where two workers never
    interrupted end, and as one device does."""
    import signal

    from tfstructvae.checkpointing import latest_step
    longer = ("--steps-per-epoch", "12", "--set", "train.checkpoint_every_steps=2")
    run = tmp_path / "run"
    procs = start_workers(small_npz, run, 6, longer)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=60)
    killed_at = latest_step(str(run / "checkpoints"))
    assert 6 <= killed_at < 24 and not (run / "metrics.json").exists()
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]     # a new cluster, as after a crash
    envs = [{"TF_CONFIG": json.dumps(tf_config(workers, i))} for i in range(2)]
    for p in [launch(small_npz, run, "multiworker", env=env, extra=(*longer, "--resume")) for env in envs]:
        finish(p)
    assert json.load(open(run / "metrics.json"))["resumed_from_step"] == killed_at
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    envs = [{"TF_CONFIG": json.dumps(tf_config(workers, i))} for i in range(2)]
    for p in [launch(small_npz, tmp_path / "whole", "multiworker", env=env, extra=longer) for env in envs]:
        finish(p)
    ours, theirs = weights(run), weights(tmp_path / "whole")          # exactly where it would have ended
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    finish(launch(small_npz, tmp_path / "single", "none", extra=(*longer, "--no-xla")))
    assert_as_one_device(run, tmp_path / "single")


def test_a_worker_that_dies_stops_the_other_with_its_name_and_the_remedy(tmp_path, small_npz):
    import signal
    import time

    run = tmp_path / "run"
    long_run = ("--steps-per-epoch", "5000", "--set", "train.checkpoint_every_steps=5")
    procs = start_workers(small_npz, run, 5, long_run)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    _, err = procs[0].communicate(timeout=300)
    assert procs[0].returncode == 3 and time.time() - killed < 120      # fails within the heartbeat timeout
    assert "/job:worker/replica:0/task:1 stopped" in err and "restart every worker with --resume" in err
    procs[1].wait(timeout=60)
