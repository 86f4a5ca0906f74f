"""The whole `fit` against the step alone: what the input pipeline and the callbacks cost.

    python benchmarks/fit_throughput.py --data-dir ../shared/data/mnist --out benchmarks/results/fit_throughput.json

For each estimator and XLA setting, a short run of the preset goes through `train_and_evaluate`
exactly as `tfstructvae train` runs it (the labelled/unlabelled mix from the in-memory pipeline,
shuffling, metrics, the progress bar silenced, history.csv, TensorBoard with its per-epoch images,
checkpoints, the per-epoch validation pass), with a callback that notes the time at the start of
every step. Reported per step:

- `loop_ms`: the median time from one step's start to the next within an epoch: the step, the
  input pipeline's wait and every callback's per-step work;
- `fit_ms`: the whole of `fit` (first step to the end, epoch ends included) over its steps, the
  first epoch excluded (it compiles);
- `fit_ms_without_validation`: the same without the per-epoch validation passes;
- `bare_loop_ms`: the loop's median step of a `fit` on the same pipeline with no callback at all,
  and `pipeline_ms`: one minibatch drawn from the pipeline alone (what the callbacks and the input
  cost apart);
- `step_ms`: the train function alone on one fixed minibatch (benchmarks/throughput.py's figure),
  the median of three rounds timed before, between and after the two fits (`step_ms_rounds`);

and `fit_over_step` = fit_ms / step_ms (issue: within 1.10).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

from machine import describe  # noqa: E402
from throughput import step_seconds  # noqa: E402
from tfstructvae.config import get_preset, parse_overrides  # noqa: E402
from tfstructvae.rundir import write_json_atomic  # noqa: E402
from tfstructvae.train import train_and_evaluate  # noqa: E402


class StepClock(keras.callbacks.Callback):
    """Times between step starts, per epoch, each epoch's span from its first step's start, and the
    time of each epoch's validation pass."""

    def __init__(self):
        super().__init__()
        self.starts, self.epoch_spans, self.validation = [], [], []
        self._test_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append([])

    def on_train_batch_begin(self, batch, logs=None):
        self.starts[-1].append(time.perf_counter())

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation.append(time.perf_counter() - self._test_start)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_spans.append(time.perf_counter() - self.starts[-1][0])
        if len(self.validation) < len(self.epoch_spans):
            self.validation.append(0.0)

    def loop_seconds(self) -> float:
        gaps = [b - a for epoch in self.starts[1:] for a, b in zip(epoch, epoch[1:])]
        return statistics.median(gaps) / self.model.steps_per_execution     # a call runs that many steps

    def fit_seconds_per_step(self, validation: bool = True) -> float:
        spans = [s - (0 if validation else v) for s, v in zip(self.epoch_spans[1:], self.validation[1:])]
        return sum(spans) / (sum(len(e) for e in self.starts[1:]) * self.model.steps_per_execution)


def bare_loop_and_pipeline_seconds(cfg, epochs: int) -> tuple[float, float]:
    """The loop's median step of a `fit` with no callback on `cfg`'s own pipeline, and the time to
    draw one minibatch from that pipeline alone."""
    from tfstructvae.train import prepare_training
    run = prepare_training(cfg)
    batches = iter(run.pipeline(0))
    next(batches)
    start = time.perf_counter()
    for _ in range(run.steps):
        next(batches)
    pipeline = (time.perf_counter() - start) / run.steps
    clock = StepClock()
    run.model.fit(run.pipeline(0), epochs=epochs, steps_per_epoch=run.steps, callbacks=[clock], verbose=0,
                  shuffle=False)
    return clock.loop_seconds(), pipeline


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-best")
    p.add_argument("--estimators", default="enumerate")
    p.add_argument("--steps", type=int, default=200, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first, which compiles, is not counted)")
    p.add_argument("--step-repeats", type=int, default=60, help="timed calls of the bare train function")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2: the first compiles and is not counted")

    rows = []
    for estimator in args.estimators.split(","):
        for xla in (True, False):
            cfg = get_preset(args.preset).override(**{
                **parse_overrides(args.set), "data.data_dir": args.data_dir, "objective.estimator": estimator,
                "train.jit_compile": xla, "train.epochs": args.epochs, "train.steps_per_epoch": args.steps})
            # The step alone is timed before, between and after the two fits and its median taken:
            # a machine's speed drifts by a fifth over minutes, and a fit takes minutes.
            first, stepper = step_seconds(cfg, cfg.data.batch_size, args.step_repeats, 10)
            step_rounds = [first]
            clock = StepClock()
            with tempfile.TemporaryDirectory() as run_dir:
                train_and_evaluate(cfg, os.path.join(run_dir, "run"), verbose=0, callbacks=[clock])
            step_rounds.append(stepper.seconds_per_step(args.step_repeats, 3))
            bare, pipeline = bare_loop_and_pipeline_seconds(cfg, args.epochs)
            step_rounds.append(stepper.seconds_per_step(args.step_repeats, 3))
            step = statistics.median(step_rounds)
            row = {"preset": args.preset, "estimator": estimator, "xla": xla, "batch_size": cfg.data.batch_size,
                   "loop_ms": 1e3 * clock.loop_seconds(), "fit_ms": 1e3 * clock.fit_seconds_per_step(),
                   "fit_ms_without_validation": 1e3 * clock.fit_seconds_per_step(validation=False),
                   "bare_loop_ms": 1e3 * bare, "pipeline_ms": 1e3 * pipeline, "step_ms": 1e3 * step,
                   "step_ms_rounds": [1e3 * t for t in step_rounds]}
            row["fit_over_step"] = row["fit_ms"] / row["step_ms"]
            row["examples_per_sec_fit"] = row["batch_size"] / (row["fit_ms"] / 1e3)
            rows.append(row)
            print(f"{estimator:10s} xla={str(xla):5s} fit {row['fit_ms']:7.2f} ms/step "
                  f"(without validation {row['fit_ms_without_validation']:7.2f})  loop {row['loop_ms']:7.2f}  "
                  f"bare loop {row['bare_loop_ms']:7.2f}  pipeline {row['pipeline_ms']:5.2f}  "
                  f"step alone {row['step_ms']:7.2f}  fit/step {row['fit_over_step']:.2f}", flush=True)
            write_json_atomic(args.out, {"runs": rows, "machine": describe(), "command": " ".join(
                ["python", "benchmarks/fit_throughput.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
