"""A digit with measured style factors: read slant and thickness from the encoder, set them in the decoder.

    python benchmarks/morpho.py --data-dir ../shared/data/mnist --seeds 0,1,2 \
        --out benchmarks/results/morpho/morpho.json

Trains the `mnist-morpho` preset (digit: 10 labels per class; slant and thickness, measured as
Morpho-MNIST defines them, given on a fixed 1% of the training images; a free 2-d style) once per
label draw, and reports on the test set:

- the digit's error (against `mnist-best`, the same recipe without the two nodes);
- R^2 of the posterior means of slant and thickness against their measured values;
- controllability: each of `--control-images` test images is encoded, one factor is set to 9
  values spread over its test range (the 5th to the 95th percentile) with the digit, the style
  and the other factor held, the decoded images are measured again, and the Spearman rank
  correlation between the set and the re-measured value is computed per image (the median is
  reported) and over all pairs; the other factor's drift is its re-measured change between the
  lowest and the highest setting, in its standard deviations.

Writes JSON and, beside it, a PNG per run: rows of test digits with slant varied, then with
thickness varied. Runs are resumable (finished runs are reused).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

FACTORS = ("slant", "thickness")
GRID = 9


def controllability(model, x, measured_test, images: int, seed: int = 0) -> tuple[dict, dict]:
    """Set each factor on a grid, decode, re-measure: (figures of merit, decoded grids for the figure)."""
    from scipy.stats import spearmanr

    from tfstructvae.data.morpho import measure_batch

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(x), images, replace=False))
    x = x[pick].astype(np.float32) / 255.0
    q = model.encode(x)
    held = {name: model.point_value(name, dist) for name, dist in q.items()}
    # Changes are reported in each measure's spread over the chosen test images (raw units).
    spread = {f: float(np.std(v)) for f, v in measure_batch(x, progress=False).items()}
    results, grids = {}, {}
    for factor in FACTORS:
        other = FACTORS[1 - FACTORS.index(factor)]
        grid = np.percentile(measured_test[factor], np.linspace(5, 95, GRID)).astype(np.float32)
        decoded = []
        for value in grid:
            named = dict(held)
            named[factor] = np.full((images, 1), value, np.float32)
            decoded.append(model.decode(**named).mean().numpy())          # (N, 28, 28, 1)
        decoded = np.stack(decoded, 1)                                    # (N, GRID, 28, 28, 1)
        grids[factor] = decoded
        remeasured = measure_batch(decoded.reshape(-1, *decoded.shape[2:]), progress=False)
        set_values = np.tile(grid, images)
        own = remeasured[factor].reshape(images, GRID)
        per_image = [spearmanr(grid, row).statistic for row in own]
        drift = remeasured[other].reshape(images, GRID)
        results[factor] = {
            "grid_standardised": grid.tolist(),
            "spearman_pooled": float(spearmanr(set_values, own.reshape(-1)).statistic),
            "spearman_median_per_image": float(np.nanmedian(per_image)),
            "other_factor": other,
            "other_factor_spearman_pooled": float(spearmanr(set_values, drift.reshape(-1)).statistic),
            "own_change_sd": float(np.mean(own[:, -1] - own[:, 0]) / spread[factor]),
            "other_factor_drift_sd": float(np.mean(drift[:, -1] - drift[:, 0]) / spread[other]),
        }
    return results, grids


def validation_figures(cfg, data, model) -> dict:
    """With a validation hold-out: the digit's error and each factor's R^2 on the held-out training
    images, every one of them measured (not only the 1% the model is given): for choosing settings
    without the test set. {} without a hold-out."""
    from tfstructvae.data import labelled_split
    from tfstructvae.data.morpho import standardised_measures
    from tfstructvae.train import continuous_node_metrics

    if not cfg.data.validation_size:
        return {}
    split = labelled_split(data.y_train, cfg.data.labels_per_class, data.num_classes,
                           cfg.data.label_seed, cfg.data.validation_size)
    x = data.x_train[split.validation]
    every, _, _ = standardised_measures(data)          # the same images as MNIST's: the same measures
    r2 = continuous_node_metrics(model, x, {f: every[f][split.validation, None] for f in FACTORS})
    probs = np.concatenate([model.classify((x[i:i + 500] / 255.0).astype(np.float32)).numpy()
                            for i in range(0, len(x), 500)])
    return {"validation_error": float((probs.argmax(-1) != data.y_train[split.validation]).mean()),
            **{k.replace("test_", "validation_"): v for k, v in r2.items()}}


def figure(grids: dict, path: str, rows: int = 4) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2 * rows, GRID, figsize=(GRID * 0.7, 2 * rows * 0.7 + 0.6), dpi=120)
    for block, factor in enumerate(FACTORS):
        for r in range(rows):
            for c in range(GRID):
                ax = axes[block * rows + r, c]
                ax.imshow(grids[factor][r, c, ..., 0], cmap="gray_r", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
            axes[block * rows + r, 0].set_ylabel(factor if r == 0 else "", fontsize=8)
    fig.suptitle("slant (top rows), thickness (bottom rows) set from the 5th to the 95th percentile;\n"
                 "digit and style of each row held", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the MNIST files")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--validation-size", type=int, default=0,
                   help="images held out of training (default 0, as the paper tables)")
    p.add_argument("--control-images", type=int, default=500)
    p.add_argument("--runs-dir", default="runs/morpho")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(argv)

    from tfstructvae import get_preset
    from tfstructvae.config import parse_overrides
    from tfstructvae.rundir import load_run, write_json_atomic
    from tfstructvae.train import load_data, train_or_reuse

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = get_preset("mnist-morpho").override(**{
            "data.data_dir": args.data_dir, "data.labels_per_class": args.labels_per_class,
            "data.validation_size": args.validation_size, "data.label_seed": seed, "data.data_seed": seed,
            "train.init_seed": seed, **({"train.epochs": args.epochs} if args.epochs else {}),
            "train.steps_per_epoch": args.steps_per_epoch, **parse_overrides(args.set)})
        run_dir = os.path.join(args.runs_dir, f"mnist-morpho-l{args.labels_per_class}-s{seed}")
        metrics = train_or_reuse(cfg, run_dir)
        cfg, model = load_run(run_dir)
        data = load_data(cfg)
        measured = {f: data.node_labels_test[f][:, 0] for f in FACTORS}
        control, grids = controllability(model, data.x_test, measured, args.control_images, seed)
        png = os.path.splitext(args.out)[0] + f"_s{seed}.png"
        figure(grids, png)
        row = {"seed": seed, "test_error": metrics["test_error"], "wall_time_s": metrics["wall_time_s"],
               "epochs": metrics["epochs"], "figure": os.path.relpath(png), **validation_figures(cfg, data, model),
               **{f"test_r2/{f}": metrics[f"test_r2/{f}"] for f in FACTORS},
               **{f"test_rmse/{f}": metrics[f"test_rmse/{f}"] for f in FACTORS},
               "controllability": control}
        rows.append(row)
        if "validation_error" in row:
            print(f"seed {seed}: validation: digit error {100 * row['validation_error']:.2f}%  R^2 slant "
                  f"{row['validation_r2/slant']:.3f} thickness {row['validation_r2/thickness']:.3f}", flush=True)
        print(f"seed {seed}: digit error {100 * row['test_error']:.2f}%  R^2 slant "
              f"{row['test_r2/slant']:.3f} thickness {row['test_r2/thickness']:.3f}  Spearman (set vs "
              "re-measured, median per image) slant "
              f"{control['slant']['spearman_median_per_image']:.3f} thickness "
              f"{control['thickness']['spearman_median_per_image']:.3f}  ({row['wall_time_s']:.0f} s)", flush=True)
        write_json_atomic(args.out, {"runs": rows, "command": " ".join(
            ["python", "benchmarks/morpho.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
