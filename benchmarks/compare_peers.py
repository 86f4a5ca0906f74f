"""tfstructvae against Pyro's semi-supervised VAE, the same model at the same sizes, side by side.

    pip install -e '.[peers]'
    python benchmarks/compare_peers.py --data-dir ../shared/data/mnist --out benchmarks/results/peers.json

The model both sides train (Pyro's example, examples/vae/ss_vae_M2.py): one hidden layer of 500
softplus units per network, a 50-d style, minibatches of 100, y summed out exactly on unlabelled
minibatches, the classifier term alpha log q(y|x) (alpha = 46, the example's) on labelled ones,
no other term. Here: `mnist-paper` with `model.hidden_units=[500]`, `model.style_dim=50`,
`model.activation=softplus`, `objective.alpha=46`; Pyro: benchmarks/peers/pyro_ssvae.py.

1. Step throughput on one fixed unlabelled and one fixed labelled minibatch: Pyro's parallel
   enumeration; the package's enumeration and plug-in, with and without XLA (`--estimators`,
   `--xla` time fewer of them).
2. The matrix-product work of each step (`matmul_work`): GFLOP per step from the shapes each side
   runs, the rate each side runs them at, the machine's best rate (an n x n x n product on each
   side), and the ceiling: the package's ratio to Pyro if its products ran at that best rate with
   nothing else costing time; and a second ceiling, the ratio if the step took only the time its
   own products take at their shapes (throughput.py's roofline, timed here). A target above the
   first ceiling cannot be met by running faster, only by doing less work; one above the second
   cannot be met without products faster than this machine's float32 ones at these shapes.
3. With `--seconds S`: each side trains on real MNIST with 10 labels per class (a labelled
   minibatch with probability 0.1) for S seconds of wall time; the test error of q(y|x) after it.

Each side runs in its own process, one after the other, on `--threads` threads (TensorFlow's
intra-op pool, torch.set_num_threads): never both at once, and nothing else on the machine. The
timings run `--rounds` times (3), the sides alternating, and each figure is the median of its
rounds: one process's figures can differ from the next one's by a third on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = {"model.hidden_units": (500,), "model.style_dim": 50, "model.activation": "softplus",
         "objective.alpha": 46.0, "objective.consistency_weight": 0.0, "objective.entropy_weight": 0.0,
         "data.batch_size": 100, "data.supervision_mode": "rate", "data.supervision_rate": 0.1}


def package_side(args) -> dict:
    """This process, as the package's side: the step timings, then the timed training."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    from throughput import dense_shapes, roofline_call, step_seconds, time_calls
    from tfstructvae import get_preset
    from tfstructvae.callbacks import FasterStep
    from tfstructvae.train import evaluate_model, prepare_training

    base = get_preset("mnist-paper").override(**MODEL, **{"train.steps_per_execution": args.steps_per_execution})
    timing = {}
    for estimator in args.estimators.split(","):
        for xla in {"both": (True, False), "on": (True,), "off": (False,)}[args.xla]:
            for kind in ("unlabelled", "labelled"):
                cfg = base.override(**{"objective.estimator": estimator, "train.jit_compile": xla})
                seconds, model = step_seconds(cfg, 100, args.steps, args.warmup, kind=kind)
                # a labelled minibatch is fed its labels once (`set_labelled_batches`): plug-in's shapes
                shapes = dense_shapes(model, 100, estimator if kind == "unlabelled" else "plugin")
                # the same products alone, XLA-compiled, as throughput.py's roofline times them
                roofline = time_calls(roofline_call(shapes), args.steps, args.warmup)
                timing[f"{estimator}{'' if xla else '_no_xla'}/{kind}"] = {
                    "step_ms": 1e3 * seconds, "examples_per_sec": 100 / seconds,
                    "roofline_ms": 1e3 * roofline, "matmul_shapes": [list(s) for s in shapes]}
                print(f"package {estimator:9s} xla={xla!s:5s} {kind:10s} {100 / seconds:8.0f} ex/s", flush=True)
    result = {"peer": "tfstructvae", "threads": args.threads, "timing": timing, "peak_gflops": peak_gflops(),
              "steps_per_execution": args.steps_per_execution}
    if args.seconds:
        # `--xla on` / `off` fix the training's step too; `both` leaves train.jit_compile as the preset has it
        fixed = {"on": {"train.jit_compile": True}, "off": {"train.jit_compile": False}}.get(args.xla, {})
        cfg = base.override(**{"objective.estimator": "enumerate", "data.data_dir": args.data_dir,
                               "data.validation_size": 0, "train.epochs": 1000, **fixed})
        run = prepare_training(cfg)

        class Budget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start, self.steps = time.perf_counter(), 0

            def on_train_batch_end(self, batch, logs=None):
                self.steps += self.model.steps_per_execution
                if time.perf_counter() - self.start >= args.seconds:
                    self.model.stop_training = True

        budget = Budget()
        # As `tfstructvae train` does with its default `train.jit_compile="auto"`: the first steps
        # time the step with XLA and without, the rest of the budget runs the faster one.
        chooser = FasterStep(log=lambda message: None) if run.model.jit_compile else None
        run.model.fit(run.pipeline(), epochs=cfg.train.epochs, steps_per_epoch=run.steps,
                      callbacks=[*([chooser] if chooser else []), budget], verbose=0, shuffle=False)
        trained = time.perf_counter() - budget.start
        metrics = evaluate_model(run.model, run.data, run.cfg)
        result["accuracy"] = {"train_seconds": trained, "steps": budget.steps, "test_error": metrics["test_error"],
                              "labels_per_class": cfg.data.labels_per_class, "supervision_rate": 0.1,
                              "estimator": "enumerate", "xla": bool(run.model.jit_compile),
                              "step_ms_xla_and_not": {str(k): v for k, v in (chooser.step_ms if chooser else {}).items()}}
    return result


def peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """TensorFlow's best float32 matrix-product rate here, with XLA or without (oneDNN): an
    n x n x n product, median of `repeats`."""
    import tensorflow as tf
    from throughput import time_calls
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    best = 0.0
    for xla in (True, False):
        product = tf.function(lambda: tf.reduce_sum(a @ b), jit_compile=xla)
        best = max(best, 2 * n ** 3 / time_calls(lambda: product().numpy(), repeats, 3) / 1e9)
    return best


def training_gflop(shapes) -> float:
    """A step's matrix-product work: per (rows, d_in, d_out) the forward X W and the backward
    dY W^T and X^T dY (as throughput.py's roofline counts them), 2 flops a multiply-add."""
    return sum(6 * m * i * o for m, i, o in shapes) / 1e9


def matmul_work(package: dict, pyro: dict) -> dict:
    """Each step's matrix-product work, the rate each side runs it at, and the ceiling: the
    package's ratio to Pyro if its products ran at the machine's best rate (the larger of the two
    sides' n x n x n figures) and nothing else cost time."""
    peak = max(package["peak_gflops"], pyro["peak_gflops"])
    out = {"peak_gflops": peak, "pyro": {}, "package": {}, "ceiling_ratio_at_peak": {}, "ceiling_ratio_at_roofline": {}}
    for kind, row in pyro["timing"].items():
        work = training_gflop(row["matmul_shapes"])
        out["pyro"][kind] = {"gflop_per_step": work, "gflops": work / (row["step_ms"] / 1e3)}
    for key, row in package["timing"].items():
        kind = key.split("/")[1]
        work = training_gflop(row["matmul_shapes"])
        out["package"][key] = {"gflop_per_step": work, "gflops": work / (row["step_ms"] / 1e3),
                               "work_against_pyro": work / out["pyro"][kind]["gflop_per_step"]}
        out["ceiling_ratio_at_peak"][f"{key} / pyro"] = (pyro["timing"][kind]["step_ms"] / 1e3) / (work / peak)
        if "roofline_ms" in row:
            out["ceiling_ratio_at_roofline"][f"{key} / pyro"] = pyro["timing"][kind]["step_ms"] / row["roofline_ms"]
    return out


def median_rounds(results: list[dict]) -> dict:
    """One side's rounds as one result: the first round's (which holds the timed training), with
    each step time and the best matrix-product rate the median over the rounds, and the rounds'
    own step times kept (`rounds_step_ms`). One process's timing can differ by a third from the
    next on a shared machine; alternating the sides and taking medians keeps a slow spell on one
    side out of the ratio."""
    merged = copy.deepcopy(results[0])
    for key, row in merged["timing"].items():
        times = [r["timing"][key]["step_ms"] for r in results]
        row["rounds_step_ms"] = times
        row["step_ms"] = statistics.median(times)
        if "roofline_ms" in row:
            row["roofline_ms"] = statistics.median(r["timing"][key]["roofline_ms"] for r in results)
        row["examples_per_sec"] = row["examples_per_sec"] * results[0]["timing"][key]["step_ms"] / row["step_ms"]
    merged["peak_gflops"] = statistics.median(r["peak_gflops"] for r in results)
    merged["rounds"] = len(results)
    return merged


