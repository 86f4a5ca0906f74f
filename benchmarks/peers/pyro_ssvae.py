"""The M2 model in Pyro, as Pyro's semi-supervised VAE example (examples/vae/ss_vae_M2.py) builds it.

    pip install -e '.[peers]'
    python benchmarks/peers/pyro_ssvae.py --data-dir ../shared/data/mnist --out pyro.json [--seconds 180]

The model: p(z) = N(0, I) (50-d), p(y) uniform over 10 classes, p(x | y, z) Bernoulli from an MLP;
the guide: q(y | x) from an MLP with a softmax, q(z | x, y) Normal from an MLP; every MLP has one
hidden layer of 500 softplus units. `TraceEnum_ELBO` sums y out exactly on unlabelled minibatches
(parallel enumeration: one batched pass over the 10 classes), and labelled minibatches add the
auxiliary classifier loss, alpha (-log q(y | x)), as a second SVI objective (Kingma et al. 2014).
Adam, minibatches of 100.

Two measurements, written as JSON:
- `timing`: examples/s of the SVI steps on one fixed unlabelled minibatch and on one fixed
  labelled minibatch (both objectives), median over `--steps` after `--warmup`, with the shapes
  of the matrix products each step runs (`matmul_shapes`), and torch's best matrix-product rate on
  this machine (`peak_gflops`), so that compare_peers.py can set the two sides' work side by side.
- with `--seconds S`: training on real MNIST with `--labels-per-class` labels (a labelled minibatch
  with probability `--supervision-rate`, drawn from the labelled images, as `rate` supervision does
  in tfstructvae) for S seconds of wall time, then the test error of q(y | x).
Torch runs on `--threads` threads. Nothing else may run on the machine while it times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import Adam
from torch import nn

K, PIXELS = 10, 784


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Softplus(), nn.Linear(hidden, d_out))


class M2(nn.Module):
    def __init__(self, z_dim: int = 50, hidden: int = 500, alpha: float = 46.0):
        super().__init__()
        self.z_dim, self.alpha = z_dim, alpha
        self.encoder_y = mlp(PIXELS, hidden, K)
        self.encoder_z = mlp(PIXELS + K, hidden, 2 * z_dim)
        self.decoder = mlp(z_dim + K, hidden, PIXELS)

    def _cat(self, x, y):   # y broadcast against x along the enumeration dimension
        shape = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        return torch.cat([x.expand(*shape, x.shape[-1]), y.expand(*shape, y.shape[-1])], -1)

    def model(self, xs, ys=None):
        pyro.module("m2", self)
        with pyro.plate("data", xs.shape[0]):
            z = pyro.sample("z", dist.Normal(xs.new_zeros(self.z_dim), 1.0).expand([xs.shape[0], self.z_dim])
                            .to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(logits=xs.new_zeros(K)).expand([xs.shape[0]]), obs=ys)
            logits = self.decoder(self._cat(z, y))
            # pixel intensities in [0, 1], not bits: the example turns off the support check too
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(logits=self.encoder_y(xs)))
            loc, log_scale = self.encoder_z(self._cat(xs, ys)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def model_classify(self, xs, ys):
        pyro.module("m2", self)
        with pyro.plate("data", xs.shape[0]), pyro.poutine.scale(scale=self.alpha):
            pyro.sample("y_aux", dist.OneHotCategorical(logits=self.encoder_y(xs)), obs=ys)

    def guide_classify(self, xs, ys):
        pass


def objectives(model: M2, lr: float):
    optimizer = Adam({"lr": lr})
    elbo = SVI(model.model, config_enumerate(model.guide, "parallel"), optimizer,
               loss=TraceEnum_ELBO(max_plate_nesting=1))
    aux = SVI(model.model_classify, model.guide_classify, optimizer, loss=Trace_ELBO())
    return elbo, aux


def step(elbo, aux, xs, ys=None):
    loss = elbo.step(xs, ys)
    if ys is not None:
        loss += aux.step(xs, ys)
    return loss


def matmul_shapes(batch: int, kind: str, z_dim: int = 50, hidden: int = 500) -> list[tuple[int, int, int]]:
    """(rows, d_in, d_out) of every nn.Linear product in one forward pass of `step`: on an
    unlabelled minibatch encoder_y reads the B images, and parallel enumeration runs encoder_z
    and the decoder on K x B rows (x or z broadcast against each class); on a labelled one the
    ELBO step runs encoder_z and the decoder on the B rows once, and the classifier step
    encoder_y on them."""
    rows = K * batch if kind == "unlabelled" else batch
    return [(batch, PIXELS, hidden), (batch, hidden, K),                       # encoder_y
            (rows, PIXELS + K, hidden), (rows, hidden, 2 * z_dim),             # encoder_z
            (rows, z_dim + K, hidden), (rows, hidden, PIXELS)]                 # decoder


def peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """torch's best float32 matrix-product rate here: an n x n x n product, median of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def timing(batch: int, steps: int, warmup: int, lr: float) -> dict:
    rng = np.random.default_rng(0)
    xs = torch.tensor(rng.uniform(size=(batch, PIXELS)), dtype=torch.float32)
    ys = nn.functional.one_hot(torch.tensor(rng.integers(0, K, batch)), K).float()
    out = {}
    for kind, labels in (("unlabelled", None), ("labelled", ys)):
        pyro.clear_param_store()
        model = M2()
        elbo, aux = objectives(model, lr)
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            step(elbo, aux, xs, labels)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        out[kind] = {"step_ms": 1e3 * seconds, "examples_per_sec": batch / seconds,
                     "matmul_shapes": matmul_shapes(batch, kind)}
    return out


