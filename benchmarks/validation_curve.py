"""Validation error after every epoch, for choosing hyperparameters without the test set.

    python benchmarks/validation_curve.py --data-dir ../shared/data/mnist --preset mnist-paper \
        --set objective.alpha=5000 --out benchmarks/results/validation/mnist-paper_alpha5000.json

Holds `--validation-size` examples (default 5,000) out of the training set, trains the preset
(with any `--set` overrides) on the rest, and records q(y|x)'s error on the held-out images at
the end of every epoch. The test set is never evaluated. `--stop-after-epoch N` ends a run early
(its learning-rate schedule is still the full run's), to compare candidates over the same part
of one schedule.

`--pool-error` also scores q(y|x) on the unlabelled training pool against its hidden labels after
every epoch (and names the worst confusion), still without the test set. With
`--validation-size 0` the run then trains exactly what `paper_table.py --seeds SEED` trains, so a
failure seen on one of its test draws can be studied on the training pool instead of the test set:

    python benchmarks/validation_curve.py --data-dir ../shared/data/mnist --preset mnist-mix --seed 2 \
        --validation-size 0 --pool-error --out pool_mnist-mix_s2.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--validation-size", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-per-epoch", type=int, help="override steps per epoch (smoke tests)")
    p.add_argument("--stop-after-epoch", type=int)
    p.add_argument("--pool-error", action="store_true",
                   help="also score q(y|x) on the unlabelled training pool's hidden labels every epoch")
    args = p.parse_args(argv)

    import keras

    from tfstructvae import get_preset
    from tfstructvae.config import parse_overrides
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import prepare_training, unlabelled_pool_error, weight_average_callbacks

    cfg = get_preset(args.preset).override(**{
        "data.data_dir": args.data_dir, "data.labels_per_class": args.labels_per_class,
        "data.validation_size": args.validation_size, "data.label_seed": args.seed,
        "data.data_seed": args.seed, "train.init_seed": args.seed,
        "train.steps_per_epoch": args.steps_per_epoch, **parse_overrides(args.set)}).validate()
    if cfg.data.validation_size < 1 and not args.pool_error:
        p.error("--validation-size must be >= 1 (or give --pool-error): this benchmark reports "
                "held-out errors only, never the test set's")
    run = prepare_training(cfg)      # the same data, split, pipeline and model as `tfstructvae train`
    model, steps, train, validation = run.model, run.steps, run.pipeline(), run.validation

    if args.pool_error and run.data.y_train.ndim != 1:
        p.error("--pool-error scores a dataset with one class label per image")
    curve, start = [], time.time()
    command = " ".join(["python", "benchmarks/validation_curve.py", *(argv or sys.argv[1:])])

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            point = {"epoch": epoch + 1, "train_accuracy": float(logs["labelled_accuracy"])}
            shown = []
            if validation is not None:
                point.update(validation_error=1.0 - float(logs["val_accuracy"]),
                             validation_elbo=float(logs["val_elbo"]))
                shown.append(f"validation error {100 * point['validation_error']:.2f}%")
            if args.pool_error:
                point.update(unlabelled_pool_error(self.model, run.data, run.split))
                shown.append(f"unlabelled-pool error {100 * point['pool_error']:.2f}% "
                             f"(most confused: {point['worst_confusion']})")
            point["wall_time_s"] = time.time() - start
            curve.append(point)
            print(f"epoch {epoch + 1}: " + ", ".join(shown), flush=True)
            write_json_atomic(args.out, {"preset": args.preset, "overrides": args.set, "config": cfg.to_dict(),
                                         "curve": curve, "command": command})
            if args.stop_after_epoch and epoch + 1 >= args.stop_after_epoch:
                self.model.stop_training = True

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.fit(train, epochs=cfg.train.epochs, steps_per_epoch=steps, validation_data=validation,
              callbacks=[*weight_average_callbacks(cfg, at_epoch_end=True), Record()], verbose=0, shuffle=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
