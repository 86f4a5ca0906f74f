"""Throughput on 1 and 2 workers, and of training from TFRecord shards against memory.

    python benchmarks/scaling.py --data-dir ../shared/data/mnist --out benchmarks/results/scaling.json

1. Workers: `tfstructvae train` of `--preset` for 2 epochs of `--steps` steps, on one process
   and on two processes on 127.0.0.1 under MultiWorkerMirroredStrategy (`--distribute
   multiworker`, TF_CONFIG), one thread each, the same global batch; examples/s from the second
   epoch's `epoch_time_s` (history.csv), and the scaling efficiency
   examples/s(2 workers) / (2 x examples/s(1 worker)). The step runs without XLA in both (several
   replicas on CPU devices cannot compile it), so the two are the same computation.
2. Streaming: the same one-worker training reading the data from TFRecord shards
   (`tfstructvae prepare-data`, 4 shards) instead of memory; and the training pipeline alone
   (minibatches/s, no model) from memory and from shards.
3. Memory: resident memory (and its peak) of a process that builds the training pipeline of MNIST's
   training set repeated 1 and `--copies` (10) times (60,000 and 600,000 images) and draws 300 minibatches from
   it, from memory and from shards. Flat = the 10x figure close to the 1x one.

Run it on a quiet machine: the two workers take both cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def train_throughput(data_dir: str, preset: str, steps: int, workers: int, work: str) -> dict:
    """examples/s of the second of two epochs of `steps` steps, on `workers` processes."""
    run_dir = os.path.join(work, f"run-{workers}w-{os.path.basename(data_dir.rstrip('/'))}")
    cmd = [sys.executable, "-m", "tfstructvae.cli", "train", "--preset", preset, "--data-dir", data_dir,
           "--epochs", "2", "--steps-per-epoch", str(steps), "--validation-size", "0",
           "--set", "train.jit_compile=false", "--verbose", "0", "--overwrite", "--output-dir", run_dir]
    env = {**os.environ, **ONE_THREAD}
    if workers == 1:
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    else:
        hosts = [f"127.0.0.1:{p}" for p in free_ports(workers)]
        procs = [subprocess.Popen(cmd + ["--distribute", "multiworker"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**env, "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                                       "task": {"type": "worker", "index": i}})})
                 for i in range(workers)]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}")
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    seconds = float(rows[-1]["epoch_time_s"])
    batch = cfg["data"]["batch_size"]
    return {"workers": workers, "global_batch": batch, "steps": steps, "epoch_time_s": seconds,
            "examples_per_s": steps * batch / seconds, "ms_per_step": 1000 * seconds / steps}


def pipeline_rate(data, batches: int = 500) -> float:
    """Training minibatches/s of the pipeline alone (mnist-best's share mode, batch 100)."""
    from tfstructvae import get_preset
    from tfstructvae.data import labelled_split, training_pipeline
    from tfstructvae.data.records import take_rows
    cfg = get_preset("mnist-best").data
    split = labelled_split(data.y_train, 10, data.num_classes, 0)
    ds, _ = training_pipeline(take_rows(data.x_train, split.unlabelled), take_rows(data.x_train, split.labelled),
                              data.y_train[split.labelled], cfg)
    it = iter(ds)
    for _ in range(20):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - start)


def memory_probe(kind: str, copies: int, data_dir: str, shards_dir: str) -> dict:
    """In a fresh process: resident memory (MB) after drawing 300 minibatches from `copies` x
    MNIST, and its peak (which TensorFlow's start-up may set on its own)."""
    code = f"""
import resource, numpy as np
from tfstructvae import get_preset
from tfstructvae.data import labelled_split, load_dataset, load_shards, training_pipeline
from tfstructvae.data.records import take_rows
cfg = get_preset("mnist-best").data
if {kind!r} == "shards":
    data = load_shards({shards_dir!r})
    x, y = data.x_train, data.y_train
else:
    data = load_dataset("mnist", {data_dir!r})
    x, y = np.tile(data.x_train, ({copies}, 1, 1, 1)), np.tile(data.y_train, {copies})
    del data
split = labelled_split(y, 10, 10, 0)
ds, _ = training_pipeline(take_rows(x, split.unlabelled), take_rows(x, split.labelled), y[split.labelled], cfg)
for _ in ds.take(300):
    pass
now = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, **ONE_THREAD})
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    now, peak = map(float, out.stdout.strip().splitlines()[-1].split())
    return {"rss_mb": now, "peak_rss_mb": peak}


def write_copies(data, out_dir: str, copies: int) -> str:
    """MNIST's training set `copies` times over as shards, written a batch at a time."""
    from tfstructvae.data import write_shards

    def batches(x, y, times):
        return len(x) * times, ((x[i:i + 10000], y[i:i + 10000]) for _ in range(times) for i in range(0, len(x), 10000))
    return write_shards({"train": batches(data.x_train, data.y_train, copies),
                         "test": batches(data.x_test, data.y_test, 1)}, out_dir, f"mnist_x{copies}", 10,
                        num_shards=4 * copies)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="MNIST's IDX files")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-best")
    p.add_argument("--steps", type=int, default=200, help="steps per epoch of the timed trainings")
    p.add_argument("--copies", type=int, default=10, help="the memory probe's large dataset: MNIST this many times")
    p.add_argument("--work-dir", help="where the runs and shards go (default: a temporary directory)")
    args = p.parse_args(argv)

    from tfstructvae.data import load_dataset, load_shards, write_dataset
    from tfstructvae.rundir import write_json_atomic

    work = args.work_dir or tempfile.mkdtemp(prefix="tfstructvae-scaling-")
    mnist = load_dataset("mnist", args.data_dir)
    shards = write_dataset(mnist, os.path.join(work, "mnist-shards"), num_shards=4)
    result = {"command": " ".join(["python", "benchmarks/scaling.py", *(argv or sys.argv[1:])]),
              "preset": args.preset, "cpu_count": os.cpu_count()}

    def save():
        write_json_atomic(args.out, result)
        print(json.dumps(result, indent=2), flush=True)

    one = train_throughput(args.data_dir, args.preset, args.steps, 1, work)
    two = train_throughput(args.data_dir, args.preset, args.steps, 2, work)
    result["workers"] = {"1": one, "2": two,
                         "scaling_efficiency": two["examples_per_s"] / (2 * one["examples_per_s"])}
    save()
    from_shards = train_throughput(shards, args.preset, args.steps, 1, work)
    result["streaming"] = {
        "train_examples_per_s": {"memory": one["examples_per_s"], "shards": from_shards["examples_per_s"]},
        "pipeline_batches_per_s": {"memory": pipeline_rate(mnist), "shards": pipeline_rate(load_shards(shards))}}
    save()
    big = write_copies(mnist, os.path.join(work, f"mnist-x{args.copies}-shards"), args.copies)
    n, many = str(len(mnist.x_train)), str(args.copies * len(mnist.x_train))
    result["memory_mb"] = {
        "memory": {n: memory_probe("memory", 1, args.data_dir, shards),
                   many: memory_probe("memory", args.copies, args.data_dir, shards)},
        "shards": {n: memory_probe("shards", 1, args.data_dir, shards),
                   many: memory_probe("shards", args.copies, args.data_dir, big)}}
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
