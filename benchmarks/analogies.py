"""How disentangled is the trained model? Analogy accuracy and style consistency.

    python benchmarks/analogies.py RUN_OR_SAVEDMODEL --data-dir ../shared/data/mnist \
        --out benchmarks/results/analogies.json

- analogy_accuracy: for N test images and every class k, decode (source style, k) and ask
  an *independent* classifier which class it shows; the fraction equal to k. The classifier
  is a plain supervised CNN trained here on the full labelled training set (not the
  model's own q(y|x)); its own test accuracy is reported beside it.
- style_consistency: re-encode each analogy at its requested class k and compare the
  recovered style with the source's: R^2 = 1 - sum |z' - z|^2 / sum |z - mean z|^2
  (1 = the style survives the change of class exactly, 0 = no better than the mean style).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def independent_classifier(x_train, y_train, epochs: int, seed: int = 0) -> keras.Model:
    """A small supervised CNN on all training labels (about 99% on MNIST)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(x_train.shape[1:]),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=epochs, verbose=0)
    return model


def measure(codec, classifier, images: np.ndarray) -> dict:
    from tfstructvae.visualize import analogies
    n, k = len(images), codec.num_classes
    grid = analogies(codec, images)                                       # (N, K, H, W, C)
    flat = grid.reshape(n * k, *grid.shape[2:])
    requested = np.tile(np.arange(k), n)
    predicted = classifier.predict(flat, batch_size=1000, verbose=0).argmax(-1)
    _, z_source = codec.encode(images)                                    # (N, D)
    z_re = codec.style_at(flat, requested)                                # (N*K, D)
    z_src = np.repeat(z_source, k, axis=0)
    r2 = 1.0 - np.sum((z_re - z_src) ** 2) / np.sum((z_src - z_src.mean(0)) ** 2)
    per_class = [(predicted[requested == c] == c).mean() for c in range(k)]
    return {"analogy_accuracy": float((predicted == requested).mean()),
            "analogy_accuracy_per_class": [float(a) for a in per_class],
            "style_consistency": float(r2), "n_sources": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a run directory or an exported SavedModel")
    p.add_argument("--data-dir")
    p.add_argument("--out", required=True)
    p.add_argument("--sources", type=int, default=500, help="test images used as style sources")
    p.add_argument("--classifier-epochs", type=int, default=3)
    args = p.parse_args(argv)

    from tfstructvae.data import load_dataset
    from tfstructvae.rundir import write_json_atomic
    from tfstructvae.visualize import Codec
    start = time.time()
    codec = Codec(args.model)
    data = load_dataset("mnist", args.data_dir)
    x_train, x_test = data.x_train.astype(np.float32) / 255.0, data.x_test.astype(np.float32) / 255.0
    classifier = independent_classifier(x_train, data.y_train, args.classifier_epochs)
    clf_acc = float((classifier.predict(x_test, batch_size=1000, verbose=0).argmax(-1) == data.y_test).mean())
    result = measure(codec, classifier, x_test[: args.sources])
    result.update({"classifier_test_accuracy": clf_acc, "model": args.model, "wall_time_s": time.time() - start,
                   "command": " ".join(["python", "benchmarks/analogies.py", *(argv or sys.argv[1:])])})
    print(f"analogy accuracy {100 * result['analogy_accuracy']:.1f}%  style consistency (R^2) "
          f"{result['style_consistency']:.3f}  (independent classifier: {100 * clf_acc:.2f}% on test)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
