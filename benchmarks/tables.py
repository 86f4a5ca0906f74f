"""The README's speed tables, generated from the benchmarks' JSON results (never copied by hand).

    python benchmarks/tables.py            # rewrite the tables in README.md
    python benchmarks/tables.py --check    # exit 1 if a table differs from its JSON (the tests run this)

A table sits between `<!-- table: NAME -->` and `<!-- end table -->` in the README; NAME is one of
`TABLES`, each a function of the committed JSON files under benchmarks/results/:

- `throughput`: `benchmarks/throughput.py --out benchmarks/results/throughput.json`, the train step
  of each estimator with and without XLA against its matmul roofline;
- `throughput_pyro_shapes`: the same at Pyro's layer sizes (`throughput_pyro_shapes.json`);
- `peers`: `benchmarks/compare_peers.py --out benchmarks/results/peers.json`, the package against
  Pyro's semi-supervised VAE at the same sizes, and each side's test error after the same time;
- `time_to_error`: `benchmarks/time_to_error.py`, the wall time to a validation error, one row per
  preset and label draw (`time_to_error_variants/draws_*.json`), against `mnist-best`'s on the draw;
- `fit`: `benchmarks/fit_throughput.py --out benchmarks/results/fit_throughput_mnist_best.json`,
  the whole `fit` against the train step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MARKER = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def _load(name: str) -> dict:
    with open(os.path.join(RESULTS, name)) as f:
        return json.load(f)


def measured_on(result: dict) -> str:
    """"; CPU (instruction sets)" from a result's machine record (benchmarks/machine.py), if it has one."""
    machine = result.get("machine", {})
    if not machine.get("processor"):
        return ""
    isa = ", ".join(machine.get("isa", []))
    return f"; {machine['processor']}" + (f" ({isa})" if isa else "")


