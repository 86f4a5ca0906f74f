"""The paper's MNIST table: test error vs labelled examples per class, over label draws.

    python benchmarks/paper_table.py --data-dir ../shared/data/mnist \
        --presets mnist-paper,mnist --labels 10,60,100,300 --seeds 0,1,2 \
        --out benchmarks/results/paper_table.json
    python benchmarks/paper_table.py --data-dir ../shared/data/mnist --quick --out /tmp/q.json

Each (preset, l, seed) trains into RUNS_DIR/<preset>-l<l>-s<seed> and is skipped when
that run already has a metrics.json, so an interrupted table resumes where it stopped.
With `--jobs N` the (l, seed) pairs train in N processes at once, each on cores/N threads.
With `--teacher-preset T` every run is a self-trained student (`data.teacher`): the run of T on the
same labels and seed (RUNS_DIR/T-l<l>-s<seed>, trained first or reused) labels its unlabelled
images, and the student trains into RUNS_DIR/<preset>-taught-by-T-l<l>-s<seed>.
The seed sets the labelled subset, the data order and the initialisation together.
Hyperparameters come from the presets (chosen on validation data); figures are test error.
Each run also reports q(y|x)'s error on its unlabelled training images against their hidden
labels and the largest confusion there (`pool_error`, `worst_confusion`): a draw that fails
names the class read as another without another look at the test set.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

PAPER = {10: 12.2, 60: 5.28, 100: 4.23, 300: 3.94}      # Siddharth et al. 2016, test error %
M2 = {10: 11.97, 60: 4.94, 100: 3.60, 300: 3.92}        # Kingma et al. 2014
RELAXED = {10: 9.71}                                    # Siddharth et al. 2017 (Concrete y)


def summarise(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["preset"], r["labels_per_class"]), []).append(r["test_error"])
    return [{"preset": p, "labels_per_class": l, "mean_test_error": statistics.mean(errs),
             "std_test_error": statistics.stdev(errs) if len(errs) > 1 else 0.0, "n_seeds": len(errs)}
            for (p, l), errs in sorted(groups.items())]


def markdown(summary):
    presets = sorted({s["preset"] for s in summary})
    labels = sorted({s["labels_per_class"] for s in summary})
    cell = {(s["preset"], s["labels_per_class"]): s for s in summary}
    head = "| l per class | paper | M2 | relaxed | " + " | ".join(f"`{p}`" for p in presets) + " |"
    rows = [head, "|" + " --- |" * (4 + len(presets))]
    for l in labels:
        vals = []
        for p in presets:
            s = cell.get((p, l))
            vals.append(f"{100 * s['mean_test_error']:.2f} ± {100 * s['std_test_error']:.2f} (n={s['n_seeds']})"
                        if s else "")
        rows.append(f"| {l} | {PAPER.get(l, '')} | {M2.get(l, '')} | {RELAXED.get(l, '')} | " + " | ".join(vals) + " |")
    return "\n".join(rows)


def train_in_parallel(argv, labels, seeds, jobs, runs_dir):
    """`--jobs N`: every (l, seed) of the table trained by a paper_table process of its own, N at a
    time, each on cores/N threads; the caller then reads the finished runs (reused, not trained
    again). On a small CPU several one-thread runs use the cores better than one run on all of them:
    on 2 cores a `mnist-shift-z16` epoch took 47-52 s with two such runs side by side, 31-48 s alone
    on both threads. Each run's `wall_time_s` is then its time beside the others."""
    todo = [(l, seed) for l in labels for seed in seeds]
    jobs = min(jobs, len(todo))     # more processes than runs would leave their threads idle
    if jobs == 1:
        return                      # one run (e.g. --quick): the caller trains it on every core
    os.makedirs(runs_dir, exist_ok=True)
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    running = []
    while todo or running:
        while todo and len(running) < jobs:
            l, seed = todo.pop(0)
            log = os.path.join(runs_dir, f"paper_table-l{l}-s{seed}.log")
            # the same arguments, for one l and one seed; argparse keeps the last of each option
            cmd = [sys.executable, os.path.abspath(__file__), *argv, "--labels", str(l), "--seeds", str(seed),
                   "--jobs", "1", "--out", log[:-4] + ".json"]
            with open(log, "w") as f:
                running.append((subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT), log))
            print(f"l={l} seed={seed}: training in its own process (log: {log})", flush=True)
        time.sleep(1)
        for proc, log in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, log))
            if proc.returncode:
                for other, _ in running:
                    other.terminate()        # a run cut short resumes from its checkpoint next time
                with open(log) as f:
                    raise SystemExit(f"{log}: the run failed (exit {proc.returncode}):\n{f.read()[-3000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--presets", default="mnist-paper,mnist")
    p.add_argument("--labels", default="10,60,100,300")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, help="override the presets' epochs")
    p.add_argument("--steps-per-epoch", type=int, help="override steps per epoch (smoke tests)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override every preset, e.g. objective.augment_teacher=true (a run trained under "
                        "other settings is trained again, so give the variant a --runs-dir of its own)")
    p.add_argument("--runs-dir", default="runs/paper_table")
    p.add_argument("--teacher-preset", help="self-training: every run learns from a run of this preset on the same "
                   "labels and seed (trained first, or reused, as RUNS_DIR/PRESET-lL-sS)")
    p.add_argument("--quick", action="store_true", help="one l (10), one seed, 2 epochs")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many (l, seed) runs at once, each in a process of its own on cores/JOBS "
                        "threads, then read the table from the finished runs (default 1: one run at a time)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")

    from tfstructvae import get_preset
    from tfstructvae.config import parse_overrides
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.train import run_pool_error, train_or_reuse

    presets, labels, seeds = args.presets.split(","), [int(v) for v in args.labels.split(",")], \
        [int(v) for v in args.seeds.split(",")]
    if args.quick:
        labels, seeds, args.epochs = [10], [0], args.epochs or 2
    runs_dir = args.runs_dir + ("-quick" if args.quick else "")
    if args.jobs > 1:
        train_in_parallel(argv if argv is not None else sys.argv[1:], labels, seeds, args.jobs, runs_dir)
    runs = []
    for l in labels:
        for preset in presets:
            for seed in seeds:
                common = {"data.data_dir": args.data_dir, "data.validation_size": 0,  # the papers train on all of it
                          "data.labels_per_class": l, "data.label_seed": seed,
                          "data.data_seed": seed, "train.init_seed": seed, "train.epochs": args.epochs,
                          "train.steps_per_epoch": args.steps_per_epoch}
                cfg = get_preset(preset).override(**parse_overrides(args.set)).override(**common)
                run_dir = os.path.join(runs_dir, f"{preset}-l{l}-s{seed}")
                teacher = {}
                if args.teacher_preset:
                    teacher_dir = os.path.join(runs_dir, f"{args.teacher_preset}-l{l}-s{seed}")
                    tm = train_or_reuse(get_preset(args.teacher_preset).override(**common), teacher_dir)
                    teacher = {"teacher_test_error": tm["test_error"], "teacher_wall_time_s": tm["wall_time_s"]}
                    cfg = cfg.override(**{"data.teacher": (teacher_dir,)})
                    run_dir = os.path.join(runs_dir, f"{preset}-taught-by-{args.teacher_preset}-l{l}-s{seed}")
                metrics = train_or_reuse(cfg, run_dir)
                pool = run_pool_error(run_dir, args.data_dir)
                runs.append({"preset": preset, "labels_per_class": l, "seed": seed,
                             "test_error": metrics["test_error"], "epochs": metrics["epochs"],
                             "wall_time_s": metrics["wall_time_s"], **pool, "config": cfg.to_dict(),
                             # a preset that trains its own teacher (data.teacher_preset): both, and the teacher's error
                             **teacher, **{k: metrics[k] for k in ("recipe_wall_time_s", "teacher_wall_time_s",
                                                                   "teacher_test_error", "teacher_label_error")
                                           if k in metrics}})
                print(f"{preset:12s} l={l:<4d} seed={seed}  test error {100 * metrics['test_error']:.2f}%  "
                      f"({metrics.get('recipe_wall_time_s', metrics['wall_time_s']):.0f} s)"
                      + (f"; unlabelled-pool error {100 * pool['pool_error']:.2f}% (most confused: "
                         f"{pool['worst_confusion']})" if pool else ""), flush=True)
                summary = summarise(runs)
                write_json_atomic(args.out, {
                    "runs": runs, "summary": summary, "paper": PAPER, "m2": M2, "relaxed": RELAXED,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "jobs": args.jobs,
                    "command": " ".join(["python", "benchmarks/paper_table.py", *(argv or sys.argv[1:])])})
    print()
    print(markdown(summarise(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