def ratios(package: dict, pyro: dict) -> dict:
    out = {}
    for key, row in package["timing"].items():
        kind = key.split("/")[1]
        out[f"{key} / pyro"] = row["examples_per_sec"] / pyro["timing"][kind]["examples_per_sec"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", help="real MNIST, for --seconds")
    p.add_argument("--seconds", type=float, help="train each side this long on real MNIST, then test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--estimators", default="enumerate,plugin",
                   help="the package's estimators to time, comma-separated (default: enumerate,plugin)")
    p.add_argument("--xla", choices=("both", "on", "off"), default="both",
                   help="time the package's step with XLA, without, or both (default; the --seconds training "
                        "then chooses as `tfstructvae train` does); on / off also fix the training's step")
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="the package's train.steps_per_execution: steps per call of its compiled step (default 1)")
    p.add_argument("--rounds", type=int, default=3,
                   help="time each side this many times, one process at a time, alternating; the medians count")
    p.add_argument("--side", choices=("both", "package"), default="both", help=argparse.SUPPRESS)
    p.add_argument("--side-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds and not args.data_dir:
        p.error("--seconds needs --data-dir (real MNIST)")
    unknown = set(args.estimators.split(",")) - {"enumerate", "plugin"}
    if unknown:
        p.error(f"--estimators: unknown {sorted(unknown)}; expected enumerate and/or plugin")

    if args.side == "package":
        sys.path.insert(0, HERE)
        with open(args.side_out, "w") as f:
            json.dump(package_side(args), f)
        return 0

    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(args.threads), "TF_NUM_INTEROP_THREADS": "1"}
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        rounds = {"pyro": [], "package": []}
        for r in range(args.rounds):
            # the timed training (--seconds) runs in the first round only
            flags = common + (["--seconds", str(args.seconds), "--data-dir", args.data_dir] if args.seconds and r == 0
                              else [])
            for side, cmd in (
                    ("pyro", [sys.executable, os.path.join(HERE, "peers", "pyro_ssvae.py"), "--out",
                              os.path.join(tmp, "pyro.json"), *flags]),
                    ("package", [sys.executable, os.path.abspath(__file__), "--side", "package", "--side-out",
                                 os.path.join(tmp, "package.json"), "--out", args.out, *flags,
                                 "--estimators", args.estimators, "--xla", args.xla,
                                 "--steps-per-execution", str(args.steps_per_execution)])):
                began = time.perf_counter()
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
                if done.returncode:
                    raise SystemExit(f"{side} side failed:\n{done.stderr[-3000:]}")
                rounds[side].append(json.load(open(os.path.join(tmp, f"{side}.json"))))
                print(f"round {r + 1} of {args.rounds}, {side}: done in {time.perf_counter() - began:.0f} s", flush=True)
        sides = {side: median_rounds(results) for side, results in rounds.items()}
    result = {"command": " ".join(["python", "benchmarks/compare_peers.py", *(argv or sys.argv[1:])]),
              "model": {k: list(v) if isinstance(v, tuple) else v for k, v in MODEL.items()},
              "pyro": sides["pyro"], "package": sides["package"],
              "ratios_examples_per_sec": ratios(sides["package"], sides["pyro"]),
              "matmul_work": matmul_work(sides["package"], sides["pyro"])}
    from machine import describe
    from tfstructvae.rundir import write_json_atomic
    result["machine"] = describe()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, result)
    work = result["matmul_work"]
    print(f"{'':38s} {'ratio':>6s} {'at peak':>8s} {'GFLOP/step':>10s} {'GFLOP/s':>8s}")
    for kind, row in work["pyro"].items():
        print(f"{'pyro/' + kind:38s} {'':6s} {'':8s} {row['gflop_per_step']:10.3f} {row['gflops']:8.1f}")
    for name, value in result["ratios_examples_per_sec"].items():
        row = work["package"][name.split(" / ")[0]]
        print(f"{name:38s} x{value:5.2f} x{work['ceiling_ratio_at_peak'][name]:7.2f} "
              f"{row['gflop_per_step']:10.3f} {row['gflops']:8.1f}")
    print(f"machine's best matrix-product rate: {work['peak_gflops']:.1f} GFLOP/s")
    if args.seconds:
        print(f"test error after {args.seconds:.0f} s: package {sides['package']['accuracy']['test_error']:.4f}, "
              f"pyro {sides['pyro']['accuracy']['test_error']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
