"""The paper's Fig. 2(b): test error against the supervision rate r, at several l.

    python benchmarks/supervision_rate.py --data-dir ../shared/data/mnist \
        --rates 0,0.01,0.05,0.1,0.5,1.0 --labels 10,100 --out benchmarks/results/supervision_rate.json

A fraction r of minibatches are labelled minibatches drawn from the repeated labelled pool
(`rate` mode); every run takes the same number of steps. Writes JSON, prints a markdown
table, and draws the curves to the PNG beside the JSON. Runs are resumable as in paper_table.py.
"""

from __future__ import annotations

import argparse
import os
import sys


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for l in sorted({r["labels_per_class"] for r in rows}):
        pts = sorted((r["supervision_rate"], 100 * r["test_error"]) for r in rows if r["labels_per_class"] == l)
        # r = 0 sits left of the log axis' first tick
        xs = [max(x, 3e-3) for x, _ in pts]
        line, = ax.plot(xs, [y for _, y in pts], "o-", label=f"{l} labels per class")
        # at r = 0 no label names a cluster: its error after the best matching of clusters to classes
        matched = [100 * r["test_cluster_error"] for r in rows
                   if r["labels_per_class"] == l and r["supervision_rate"] == 0 and r.get("test_cluster_error") is not None]
        if matched:
            ax.plot([3e-3], matched, "*", color=line.get_color(), markersize=10,
                    label=f"{l}: r = 0, clusters matched to classes")
    ax.set_xscale("log")
    ax.set_xlabel("supervision rate r (r = 0 drawn at 0.003)")
    ax.set_ylabel("test error (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-paper")
    p.add_argument("--rates", default="0,0.01,0.05,0.1,0.5,1.0")
    p.add_argument("--labels", default="10,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--runs-dir", default="runs/supervision_rate")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field of the preset, as in `tfstructvae train --set`")
    args = p.parse_args(argv)

    from tfstructvae import get_preset
    from tfstructvae.config import parse_overrides
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import train_or_reuse

    rows = []
    for l in [int(v) for v in args.labels.split(",")]:
        for r in [float(v) for v in args.rates.split(",")]:
            cfg = get_preset(args.preset).override(**{
                "data.data_dir": args.data_dir, "data.validation_size": 0,  # the papers train on all of it
                "data.labels_per_class": l, "data.supervision_mode": "rate",
                "data.supervision_rate": r, "data.label_seed": args.seed, "data.data_seed": args.seed,
                "train.init_seed": args.seed, "train.epochs": args.epochs,
                "train.steps_per_epoch": args.steps_per_epoch, **parse_overrides(args.set)})
            run_dir = os.path.join(args.runs_dir, f"{args.preset}-l{l}-r{r}-s{args.seed}")
            metrics = train_or_reuse(cfg, run_dir)
            rows.append({"preset": args.preset, "labels_per_class": l, "supervision_rate": r,
                         "seed": args.seed, "test_error": metrics["test_error"], "epochs": metrics["epochs"],
                         "test_cluster_error": metrics.get("test_cluster_error"),
                         "wall_time_s": metrics["wall_time_s"]})
            print(f"l={l:<4d} r={r:<5g} test error {100 * metrics['test_error']:.2f}%  "
                  f"(clusters matched to classes: {100 * metrics.get('test_cluster_error', float('nan')):.2f}%)  "
                  f"({metrics['wall_time_s']:.0f} s)", flush=True)
            write_json_atomic(args.out, {"runs": rows, "command": " ".join(
                ["python", "benchmarks/supervision_rate.py", *(argv or sys.argv[1:])])})
    png = os.path.splitext(args.out)[0] + ".png"
    plot(rows, png)
    rates = sorted({r["supervision_rate"] for r in rows})
    print("\n| l per class | " + " | ".join(f"r={r:g}" for r in rates) + " | r=0, clusters matched |")
    print("|" + " --- |" * (2 + len(rates)))
    for l in sorted({r["labels_per_class"] for r in rows}):
        cells = {r["supervision_rate"]: r for r in rows if r["labels_per_class"] == l}
        matched = cells.get(0.0, {}).get("test_cluster_error")
        print(f"| {l} | " + " | ".join(f"{100 * cells[r]['test_error']:.2f}" for r in rates)
              + f" | {'-' if matched is None else f'{100 * matched:.2f}'} |")
    print(f"\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
