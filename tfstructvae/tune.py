"""Choosing settings for new data on a held-out validation split (`tfstructvae tune`).

A recipe tuned on one dataset need not carry over to another (docs/results.md: the MNIST recipe
on Fashion-MNIST). `tune` trains every point of a small grid of settings on the training images
minus `data.validation_size` held out, records q(y|x)'s validation error after every epoch, and
keeps the point with the lowest error at the last epoch (what `train` would deliver with that
schedule). The test set is never touched. With `seeds`, every point is trained once per label
draw (each seed sets the labelled examples, the held-out split, the data order and the initial
weights, as `paper_table.py --seeds` does) and the point with the lowest mean is kept: one draw can
hide a failure another shows (docs/results.md, `mnist-mix`). In the output directory:

    trials.json        every point (and draw): its overrides, seed, validation curve, wall time
                       (written after each; a tuning run that is interrupted resumes at the next)
    best_config.json   the whole chosen configuration: `tfstructvae train --config best_config.json`

A grid may also vary `recipe`: each value names a preset whose objective (every term and its
weight) and classifier q(y|x) (network and units) replace the configuration's, while the data,
the other networks and the schedule stay as given. `DEFAULT_GRID` is the two recipes this package
has chosen on validation so far: `mnist-shift` (the ELBO's gradient into q(y|x), virtual adversarial
consistency, consistency under shifts with an aligned target, the labels also read on shifted copies;
best on MNIST, the default preset) and `fashion-mnist` (the labels on shifted, mirrored copies,
consistency under shifts, flips and cutout, a conv classifier; best on Fashion-MNIST, where it ends
at 24.1% validation error against `mnist-shift`'s 28.0% and `mnist-best`'s 35.1%; on MNIST, before it
aligned its targets, it diverged; docs/results.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time

from tfstructvae.config import NULL, Config, ConfigError, parse_overrides

# The two recipes chosen on validation so far, one per dataset they were chosen on (module doc).
DEFAULT_GRID = {"recipe": ["mnist-shift", "fashion-mnist"]}
RECIPE = "recipe"
# Fields a grid may not vary: they change the data itself, which is loaded once.
FIXED = ("data.dataset", "data.data_dir", "data.validation_size", "data.label_seed", "data.labels_per_class")


def parse_grid(items) -> dict[str, list]:
    """["section.field=v1,v2", ...] -> {"section.field": [v1, v2]}; each value parses as in --set
    (JSON where it can: numbers, true/false, [lists]); commas inside brackets do not split."""
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        if key == RECIPE and text:
            grid[key] = text.split(",")
            for name in grid[key]:
                with_recipe(Config(), name)            # refuses an unknown name now
            continue
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


def with_recipe(cfg: Config, name: str) -> Config:
    """`cfg` with the objective and the classifier q(y|x) of preset `name` (module doc)."""
    from tfstructvae.config import PRESETS, get_preset
    if name not in PRESETS:
        raise ConfigError(f"unknown recipe {name!r}: a recipe is a preset's name, one of {sorted(PRESETS)}")
    preset = get_preset(name)
    return dataclasses.replace(cfg, objective=preset.objective, model=dataclasses.replace(
        cfg.model, classifier_network=preset.model.classifier_network,
        classifier_units=preset.model.classifier_units, classifier_filters=preset.model.classifier_filters))


def point_config(cfg: Config, point: dict, explicit: dict | None = None) -> Config:
    """The configuration of one grid point: its recipe (if any), then the fields the user set
    explicitly (`explicit`: they win over a recipe), then the point's field values."""
    fields = {k: v for k, v in point.items() if k != RECIPE}
    base = with_recipe(cfg, point[RECIPE]).override(**(explicit or {})) if RECIPE in point else cfg
    return base.override(**fields).validate()


def _as_json(cfg: Config) -> dict:
    """The configuration as trials.json holds it (lists, not tuples), to compare with what it holds."""
    return json.loads(json.dumps(cfg.to_dict()))


def with_draw(cfg: Config, seed: int | None) -> Config:
    """`cfg` on label draw `seed` (the labelled examples, hold-out, data order and initial weights);
    None: as given."""
    if seed is None:
        return cfg
    return cfg.override(**{"data.label_seed": seed, "data.data_seed": seed, "train.init_seed": seed})


