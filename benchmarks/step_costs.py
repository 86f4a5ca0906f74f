"""Where a train step's time goes, by taking parts away: the step as configured against the same
step with ReLU in place of softplus activations, with plain SGD in place of Adam, and against its
matrix products alone, run side by side (throughput.py's roofline: XLA may run independent
products at once) and one after another (each product's input waits for the previous result, as
the step's chain of layers does; this adds one elementwise pass over each operand).

    python benchmarks/step_costs.py --set 'model.hidden_units=[500]' --set model.style_dim=50 \\
        --set model.activation=softplus --set objective.consistency_weight=0 \\
        --set objective.entropy_weight=0 --out benchmarks/results/step_costs_pyro_shapes.json

Every variant is built and compiled first, then all are timed in `--rounds` rounds in turn (the
machine's speed drifts over minutes), `--steps` steps a round; medians count. The XLA profiler
does not attribute the compiled step's time per operation on the CPU (profile_step.py), so
differences between whole steps are what can be measured. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from machine import describe  # noqa: E402
from throughput import roofline_call, step_seconds, step_shapes, time_calls  # noqa: E402
from tfstructvae.config import get_preset, parse_overrides  # noqa: E402
from tfstructvae.rundir import write_json_atomic  # noqa: E402


def chained_roofline_call(shapes):
    """The products of `shapes` (forward, dL/dX, dL/dW each) one after another under XLA: each
    product's first operand adds 0 x the running total, so none can start before the last ends."""
    rng = np.random.default_rng(0)
    mats = [(tf.constant(rng.standard_normal((m, i)), tf.float32),
             tf.constant(rng.standard_normal((i, o)), tf.float32),
             tf.constant(rng.standard_normal((m, o)), tf.float32)) for m, i, o in shapes]

    @tf.function(jit_compile=True)
    def products():
        total = tf.constant(0.0)
        for x, w, dy in mats:
            total += tf.reduce_sum((x + 0.0 * total) @ w)
            total += tf.reduce_sum(tf.matmul(dy + 0.0 * total, w, transpose_b=True))
            total += tf.reduce_sum(tf.matmul(x + 0.0 * total, dy, transpose_a=True))
        return total

    return lambda: products().numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-paper")
    p.add_argument("--estimator", default="enumerate")
    p.add_argument("--kind", choices=("unlabelled", "labelled", "preset"), default="unlabelled",
                   help="the minibatch: unlabelled or labelled throughout, or laid out as the preset's pipeline")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--no-xla", action="store_true", help="the step without XLA (the products stay compiled)")
    p.add_argument("--steps", type=int, default=15, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(argv)
    base = get_preset(args.preset).override(**{
        **parse_overrides(args.set), "objective.estimator": args.estimator,
        "train.jit_compile": not args.no_xla, "data.batch_size": args.batch_size})
    variants = {}          # name: (calls, warmup) -> seconds a step

    def add(name, cfg, **kw):
        _, model = step_seconds(cfg, args.batch_size, 1, 3, kind=args.kind, **kw)
        variants[name] = model.seconds_per_step
        return model

    model = add("as configured", base)
    if base.model.activation != "relu":
        add("ReLU activations", base.override(**{"model.activation": "relu"}))
    add("SGD in place of Adam", base, optimizer=keras.optimizers.SGD(base.train.learning_rate))
    # a minibatch labelled throughout is fed its labels once: plug-in's shapes (compare_peers.py)
    shapes = step_shapes(model, args.batch_size, args.estimator if args.kind != "labelled" else "plugin")
    variants["products alone, side by side (the roofline)"] = functools.partial(time_calls, roofline_call(shapes))
    variants["products alone, one after another"] = functools.partial(time_calls, chained_roofline_call(shapes))
    rounds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            rounds[name].append(fn(args.steps, 2))
    rows = []
    step = statistics.median(rounds["as configured"])
    for name, times in rounds.items():
        ms = 1e3 * statistics.median(times)
        rows.append({"variant": name, "ms": ms, "against_the_step": ms / (1e3 * step),
                     "rounds_ms": [1e3 * t for t in times]})
        print(f"{name:48s} {ms:7.2f} ms  ({ms / (1e3 * step):.2f} of the step)", flush=True)
    write_json_atomic(args.out, {
        "preset": args.preset, "estimator": args.estimator, "kind": args.kind, "xla": not args.no_xla,
        "batch_size": args.batch_size, "overrides": args.set, "rows": rows,
        "matmul_gflop_per_step": 6 * sum(m * i * o for m, i, o in shapes) / 1e9,
        "machine": describe(),
        "command": " ".join(["python", "benchmarks/step_costs.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
