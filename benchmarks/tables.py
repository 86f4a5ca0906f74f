"""The README's speed tables, generated from the benchmarks' JSON results (never copied by hand).

    python benchmarks/tables.py            # rewrite the tables in README.md
    python benchmarks/tables.py --check    # exit 1 if a table differs from its JSON (the tests run this)

A table sits between `<!-- table: NAME -->` and `<!-- end table -->` in the README; NAME is one of
`TABLES`, each a function of the committed JSON files under benchmarks/results/:

- `throughput`: `benchmarks/throughput.py --out benchmarks/results/throughput.json`, the train step
  of each estimator with and without XLA against its matmul roofline;
- `peers`: `benchmarks/compare_peers.py --out benchmarks/results/peers.json`, the package against
  Pyro's semi-supervised VAE at the same sizes, and each side's test error after the same time.
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


def throughput_table() -> str:
    result = _load("throughput.json")
    rows = ["| estimator | XLA | examples/s | step | matmul roofline | fraction of roofline |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in result["results"]:
        rows.append(f"| {r['estimator']} | {'on' if r['xla'] else 'off'} | {r['examples_per_sec']:,.0f} | "
                    f"{r['step_ms']:.2f} ms | {r['roofline_ms']:.2f} ms | {r['roofline_fraction']:.2f} |")
    first = result["results"][0]
    return "\n".join(rows) + (f"\n\n`{result['command']}` (`{first['preset']}` networks, batch "
                              f"{first['batch_size']}, {result['machine']['cpus']} cores).\n")


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
    text = "\n".join(rows) + f"\n\n`{result['command']}` ({ours['threads']} threads each, one side at a time)."
    if "accuracy" in pyro and "accuracy" in ours:
        a, b = ours["accuracy"], pyro["accuracy"]
        text += (f" Test error after {a['train_seconds']:.0f} s of training on MNIST with "
                 f"{a['labels_per_class']} labels per class: tfstructvae {100 * a['test_error']:.2f}% "
                 f"({a['steps']:,} steps), Pyro {100 * b['test_error']:.2f}% ({b['steps']:,} steps).")
    return text + "\n"


TABLES = {"throughput": throughput_table, "peers": peers_table}


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
