"""Training throughput per estimator, with and without XLA, against a matmul roofline.

`--growth --png FILE.png` adds growth curves: examples/s against the class count K and against
the batch size, for plug-in, enumeration and relaxed, and how many times each step was traced.

For each (estimator, xla) the real Keras train function runs on one fixed MNIST-shaped
batch (input pipeline excluded); examples/s = batch / median step time. In the same run
the bare dense matrix products that the step's networks need are timed: for every dense
layer with M rows, d_in inputs and d_out outputs, the forward X W, and the backward
dY W^T and X^T dY, at the same shapes and batch, compiled with XLA. Their time bounds
the step from below, and `roofline_fraction` = step examples/s / roofline examples/s. Every
configuration's step and roofline are timed `--rounds` times (3), all configurations in turn, and
the medians count (each round's figures are kept): the machine's speed drifts over minutes.

    python benchmarks/throughput.py --out benchmarks/results/throughput.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfstructvae.config import get_preset, parse_overrides  # noqa: E402
from tfstructvae.rundir import write_json_atomic  # noqa: E402
from machine import describe  # noqa: E402
from tfstructvae.train import build_model, compile_model  # noqa: E402


def dense_shapes(model, batch: int, estimator: str) -> list[tuple[int, int, int]]:
    """(rows, d_in, d_out) of every matrix product in one forward pass of the step.

    Under `enumerate`, layers after the class node run on E*B rows (E = K, or
    objective.enumeration_top_k), except the class's own input projection (K rows, one per
    class broadcast over the batch; E*B with top_k, whose classes differ per example) and the x
    projection (B rows); see networks.py. The consistency, augmentation, MixUp and
    shifted-label terms add VAT's probe and one pass of q(y|x) on their rows stacked.
    """
    K = model.num_classes
    label = model.label_node.name
    top_k = getattr(model.estimators.get(label), "top_k", None) if estimator == "enumerate" else None
    E = top_k or K
    class_rows = E * batch if top_k else K
    shapes = []
    for node, net in zip(model.latent_graph, model.q_nets):
        enumerated = estimator == "enumerate" and node.name != label and label in node.parents
        inputs = ["x", *node.parents]
        for name, proj in zip(inputs, net.input_projections):
            rows = batch if (name == "x" or not enumerated) else (class_rows if name == label else E * batch)
            shapes.append((rows, *proj.kernel.shape))
        rows = E * batch if enumerated else batch
        shapes += [(rows, *d.kernel.shape) for d in net.hidden] + [(rows, *net.head.kernel.shape)]
    enumerated = estimator == "enumerate"
    for node, proj in zip(model.latent_graph.decoded_nodes, model.p_net.input_projections):
        rows = (class_rows if node.name == label else E * batch) if enumerated else batch
        shapes.append((rows, *proj.kernel.shape))
    rows = E * batch if enumerated else batch
    shapes += [(rows, *d.kernel.shape) for d in model.p_net.hidden] + [(rows, *model.p_net.head.kernel.shape)]
    cfg = model.objective_config
    net = model.q_nets[model.node_index[label]]

    def classifier_pass(rows):
        return ([(rows, *net.input_projections[0].kernel.shape)]
                + [(rows, *d.kernel.shape) for d in net.hidden] + [(rows, *net.head.kernel.shape)])
    if cfg.consistency_weight:        # VAT's probe of the adversarial direction
        shapes += classifier_pass(batch)
    # one call of q(y|x) on the minibatches it is asked about, stacked (StructuredVAE.q_from_x_parts):
    # the adversarial images, the shifted copies, the MixUp images, the labels' shifted copies
    label_rows = model.label_rows if 0 < model.label_rows < batch else batch
    stacked = batch * (bool(cfg.consistency_weight) + bool(cfg.augment_weight) + bool(cfg.mixup_weight)) \
        + label_rows * bool(cfg.augment_labelled)
    if stacked:
        shapes += classifier_pass(stacked)
    return shapes


def time_calls(fn, steps: int, warmup: int) -> float:
    """Median seconds per call of fn() over `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def roofline_call(shapes):
    """A function that runs the step's matrix products alone (forward, dL/dX, dL/dW of each shape)
    under XLA and waits for them."""
    rng = np.random.default_rng(0)
    mats = [(tf.constant(rng.standard_normal((m, i)), tf.float32),
             tf.constant(rng.standard_normal((i, o)), tf.float32),
             tf.constant(rng.standard_normal((m, o)), tf.float32)) for m, i, o in shapes]

    @tf.function(jit_compile=True)
    def products():
        total = 0.0
        for x, w, dy in mats:
            total += tf.reduce_sum(x @ w)                          # forward
            total += tf.reduce_sum(tf.matmul(dy, w, transpose_b=True))   # dL/dX
            total += tf.reduce_sum(tf.matmul(x, dy, transpose_a=True))   # dL/dW
        return total

    return lambda: products().numpy()


def labelled_rows(cfg, batch: int) -> int:
    """The labelled examples at the end of a `share`-mode minibatch (as the pipeline draws them)."""
    return round(cfg.data.labelled_share * batch) if cfg.data.supervision_mode == "share" else 0


def step_shapes(model, batch: int, estimator: str) -> list[tuple[int, int, int]]:
    """dense_shapes for the step as it runs: a labelled tail (`set_labelled_tail`) is a second
    pass of its own rows with the class fed once, like plug-in's single pass."""
    tail = model.labelled_tail
    if not tail:
        return dense_shapes(model, batch, estimator)
    return dense_shapes(model, batch - tail, estimator) + dense_shapes(model, tail, "plugin")


def step_seconds(cfg, batch, steps, warmup, labelled_tail: str = "auto", kind: str = "preset",
                 optimizer=None) -> tuple[float, object]:
    """One fixed minibatch laid out as the preset's pipeline lays it out: in `share` mode the last
    round(share * B) examples labelled, declared to the model as a labelled tail as training does
    (`auto`: when they are the whole minibatch), `always` or `never`; in `rate` mode about a tenth
    of the examples labelled at random places. `kind`: "unlabelled" or "labelled" for a minibatch
    that is all one (in `rate` mode the step tells them apart, as in training; else a labelled
    one is declared as the labelled tail, as training does when every minibatch is labelled).
    `optimizer`: a Keras optimizer in place of the package's Adam (benchmarks/step_costs.py)."""
    model = compile_model(build_model(cfg, (28, 28, 1)), cfg, steps_per_epoch=1000)
    if optimizer is not None:
        model.compile(optimizer=optimizer, jit_compile=model.jit_compile)
        model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(batch, 28, 28, 1)), tf.float32)
    tail = labelled_rows(cfg, batch)
    if cfg.data.supervision_mode == "rate" and 0 < cfg.data.supervision_rate < 1:
        model.set_labelled_batches((model.label_node.name,))      # as training declares it
    if kind in ("unlabelled", "labelled"):
        y = np.full(batch, -1) if kind == "unlabelled" else rng.integers(0, 10, batch)
        if kind == "labelled" and not model.labelled_batch_nodes:
            model.set_labelled_tail(batch, (model.label_node.name,))
    elif tail:
        y = np.concatenate([np.full(batch - tail, -1), rng.integers(0, 10, tail)])
        model.set_label_rows(tail if tail < batch else 0)             # as training declares it
        if labelled_tail == "always" or (labelled_tail == "auto" and tail == batch):
            model.set_labelled_tail(tail, (model.label_node.name,))
    else:
        y = np.where(rng.uniform(size=batch) < 0.1, rng.integers(0, 10, batch), -1)
    y = tf.constant(y, tf.int32)
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    model.traces, step = 0, model.train_step

    def counted_step(data):        # the Python step runs once per trace of the compiled function
        model.traces += 1
        return step(data)
    model.train_step = counted_step
    model.make_train_function()
    train = model.train_function

    def one_step():
        out = train(iterator)
        # force completion: read one scalar back
        (out.get_value() if hasattr(out, "get_value") else out)["loss"].numpy()

    # for benchmarks that run the same step again: `timed_step` is one call, which runs
    # `model.steps_per_execution` steps (train.steps_per_execution, 1 unless set);
    # `seconds_per_step(calls, warmup)` times calls and gives seconds per step
    model.timed_step = one_step
    model.seconds_per_step = lambda calls, warmup: time_calls(one_step, calls, warmup) / model.steps_per_execution
    return model.seconds_per_step(steps, warmup), model


def growth(args) -> list[dict]:
    """examples/s against the class count K (at --batch-size) and against the batch size (at K = 10),
    per estimator, XLA as --growth-xla; and how many times each step was traced."""
    rows = []
    sweeps = [("classes", k, args.batch_size) for k in args.classes] + \
             [("batch_size", 10, b) for b in args.batch_sizes]
    for label, estimator, top_k in growth_lines(args.top_k):
        for sweep, k, batch in sweeps:
            cfg = get_preset(args.preset).override(**{
                **parse_overrides(args.set), "objective.estimator": estimator, "model.num_classes": k,
                "objective.enumeration_top_k": top_k, "train.jit_compile": args.growth_xla,
                "data.batch_size": batch})
            seconds, model = step_seconds(cfg, batch, args.steps, args.warmup, args.labelled_tail)
            rows.append({"sweep": sweep, "estimator": label, "top_k": top_k, "classes": k, "batch_size": batch,
                         "xla": args.growth_xla, "step_ms": 1e3 * seconds, "examples_per_sec": batch / seconds,
                         "traces": model.traces})
            print(f"growth {label:15s} K={k:4d} B={batch:5d} {batch / seconds:9.0f} ex/s "
                  f"(traced {model.traces}x)", flush=True)
    return rows


def estimator_and_top_k(label: str) -> tuple[str, int]:
    """'enumerate-top2' -> ('enumerate', 2): enumeration of each example's 2 likeliest classes
    (objective.enumeration_top_k); any other name -> (name, 0)."""
    name, _, k = label.partition("-top")
    if k and not (name == "enumerate" and k.isdigit() and int(k) > 0):
        raise SystemExit(f"--estimators: {label!r} is not an estimator; write enumerate-topK for top-k enumeration")
    return name, int(k or 0)


def growth_lines(top_k: int) -> list[tuple[str, str, int]]:
    """(label, estimator, objective.enumeration_top_k) of every growth curve: the three estimators,
    and enumeration of each example's top_k classes (its decoder rows stay k x B at any K)."""
    lines = [("plugin", "plugin", 0), ("enumerate", "enumerate", 0), ("relaxed", "relaxed", 0)]
    return lines + ([(f"enumerate-top{top_k}", "enumerate", top_k)] if top_k else [])


def plot_growth(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, sweep, label in ((axes[0], "classes", "classes K"), (axes[1], "batch_size", "batch size")):
        for estimator in dict.fromkeys(r["estimator"] for r in rows):
            points = [(r[sweep], r["examples_per_sec"]) for r in rows
                      if r["sweep"] == sweep and r["estimator"] == estimator]
            ax.plot(*zip(*points), marker="o", label=estimator)
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="examples/s (train step)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title(f"batch {rows[0]['batch_size']}")
    axes[1].set_title("K = 10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--preset", default="mnist-paper")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--estimators", default="plugin,enumerate,relaxed",
                   help="comma-separated; enumerate-topK enumerates each example's K likeliest classes")
    p.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3,
                   help="time every configuration (and its roofline) this many times in turn; medians count")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override the preset, e.g. data.labelled_share=1.0")
    p.add_argument("--labelled-tail", choices=("auto", "always", "never"), default="auto",
                   help="share mode: compute the labelled examples apart, as training does (auto: when "
                        "the whole minibatch is labelled), always, or never")
    p.add_argument("--growth", action="store_true",
                   help="also sweep the class count and the batch size for every estimator (growth curves)")
    p.add_argument("--classes", type=lambda v: [int(k) for k in v.split(",")], default=[10, 50, 100, 500])
    p.add_argument("--batch-sizes", type=lambda v: [int(b) for b in v.split(",")],
                   default=[32, 64, 128, 256, 512, 1024])
    p.add_argument("--growth-xla", action="store_true", help="the growth sweeps with XLA (default: without)")
    p.add_argument("--top-k", type=int, default=2,
                   help="with --growth: also enumeration of each example's top k classes "
                        "(objective.enumeration_top_k); 0 leaves that curve out")
    p.add_argument("--png", help="with --growth: the growth curves as a PNG")
    args = p.parse_args(argv)

    built = []
    for estimator in args.estimators.split(","):
        name, top_k = estimator_and_top_k(estimator)
        for xla in (True, False):
            cfg = get_preset(args.preset).override(**{
                **parse_overrides(args.set), "objective.estimator": name,
                **({"objective.enumeration_top_k": top_k} if top_k else {}),
                "train.jit_compile": xla, "data.batch_size": args.batch_size})
            seconds, model = step_seconds(cfg, args.batch_size, args.steps, args.warmup, args.labelled_tail)
            shapes = step_shapes(model, args.batch_size, name)
            roof = roofline_call(shapes)
            built.append({"estimator": estimator, "xla": xla, "model": model, "shapes": shapes, "roof": roof,
                          "step_rounds": [seconds], "roof_rounds": [time_calls(roof, args.steps, args.warmup)]})
    # Further rounds over every configuration in turn: the machine's speed drifts over minutes, and
    # a step and its roofline timed side by side in each round keep the drift out of their ratio.
    for _ in range(args.rounds - 1):
        for b in built:
            b["step_rounds"].append(b["model"].seconds_per_step(args.steps, 2))
            b["roof_rounds"].append(time_calls(b["roof"], args.steps, 2))
    results = []
    for b in built:
        estimator, xla, model, shapes = b["estimator"], b["xla"], b["model"], b["shapes"]
        seconds, roof = statistics.median(b["step_rounds"]), statistics.median(b["roof_rounds"])
        flops = 3 * sum(2 * m * i * o for m, i, o in shapes)
        row = {
            "preset": args.preset, "estimator": estimator, "xla": xla, "batch_size": args.batch_size,
            "labelled_tail": model.labelled_tail,
            "step_ms": 1e3 * seconds, "examples_per_sec": args.batch_size / seconds,
            "roofline_ms": 1e3 * roof, "roofline_examples_per_sec": args.batch_size / roof,
            "roofline_fraction": roof / seconds, "traces": model.traces,
            "matmul_gflop_per_step": flops / 1e9, "achieved_gflops": flops / seconds / 1e9,
            "step_ms_rounds": [1e3 * t for t in b["step_rounds"]],
            "roofline_ms_rounds": [1e3 * t for t in b["roof_rounds"]],
        }
        results.append(row)
        print(f"{estimator:10s} xla={str(xla):5s} {row['examples_per_sec']:9.0f} ex/s  "
              f"step {row['step_ms']:6.2f} ms  roofline {row['roofline_ms']:6.2f} ms  "
              f"fraction {row['roofline_fraction']:.2f}  ({row['achieved_gflops']:.1f} GFLOP/s)",
              flush=True)
    by = {(r["estimator"], r["xla"]): r for r in results}
    summary = {}
    if ("plugin", True) in by and ("enumerate", True) in by:
        plug, enum = by[("plugin", True)], by[("enumerate", True)]
        summary = {
            "enumerate_over_plugin_time": enum["step_ms"] / plug["step_ms"],
            "enumerate_over_plugin_matmul_flops": enum["matmul_gflop_per_step"] / plug["matmul_gflop_per_step"],
            # the prediction from the extra decoder work, at this machine's matmul speed per shape
            "enumerate_over_plugin_roofline_time": enum["roofline_ms"] / plug["roofline_ms"],
        }
        print(f"enumerate / plugin: step time x{summary['enumerate_over_plugin_time']:.2f}; predicted by the "
              f"extra matmul work: x{summary['enumerate_over_plugin_roofline_time']:.2f} in roofline time, "
              f"x{summary['enumerate_over_plugin_matmul_flops']:.2f} in FLOPs")
    out = {"results": results, "summary": summary}
    if args.growth:
        out["growth"] = growth(args)
        if args.png:
            plot_growth(out["growth"], args.png)
    out |= {"machine": describe(),
            "command": " ".join(["python", "benchmarks/throughput.py", *(argv or sys.argv[1:])])}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
