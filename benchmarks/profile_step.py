"""Where a train step's time goes: the TensorFlow profiler's trace, summed per op.

    python benchmarks/profile_step.py --preset mnist-best --estimator enumerate --out benchmarks/results/profile_mnist_best_enumerate.json

Runs the real Keras train function on one fixed minibatch laid out as the preset's pipeline lays
it out (benchmarks/throughput.py), with and without XLA, under `tf.profiler.experimental` for
`--steps` steps after `--warmup`. The trace (an XSpace, also left in `--logdir`/xla and /no_xla for TensorBoard's
profile plugin and its trace viewer) is summed per op: time on the executor threads per op type
(MatMul, BiasAdd, Softplus, ...; with XLA the compiled program's events, which on the CPU cover
only part of it: compare `op_ms_per_step` with the step), the share of the op time each takes, the top ops by name, and the step's wall time. Only events that hold no other
event count (the executor's and XLA's wrappers would count their ops twice). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from throughput import step_seconds  # noqa: E402
from tfstructvae.config import get_preset, parse_overrides  # noqa: E402
from tfstructvae.rundir import write_json_atomic  # noqa: E402

def leaf_events(line):
    """(name id, start ps, duration ps) of the events of a trace line that hold no other event:
    wrappers (the executor's Process, XLA's Execute / BlockUntilReady) would count their ops twice."""
    events = sorted((line.timestamp_ns * 1000 + ev.offset_ps, -ev.duration_ps, ev.metadata_id)
                    for ev in line.events if ev.duration_ps > 0)     # instants (thread-pool marks) hold nothing
    leaves, stack = [], []           # stack: (end, index into leaves or -1)
    for start, neg_duration, meta in events:
        while stack and stack[-1][0] <= start:
            stack.pop()
        if stack and stack[-1][1] >= 0:
            leaves[stack[-1][1]] = None          # it holds this event: not a leaf
        leaves.append((meta, start, -neg_duration))
        stack.append((start - neg_duration, len(leaves) - 1))
    return [leaf for leaf in leaves if leaf is not None]


# a thread waiting for work another thread does (XLA's launch waiting for its compiled program)
WAITS = ("BlockUntilReady", "Await", "Done")


def op_type(name: str) -> str:
    """"dense/MatMul:_MklMatMul" -> "_MklMatMul"; XLA's "MatMul.90" or "select_add_fusion.3" -> without the number."""
    kind = name.rsplit(":", 1)[-1]
    stem, _, number = kind.rpartition(".")
    return stem if stem and number.isdigit() else kind


def op_times(xspace_path: str) -> tuple[collections.Counter, collections.Counter]:
    """Seconds per op type and per op name on the host's threads (Python's own line left out)."""
    xs = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        xs.ParseFromString(f.read())
    by_type, by_name = collections.Counter(), collections.Counter()
    for plane in xs.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            for meta, _, duration in leaf_events(line):
                name = plane.event_metadata[meta].name
                if op_type(name) in WAITS:
                    continue
                by_type[op_type(name)] += duration / 1e12
                by_name[name] += duration / 1e12
    return by_type, by_name


def profile(cfg, batch: int, steps: int, warmup: int, logdir: str) -> dict:
    seconds, model = step_seconds(cfg, batch, steps, warmup)     # compiles, warms up, and times the step
    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=2, python_tracer_level=0,
                                                       device_tracer_level=1)
    before = set(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    tf.profiler.experimental.start(logdir, options=options)
    start = time.perf_counter()
    for _ in range(steps):                        # calls; each runs model.steps_per_execution steps
        model.timed_step()
    elapsed = time.perf_counter() - start
    tf.profiler.experimental.stop()
    ran = steps * model.steps_per_execution       # the steps the profile holds
    wall = elapsed / ran
    (path,) = set(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))) - before
    by_type, by_name = op_times(path)
    total = sum(by_type.values())
    return {"xla": bool(cfg.train.jit_compile), "step_ms_timed": 1e3 * seconds, "step_ms_profiled": 1e3 * wall,
            "op_ms_per_step": 1e3 * total / ran, "trace": path,
            "by_type": [{"op": k, "ms_per_step": 1e3 * v / ran, "share": v / total}
                        for k, v in by_type.most_common(25)],
            "by_name": [{"op": k, "ms_per_step": 1e3 * v / ran, "share": v / total}
                        for k, v in by_name.most_common(25)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-best")
    p.add_argument("--estimator", default="enumerate")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--logdir", help="where the traces go (default: a temporary directory)")
    args = p.parse_args(argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="tfstructvae-profile-")
    runs = []
    for xla in (True, False):
        cfg = get_preset(args.preset).override(**{
            **parse_overrides(args.set), "objective.estimator": args.estimator, "train.jit_compile": xla,
            "data.batch_size": args.batch_size})
        # one directory a run: the profiler names its trace after the second it stops, so two runs
        # stopping within one second would write the same file
        row = profile(cfg, args.batch_size, args.steps, args.warmup, os.path.join(logdir, "xla" if xla else "no_xla"))
        runs.append(row)
        print(f"xla={xla!s:5s} step {row['step_ms_timed']:.1f} ms (profiled {row['step_ms_profiled']:.1f}), "
              f"op time {row['op_ms_per_step']:.1f} ms:", flush=True)
        for r in row["by_type"][:10]:
            print(f"    {r['op']:40s} {r['ms_per_step']:7.2f} ms  {100 * r['share']:5.1f}%")
    write_json_atomic(args.out, {"preset": args.preset, "estimator": args.estimator, "batch_size": args.batch_size,
                                 "logdir": logdir, "runs": runs,
                                 "command": " ".join(["python", "benchmarks/profile_step.py",
                                                      *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