def train_for(seconds: float, data_dir: str, labels_per_class: int, rate: float, batch: int, lr: float,
              seed: int) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from tfstructvae.data import labelled_split, load_dataset
    data = load_dataset("mnist", data_dir)
    x = torch.tensor(data.x_train.reshape(-1, PIXELS) / 255.0, dtype=torch.float32)
    y = nn.functional.one_hot(torch.tensor(data.y_train.astype(np.int64)), K).float()
    split = labelled_split(data.y_train, labels_per_class, K, seed)
    labelled, unlabelled = torch.tensor(split.labelled), torch.tensor(split.unlabelled)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    pyro.clear_param_store()
    model = M2()
    elbo, aux = objectives(model, lr)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if rng.uniform() < rate:
            rows = labelled[torch.tensor(rng.integers(0, len(labelled), batch))]
            step(elbo, aux, x[rows], y[rows])
        else:
            rows = unlabelled[torch.tensor(rng.integers(0, len(unlabelled), batch))]
            step(elbo, aux, x[rows])
        steps += 1
    trained = time.perf_counter() - start
    with torch.no_grad():
        x_test = torch.tensor(data.x_test.reshape(-1, PIXELS) / 255.0, dtype=torch.float32)
        guess = model.encoder_y(x_test).argmax(-1).numpy()
    return {"train_seconds": trained, "steps": steps, "test_error": float(np.mean(guess != data.y_test)),
            "labels_per_class": labels_per_class, "supervision_rate": rate}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seconds", type=float, help="also train on real MNIST for this long and report the test error")
    p.add_argument("--data-dir")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--supervision-rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"peer": "pyro", "pyro": pyro.__version__, "torch": torch.__version__, "threads": args.threads,
              "batch_size": args.batch_size, "timing": timing(args.batch_size, args.steps, args.warmup,
                                                              args.learning_rate),
              "peak_gflops": peak_gflops()}
    if args.seconds:
        result["accuracy"] = train_for(args.seconds, args.data_dir, args.labels_per_class, args.supervision_rate,
                                       args.batch_size, args.learning_rate, args.seed)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