def _as_overrides(point: dict) -> dict:
    """A grid point as JSON shows it: `null` where the point resets a field to None."""
    return {k: None if v is NULL else v for k, v in point.items()}


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def tune(cfg: Config, grid: dict[str, list], out_dir: str, verbose: int = 1, restart: bool = False,
         explicit: dict | None = None, seeds=None) -> dict:
    """Train every grid point of `cfg` (on every label draw in `seeds`, if given) and choose on
    validation; returns the summary. Trials already in `out_dir/trials.json` with the same
    configuration are kept, unless `restart`. `explicit`: the `section.field` values the user set,
    which a `recipe` does not replace."""
    import keras

    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import load_data, prepare_training, weight_average_callbacks

    cfg.validate()
    if cfg.data.validation_size < 1:
        raise ConfigError("tune chooses on held-out training images: set data.validation_size >= 1 "
                          f"(got {cfg.data.validation_size})")
    points = grid_points(grid)
    configs = [point_config(cfg, point, explicit) for point in points]   # refuse a bad point before training
    draws = [None] if seeds is None else list(seeds)
    if seeds is not None and (not draws or len(set(draws)) != len(draws)
                              or not all(isinstance(d, int) and d >= 0 for d in draws)):
        raise ConfigError(f"seeds must be distinct non-negative integers, got {list(seeds)!r}")
    draw_configs = [[with_draw(point_cfg, seed) for seed in draws] for point_cfg in configs]
    jobs = [(point, draw_cfg, seed) for point, row in zip(points, draw_configs) for draw_cfg, seed in zip(row, draws)]
    if os.path.isfile(out_dir):
        raise ConfigError(f"--output-dir {out_dir} is a file")
    os.makedirs(out_dir, exist_ok=True)
    trials_path = os.path.join(out_dir, "trials.json")
    trials = []
    if os.path.isfile(trials_path) and not restart:
        with open(trials_path) as f:
            trials = json.load(f)["trials"]
    data = load_data(cfg)
    for i, (point, point_cfg, seed) in enumerate(jobs):
        label = ", ".join(f"{k}={v}" for k, v in point.items()) or "(the configuration as given)"
        label += "" if seed is None else f", seed {seed}"
        if any(t["config"] == _as_json(point_cfg) for t in trials):
            print(f"[{i + 1}/{len(jobs)}] {label}: done before, kept", flush=True)
            continue
        print(f"[{i + 1}/{len(jobs)}] {label}", flush=True)
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
                      validation_data=run.validation, callbacks=[*weight_average_callbacks(point_cfg), Record()],
                      verbose=0, shuffle=False)
        trials.append({"overrides": _as_overrides(point), "seed": seed,
                       "config": _as_json(point_cfg), "curve": curve,
                       "validation_error": curve[-1]["validation_error"],
                       "best_epoch_validation_error": min(c["validation_error"] for c in curve),
                       "wall_time_s": time.time() - start})
        write_json_atomic(trials_path, {"grid": grid, "trials": trials})
    by_config = {json.dumps(t["config"], sort_keys=True): t for t in trials}
    results = []
    for point, point_cfg, row in zip(points, configs, draw_configs):
        errors = [by_config[json.dumps(_as_json(draw_cfg), sort_keys=True)]["validation_error"] for draw_cfg in row]
        results.append({"overrides": _as_overrides(point),
                        "validation_error": sum(errors) / len(errors), "config": _as_json(point_cfg),
                        **({} if seeds is None else {"seeds": draws, "validation_errors": errors})})
    best = min(results, key=lambda r: r["validation_error"])
    write_json_atomic(os.path.join(out_dir, "best_config.json"), best["config"])
    summary = {"best_overrides": best["overrides"], "best_validation_error": best["validation_error"],
               "trials": [{k: v for k, v in r.items() if k != "config"} for r in results],
               "best_config": os.path.join(out_dir, "best_config.json")}
    over = "" if seeds is None else (f", the mean over seeds {draws}: "
                                     + ", ".join(f"{100 * e:.2f}" for e in best["validation_errors"]))
    print(f"chosen: {best['overrides']} (validation error {100 * best['validation_error']:.2f}%{over}); "
          f"train it with: tfstructvae train --config {summary['best_config']} --output-dir RUN", flush=True)
    return summary
