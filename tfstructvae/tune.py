"""Choosing settings for new data on a held-out validation split (`tfstructvae tune`).

A recipe tuned on one dataset need not carry over to another (docs/results.md: the MNIST recipe
on Fashion-MNIST). `tune` trains every point of a small grid of settings on the training images
minus `data.validation_size` held out, records q(y|x)'s validation error after every epoch, and
keeps the point with the lowest error at the last epoch (what `train` would deliver with that
schedule). The test set is never touched. In the output directory:

    trials.json        every point: its overrides, validation curve, wall time (written after each
                       point; a tuning run that is interrupted resumes at the next point)
    best_config.json   the whole chosen configuration: `tfstructvae train --config best_config.json`

`DEFAULT_GRID` holds two parts of the unlabelled objective that help on MNIST and cost on Fashion-MNIST.
"""

from __future__ import annotations

import itertools
import json
import os
import time

from tfstructvae.config import Config, ConfigError, parse_overrides

# Two parts of the unlabelled objective that help on MNIST and each cost on Fashion-MNIST
# (docs/results.md): the ELBO's gradient into q(y|x) and the virtual adversarial consistency term.
# The point with both off trains q(y|x) on the labels (and the entropy term) alone: the baseline
# the others must beat on your data.
DEFAULT_GRID = {
    "objective.classifier_elbo_weight": [1.0, 0.0],
    "objective.consistency_weight": [50.0, 0.0],
}
# Fields a grid may not vary: they change the data itself, which is loaded once.
FIXED = ("data.dataset", "data.data_dir", "data.validation_size", "data.label_seed", "data.labels_per_class")


def parse_grid(items) -> dict[str, list]:
    """["section.field=v1,v2", ...] -> {"section.field": [v1, v2]}; each value parses as in --set
    (JSON where it can: numbers, true/false, [lists]); commas inside brackets do not split."""
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or "." not in key or not text:
            raise ConfigError(f"--grid expects SECTION.FIELD=VALUE1,VALUE2,..., got {item!r}")
        if key in FIXED:
            raise ConfigError(f"--grid cannot vary {key}: it changes the data or the split the points "
                              "are compared on; set it once with --set or the train options")
        values, depth, start = [], 0, 0
        for i, ch in enumerate(text + ","):
            depth += {"[": 1, "]": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                values.append(parse_overrides([f"{key}={text[start:i]}"])[key])
                start = i + 1
        grid[key] = values
    return grid


def _as_json(cfg: Config) -> dict:
    """The configuration as trials.json holds it (lists, not tuples), to compare with what it holds."""
    return json.loads(json.dumps(cfg.to_dict()))


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def tune(cfg: Config, grid: dict[str, list], out_dir: str, verbose: int = 1, restart: bool = False) -> dict:
    """Train every grid point of `cfg` and choose on validation; returns the summary. Points already
    in `out_dir/trials.json` with the same configuration are kept, unless `restart`."""
    import keras

    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import load_data, prepare_training

    cfg.validate()
    if cfg.data.validation_size < 1:
        raise ConfigError("tune chooses on held-out training images: set data.validation_size >= 1 "
                          f"(got {cfg.data.validation_size})")
    points = grid_points(grid)
    configs = [cfg.override(**point).validate() for point in points]   # refuse a bad point before training
    if os.path.isfile(out_dir):
        raise ConfigError(f"--output-dir {out_dir} is a file")
    os.makedirs(out_dir, exist_ok=True)
    trials_path = os.path.join(out_dir, "trials.json")
    trials = []
    if os.path.isfile(trials_path) and not restart:
        with open(trials_path) as f:
            trials = json.load(f)["trials"]
    data = load_data(cfg)
    for i, (point, point_cfg) in enumerate(zip(points, configs)):
        label = ", ".join(f"{k}={v}" for k, v in point.items()) or "(the configuration as given)"
        if any(t["config"] == _as_json(point_cfg) for t in trials):
            print(f"[{i + 1}/{len(points)}] {label}: done before, kept", flush=True)
            continue
        print(f"[{i + 1}/{len(points)}] {label}", flush=True)
        keras.backend.clear_session()
        run = prepare_training(point_cfg, data)
        curve, start = [], time.time()

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                curve.append({"epoch": epoch + 1, "validation_error": 1.0 - float(logs["val_accuracy"]),
                              "validation_elbo": float(logs["val_elbo"]), "wall_time_s": time.time() - start})
                if verbose:
                    print(f"    epoch {epoch + 1}: validation error {100 * curve[-1]['validation_error']:.2f}%",
                          flush=True)

        run.model.fit(run.pipeline(), epochs=point_cfg.train.epochs, steps_per_epoch=run.steps,
                      validation_data=run.validation, callbacks=[Record()], verbose=0)
        trials.append({"overrides": point, "config": _as_json(point_cfg), "curve": curve,
                       "validation_error": curve[-1]["validation_error"],
                       "best_epoch_validation_error": min(c["validation_error"] for c in curve),
                       "wall_time_s": time.time() - start})
        write_json_atomic(trials_path, {"grid": grid, "trials": trials})
    wanted = [_as_json(p) for p in configs]
    ours = [t for t in trials if t["config"] in wanted]
    best = min(ours, key=lambda t: t["validation_error"])
    write_json_atomic(os.path.join(out_dir, "best_config.json"), best["config"])
    summary = {"best_overrides": best["overrides"], "best_validation_error": best["validation_error"],
               "trials": [{"overrides": t["overrides"], "validation_error": t["validation_error"]} for t in ours],
               "best_config": os.path.join(out_dir, "best_config.json")}
    print(f"chosen: {best['overrides']} (validation error {100 * best['validation_error']:.2f}%); "
          f"train it with: tfstructvae train --config {summary['best_config']} --output-dir RUN", flush=True)
    return summary
