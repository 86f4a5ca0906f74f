"""The train step with the package's Bernoulli pixel log-density against TFP's, in one process.

    python benchmarks/pixel_density.py --out benchmarks/results/pixel_density.json

`families.bernoulli.LogitBernoulli` computes log p(x | logits) as x l - softplus(l); TFP's
Bernoulli as (1 - x) log(1 - p) + x log p, with two softplus terms. For each estimator and XLA
setting both train steps (benchmarks/throughput.py's fixed minibatch) are traced once, then timed
in alternating blocks of 15 steps, 8 blocks each, so that drift on the machine (which moves whole
runs by 10-20% here) falls on both alike. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow_probability as tfp  # noqa: E402

from throughput import step_seconds  # noqa: E402
from tfstructvae.config import get_preset, parse_overrides  # noqa: E402
from tfstructvae.families.bernoulli import LogitBernoulli  # noqa: E402
from tfstructvae.rundir import write_json_atomic  # noqa: E402


def interleaved_ms(steps: dict, blocks: int, per_block: int) -> dict:
    """Median ms per call of each step function, timed in alternating blocks."""
    times = {name: [] for name in steps}
    for _ in range(blocks):
        for name, step in steps.items():
            for _ in range(per_block):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    return {name: 1e3 * statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="mnist-paper")
    p.add_argument("--estimators", default="plugin,enumerate")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--per-block", type=int, default=15)
    args = p.parse_args(argv)
    ours = LogitBernoulli._log_prob
    rows = []
    for estimator in args.estimators.split(","):
        for xla in (True, False):
            cfg = get_preset(args.preset).override(**{**parse_overrides(args.set), "objective.estimator": estimator,
                                                      "train.jit_compile": xla})
            _, package = step_seconds(cfg, cfg.data.batch_size, 3, 3)          # traced with x l - softplus(l)
            LogitBernoulli._log_prob = tfp.distributions.Bernoulli._log_prob
            try:
                _, tfps = step_seconds(cfg, cfg.data.batch_size, 3, 3)         # traced with TFP's form
            finally:
                LogitBernoulli._log_prob = ours
            ms = interleaved_ms({"package": package.timed_step, "tfp": tfps.timed_step}, args.blocks, args.per_block)
            ms = {k: v / package.steps_per_execution for k, v in ms.items()}      # a call runs that many steps
            rows.append({"estimator": estimator, "xla": xla, "step_ms_package": ms["package"], "step_ms_tfp": ms["tfp"],
                         "speedup": ms["tfp"] / ms["package"]})
            print(f"{estimator:9s} xla={xla!s:5s}  package {ms['package']:6.2f} ms  TFP's density {ms['tfp']:6.2f} ms"
                  f"  x{ms['tfp'] / ms['package']:.2f}", flush=True)
    write_json_atomic(args.out, {"results": rows, "preset": args.preset, "overrides": args.set,
                                 "command": " ".join(["python", "benchmarks/pixel_density.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
