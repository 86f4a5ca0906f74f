"""Semi-supervised MNIST with 10 labels per class, from Python.

    python examples/semi_supervised_mnist.py --data-dir ../shared/data/mnist
    python examples/semi_supervised_mnist.py --data-dir ../shared/data/mnist --smoke   # seconds

Trains the `mnist` preset, then shows what the structured latent buys: the class
posterior q(y|x) of a few test digits and, for one of them, its style z decoded
with every class (a visual analogy, printed as mean pixel intensities per class).
"""

import argparse
import json

import numpy as np

from tfstructvae import get_preset
from tfstructvae.rundir import load_run
from tfstructvae.train import train_and_evaluate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--output-dir", default="runs/example")
    p.add_argument("--smoke", action="store_true", help="a few steps only, to check the set-up")
    args = p.parse_args()

    cfg = get_preset("mnist").override(**{"data.data_dir": args.data_dir})
    if args.smoke:
        cfg = cfg.override(**{"train.epochs": 1, "train.steps_per_epoch": 50})
    metrics = train_and_evaluate(cfg, args.output_dir, overwrite=True, verbose=2)
    print(json.dumps({k: metrics[k] for k in ("test_error", "test_elbo", "wall_time_s")}, indent=2))

    _, model = load_run(args.output_dir)
    from tfstructvae.data import load_dataset
    data = load_dataset("mnist", args.data_dir)
    x = data.x_test[:5].astype("float32") / 255.0
    probs = model.classify(x).numpy()                               # q(y|x): (5, 10)
    print("true labels:     ", data.y_test[:5].tolist())
    print("q(y|x) argmax:   ", probs.argmax(-1).tolist())

    style = model.encode(x[:1])["z"].mean()                         # z of the first digit: (1, D)
    analogies = model.decode(np.arange(10), np.repeat(style, 10, axis=0)).mean()   # (10, 28, 28, 1)
    print("analogy grid mean intensity per class:", np.round(analogies.numpy().mean((1, 2, 3)), 3).tolist())


if __name__ == "__main__":
    main()
