"""Wall time to a validation error: the default preset on real MNIST with 10 labels per class.

    python benchmarks/time_to_error.py --data-dir ../shared/data/mnist --out benchmarks/results/time_to_error.json

Holds `--validation-size` images (5,000) out of the training set, trains `--preset` (default
`mnist-best`, with any `--set` overrides) as `tfstructvae train` does (the same data, split,
pipeline, model and step choice), and every `--every` steps measures q(y|x)'s error on the
held-out images. The clock counts training only (the measurements are excluded); the JSON gives
the curve and the first time the error reaches each of `--thresholds` (10%, 5%, 3%). With
`--set train.ema_momentum=M` the error is that of Adam's running average of the weights. The run
stops when the last threshold is reached or the preset's epochs end; with `--to-the-end` it runs
the whole schedule and also gives, per threshold, the time from which every later measurement
stays at or below it (`stays_below`: a noisy curve can cross a threshold long before it stays
under it) and the final error. The test set is not used. Nothing else may run on the machine
while it times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-best")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--validation-size", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=250, help="steps between two validation measurements")
    p.add_argument("--thresholds", default="0.10,0.05,0.03")
    p.add_argument("--steps-per-epoch", type=int, help="override steps per epoch (smoke tests)")
    p.add_argument("--to-the-end", action="store_true",
                   help="train the whole schedule; report when the error stays below each threshold")
    args = p.parse_args(argv)
    thresholds = sorted((float(t) for t in args.thresholds.split(",")), reverse=True)

    import keras

    from tfstructvae import get_preset
    from tfstructvae.callbacks import FasterStep
    from tfstructvae.config import parse_overrides
    from machine import describe
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import prepare_training, weight_average_callbacks

    cfg = get_preset(args.preset).override(**{
        "data.data_dir": args.data_dir, "data.labels_per_class": args.labels_per_class,
        "data.validation_size": args.validation_size, "data.label_seed": args.seed, "data.data_seed": args.seed,
        "train.init_seed": args.seed, "train.steps_per_epoch": args.steps_per_epoch,
        **parse_overrides(args.set)}).validate()
    if cfg.data.validation_size < 1:
        p.error("--validation-size must be >= 1: the error is measured on held-out training images")
    run = prepare_training(cfg)
    machine = describe()
    command = " ".join(["python", "benchmarks/time_to_error.py", *(argv or sys.argv[1:])])
    curve, reached = [], {}

    class Clock(keras.callbacks.Callback):
        """Training seconds (measurements excluded) and the validation error every `every` steps."""

        def on_train_begin(self, logs=None):
            self.trained, self.steps, self.since = 0.0, 0, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            before, self.steps = self.steps, self.steps + self.model.steps_per_execution   # steps a call ran
            if self.steps // args.every == before // args.every:
                return
            self.trained += time.perf_counter() - self.since
            # evaluate() runs its own callbacks, not fit's: the weight average (train.ema_momentum)
            # is swapped in here, as fit's validation does.
            error = 1.0 - float(self.model.evaluate(run.validation, verbose=0, return_dict=True,
                                                    callbacks=weight_average_callbacks(cfg))["accuracy"])
            curve.append({"step": self.steps, "train_seconds": self.trained, "validation_error": error})
            for t in thresholds:
                if error <= t and str(t) not in reached:
                    reached[str(t)] = {"step": self.steps, "train_seconds": self.trained}
            print(f"step {self.steps}: {self.trained:7.1f} s, validation error {100 * error:.2f}%", flush=True)
            write_json_atomic(args.out, result())
            if str(thresholds[-1]) in reached and not args.to_the_end:
                self.model.stop_training = True
            self.since = time.perf_counter()

    def result():
        out = {"preset": args.preset, "overrides": args.set, "config": run.cfg.to_dict(), "every": args.every,
               "thresholds": thresholds, "time_to": {str(t): reached.get(str(t)) for t in thresholds},
               "xla": bool(run.model.jit_compile), "curve": curve, "machine": machine, "command": command}
        if args.to_the_end and curve:
            out["stays_below"] = {str(t): stays_below(curve, t) for t in thresholds}
            out["final_validation_error"] = curve[-1]["validation_error"]
        return out

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    chooser = [FasterStep(log=print)] if cfg.train.jit_compile == "auto" and not cfg.train.deterministic else []
    run.model.fit(run.pipeline(), epochs=cfg.train.epochs, steps_per_epoch=run.steps, verbose=0, shuffle=False,
                  callbacks=[*chooser, *weight_average_callbacks(cfg), Clock()])
    write_json_atomic(args.out, result())
    for t in thresholds:
        hit = reached.get(str(t))
        line = f"{100 * t:g}%: " + (f"{hit['train_seconds']:.0f} s (step {hit['step']})" if hit else "not reached")
        if args.to_the_end and curve:
            stay = stays_below(curve, t)
            line += ", stays below from " + (f"{stay['train_seconds']:.0f} s (step {stay['step']})" if stay else "-")
        print(line)
    return 0


def stays_below(curve: list[dict], threshold: float) -> dict | None:
    """The first measurement from which every later one is at or below `threshold` (None if the
    last one is above it)."""
    since = None
    for point in curve:
        if point["validation_error"] > threshold:
            since = None
        elif since is None:
            since = point
    return None if since is None else {"step": since["step"], "train_seconds": since["train_seconds"]}


if __name__ == "__main__":
    sys.exit(main())
