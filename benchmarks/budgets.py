"""The loop the structured experiments share (pairs.py, yaleb.py): a preset trained per label
budget and label draw, next to the same networks trained as a supervised classifier on the same
labelled images alone; finished runs are reused, the JSON is rewritten after every run."""

from __future__ import annotations

import argparse
import os
import statistics
import sys

# The same networks as a classifier on the labelled images alone: labelled minibatches only (the
# labelled ELBO trains the encoder and decoder, not q(y|x)), no consistency term.
SUPERVISED = {"data.labelled_share": 1.0, "objective.consistency_weight": 0.0}


def arguments(doc: str, default_labels: str, runs_dir: str, data_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help=data_help)
    p.add_argument("--out", required=True)
    p.add_argument("--labels", default=default_labels, help="labelled images per class")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--validation-size", type=int, default=0,
                   help="training images held out (default 0: test figures, as the papers' tables)")
    p.add_argument("--runs-dir", default=runs_dir)
    p.add_argument("--no-baseline", action="store_true", help="skip the supervised classifier")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    return p


def run_budgets(preset: str, args, script: str, describe, argv=None) -> list[dict]:
    """Train `preset` (and its supervised baseline) for every budget and seed; `describe(kind, l,
    seed, run_dir, metrics)` returns a run's row (figures included) and the line to print."""
    from tfstructvae import get_preset
    from tfstructvae.config import parse_overrides
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import train_or_reuse

    rows = []
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)    # figures go beside it
    for l in [int(v) for v in args.labels.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for kind in ("semi-supervised", *(() if args.no_baseline else ("supervised",))):
                cfg = get_preset(preset).override(**{
                    "data.data_dir": args.data_dir, "data.labels_per_class": l,
                    "data.validation_size": args.validation_size, "data.label_seed": seed,
                    "data.data_seed": seed, "train.init_seed": seed,
                    **({"train.epochs": args.epochs} if args.epochs else {}),
                    "train.steps_per_epoch": args.steps_per_epoch,
                    **(SUPERVISED if kind == "supervised" else {}), **parse_overrides(args.set)})
                run_dir = os.path.join(args.runs_dir, f"{kind}-l{l}-s{seed}")
                metrics = train_or_reuse(cfg, run_dir)
                row, line = describe(kind, l, seed, run_dir, metrics)
                rows.append({"kind": kind, "labels_per_class": l, "seed": seed, **row,
                             "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"]})
                print(f"{kind:15s} l={l:<4d} seed {seed}: {line}  ({metrics['wall_time_s']:.0f} s)", flush=True)
                write_json_atomic(args.out, {"runs": rows, "summary": summarise(rows), "command": " ".join(
                    ["python", f"benchmarks/{script}", *(argv or sys.argv[1:])])})
    print("\n" + markdown(summarise(rows)))
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sd over label draws of every measured figure, per (kind, labels per class)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["kind"], r["labels_per_class"]), []).append(r)
    out = []
    for (kind, l), runs in groups.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, float) and k != "wall_time_s"]
        cell = {"kind": kind, "labels_per_class": l, "n_seeds": len(runs)}
        for k in keys:
            values = [r[k] for r in runs if k in r]
            cell[k] = {"mean": statistics.mean(values),
                       "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
        out.append(cell)
    return out


def markdown(summary: list[dict]) -> str:
    """The summary as a table: one row per (kind, l), a column per figure (mean +- sd; errors in %)."""
    keys = sorted({k for s in summary for k, v in s.items() if isinstance(v, dict)})
    lines = ["| kind | l | seeds | " + " | ".join(keys) + " |", "|" + " --- |" * (3 + len(keys))]
    for s in summary:
        cells = []
        for k in keys:
            v = s.get(k)
            scale = 100 if ("error" in k or "accuracy" in k or "kept" in k) else 1
            digits = 2 if scale == 100 else 3
            cells.append(f"{scale * v['mean']:.{digits}f} ± {scale * v['sd']:.{digits}f}" if v else "")
        lines.append(f"| {s['kind']} | {s['labels_per_class']} | {s['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