def throughput_table(name: str = "throughput.json") -> str:
    result = _load(name)
    rows = ["| estimator | XLA | examples/s | step | matmul roofline | fraction of roofline |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in result["results"]:
        rows.append(f"| {r['estimator']} | {'on' if r['xla'] else 'off'} | {r['examples_per_sec']:,.0f} | "
                    f"{r['step_ms']:.2f} ms | {r['roofline_ms']:.2f} ms | {r['roofline_fraction']:.2f} |")
    first = result["results"][0]
    rounds = len(first.get("step_ms_rounds", [None]))
    return "\n".join(rows) + (f"\n\n`{result['command']}` (`{first['preset']}` networks, batch "
                              f"{first['batch_size']}, {result['machine']['cpus']} cores"
                              + (f"; each time the median of {rounds} rounds over all rows in turn" if rounds > 1 else "")
                              + measured_on(result) + ").\n")


def peers_table() -> str:
    result = _load("peers.json")
    pyro, ours = result["pyro"], result["package"]
    rows = ["| examples/s, batch 100 | unlabelled batch | labelled batch |", "| --- | --- | --- |",
            f"| Pyro {pyro['pyro']}, parallel enumeration (torch {pyro['torch']}) | "
            f"{pyro['timing']['unlabelled']['examples_per_sec']:,.0f} | "
            f"{pyro['timing']['labelled']['examples_per_sec']:,.0f} |"]
    names = {"enumerate": "enumerate, XLA", "enumerate_no_xla": "enumerate, no XLA",
             "plugin": "plug-in, XLA", "plugin_no_xla": "plug-in, no XLA"}
    for key, label in names.items():
        cells = []
        for kind in ("unlabelled", "labelled"):
            speed = ours["timing"][f"{key}/{kind}"]["examples_per_sec"]
            ratio = result["ratios_examples_per_sec"][f"{key}/{kind} / pyro"]
            cells.append(f"{speed:,.0f} (x{ratio:.2f})")
        rows.append(f"| tfstructvae, {label} | {cells[0]} | {cells[1]} |")
    if "matmul_work" in result:
        work = result["matmul_work"]
        kinds = ("unlabelled", "labelled")
        at_roofline = work.get("ceiling_ratio_at_roofline", {})
        rows += ["", "| matrix products a step: GFLOP (GFLOP/s; the ratio's ceiling"
                 + ("s at peak and at the products' own time" if at_roofline else "") + ") | unlabelled batch | labelled batch |",
                 "| --- | --- | --- |",
                 "| Pyro | " + " | ".join(f"{work['pyro'][k]['gflop_per_step']:.2f} ({work['pyro'][k]['gflops']:.0f})"
                                          for k in kinds) + " |"]
        for key, label in names.items():
            cells = []
            for k in kinds:
                row, ceiling = work["package"][f"{key}/{k}"], work["ceiling_ratio_at_peak"][f"{key}/{k} / pyro"]
                own = at_roofline.get(f"{key}/{k} / pyro")
                cells.append(f"{row['gflop_per_step']:.2f} ({row['gflops']:.0f}; x{ceiling:.2f}"
                             + (f", x{own:.2f}" if own else "") + ")")
            rows.append(f"| tfstructvae, {label} | {cells[0]} | {cells[1]} |")
        rows += ["", f"The ceiling: the ratio to Pyro if the package's products ran at this machine's best rate, "
                     f"{work['peak_gflops']:.0f} GFLOP/s (an n x n x n product), and nothing else took time"
                     + ("; the second, if the step took only the time its own products take alone at their shapes "
                        "(XLA-compiled, as `throughput.py`'s roofline)" if at_roofline else "") + "."]
    rounds = ours.get("rounds", 1)
    text = "\n".join(rows) + (f"\n\n`{result['command']}` ({ours['threads']} threads each, one side at a time"
                              + (f"; each figure the median of {rounds} rounds, the sides alternating" if rounds > 1 else "")
                              + (f"; the package at {ours['steps_per_execution']} steps a call (train.steps_per_execution)"
                                 if ours.get("steps_per_execution", 1) > 1 else "")
                              + measured_on(result) + ").")
    if "accuracy" in pyro and "accuracy" in ours:
        a, b = ours["accuracy"], pyro["accuracy"]
        text += (f" Test error after {a['train_seconds']:.0f} s of training on MNIST with "
                 f"{a['labels_per_class']} labels per class: tfstructvae {100 * a['test_error']:.2f}% "
                 f"({a['steps']:,} steps), Pyro {100 * b['test_error']:.2f}% ({b['steps']:,} steps).")
    return text + "\n"


# The time-to-error target (issue 18) is a fraction of this preset's time: the default when it was set.
BASELINE = "mnist-best"
DRAWS = "time_to_error_variants"       # one run per preset (and overrides) and label draw: draws_*.json


def _run_name(r) -> str:
    """A time-to-error run's preset, with its overrides if any: `mnist-shift` + `objective.enumeration_top_k=2`."""
    return " + ".join([f"`{r['preset']}`"] + [f"`{o}`" for o in r.get("overrides", [])])


def time_to_error_table() -> str:
    """One row per run (preset, overrides and label draw) of `DRAWS/draws_*.json`, each run's time to
    every threshold of `BASELINE`'s runs and, per draw, its time to the last as a fraction of `BASELINE`'s."""
    folder = os.path.join(RESULTS, DRAWS)
    runs = [_load(os.path.join(DRAWS, name)) for name in sorted(os.listdir(folder) if os.path.isdir(folder) else [])
            if name.startswith("draws_") and name.endswith(".json")]
    if not runs:
        raise FileNotFoundError(f"no draws_*.json in {folder}")
    runs.sort(key=lambda r: (r["config"]["data"]["label_seed"], r["preset"] != BASELINE, r["preset"],
                             r.get("overrides", [])))
    thresholds = next((r for r in runs if r["preset"] == BASELINE), runs[0])["thresholds"]
    last = str(thresholds[-1])
    baseline = {r["config"]["data"]["label_seed"]: r["time_to"].get(last) for r in runs if r["preset"] == BASELINE}
    rows = ["| label draw | run | step | " + " | ".join(f"to {100 * t:g}%" for t in thresholds)
            + f" | to {100 * thresholds[-1]:g}% against `{BASELINE}` |",
            "| --- | --- | --- | " + " | ".join("---" for _ in thresholds) + " | --- |"]
    for r in runs:
        draw = r["config"]["data"]["label_seed"]
        reached = [r["time_to"].get(str(t)) for t in thresholds]
        # the step's cost up to the last threshold (a run --to-the-end goes on past it)
        until = reached[-1] or r["curve"][-1]
        step_ms = 1e3 * until["train_seconds"] / until["step"]
        cells = [f"{x['train_seconds']:.0f} s (step {x['step']:,})" if x else "not reached" for x in reached]
        base, mine = baseline.get(draw), reached[-1]
        if r["preset"] == BASELINE:
            ratio = "1" if base else "not reached"
        elif base and mine:
            ratio = f"**{mine['train_seconds'] / base['train_seconds']:.2f}**"
        else:
            ratio = f"`{BASELINE}` does not reach it" if mine else "-"
        rows.append(f"| {draw} | {_run_name(r)} | {step_ms:.1f} ms | " + " | ".join(cells) + f" | {ratio} |")
    first = runs[0]
    return "\n".join(rows) + (f"\n\nValidation error on {first['config']['data']['validation_size']:,} training "
                              f"images held out, measured every {first['every']} steps, "
                              f"{first['config']['data']['labels_per_class']} labels per class; the clock counts "
                              "training only; one run at a time on one quiet machine "
                              "(`python benchmarks/time_to_error.py --data-dir ../shared/data/mnist --seed DRAW "
                              "--preset PRESET [--set OVERRIDE] "
                              f"--out benchmarks/results/{DRAWS}/draws_mnist_shift_seed1.json`, "
                              "one file per run and draw).\n")


def fit_table() -> str:
    result = _load("fit_throughput_mnist_best.json")
    parts = "bare_loop_ms" in result["runs"][0]        # written since the runs were split in parts
    rows = ["| preset, estimator | XLA | `fit`, ms a step | " + ("without validation | " if parts else "")
            + "the loop's median step | " + ("with no callback | " if parts else "") + "train function alone | "
            "fit / step |", "| --- " * (6 + 2 * parts) + "|"]
    for r in result["runs"]:
        rows.append(f"| `{r['preset']}`, {r['estimator']} | {'on' if r['xla'] else 'off'} | {r['fit_ms']:.2f} | "
                    + (f"{r['fit_ms_without_validation']:.2f} | " if parts else "") + f"{r['loop_ms']:.2f} | "
                    + (f"{r['bare_loop_ms']:.2f} | " if parts else "")
                    + f"{r['step_ms']:.2f} | {r['fit_over_step']:.2f} |")
    note = ""
    if "step_ms_rounds" in result["runs"][0]:
        spans = ", ".join(f"{min(r['step_ms_rounds']):.0f}-{max(r['step_ms_rounds']):.0f} ms "
                          f"{'with' if r['xla'] else 'without'} XLA" for r in result["runs"])
        note = (f" The train function alone is the median of three rounds timed before, between and after "
                f"the fits; the rounds spread over {spans}.")
    return "\n".join(rows) + f"\n\n`{result['command']}`.{note}\n"


TABLES = {"throughput": throughput_table, "peers": peers_table,
          "throughput_pyro_shapes": lambda: throughput_table("throughput_pyro_shapes.json"),
          "time_to_error": time_to_error_table, "fit": fit_table}


def render(text: str) -> str:
    """`text` with every marked table regenerated; an unknown table name is an error."""
    def one(match):
        name = match.group("name")
        if name not in TABLES:
            raise KeyError(f"README names table {name!r}; known: {sorted(TABLES)}")
        return match.group(1) + TABLES[name]() + match.group(4)
    return MARKER.sub(one, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if a table differs from its JSON")
    p.add_argument("--file", default=os.path.join(ROOT, "README.md"))
    args = p.parse_args(argv)
    with open(args.file) as f:
        text = f.read()
    new = render(text)
    names = [m.group("name") for m in MARKER.finditer(text)]
    if args.check:
        if new != text:
            print(f"{args.file}: a generated table differs from its JSON; run python benchmarks/tables.py",
                  file=sys.stderr)
            return 1
        print(f"{args.file}: tables {names} match their JSON")
        return 0
    with open(args.file, "w") as f:
        f.write(new)
    print(f"{args.file}: wrote tables {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
