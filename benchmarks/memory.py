"""Peak resident memory of training and of serving, and whether either grows.

    python benchmarks/memory.py --data-dir ../shared/data/mnist --out benchmarks/results/memory.json

1. Trains the `mnist` preset (10 labels per class) and records the process's resident set
   size (RSS) at the end of every epoch; growth = last epoch's RSS - second epoch's.
2. Exports the model and pushes 100,000 images through the SavedModel's `classify`
   signature in chunks, recording RSS after each chunk; growth = last - after 10 chunks.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(rss_mb())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--chunk", type=int, default=1000)
    args = p.parse_args(argv)

    import tensorflow as tf
    from tfstructvae import get_preset
    from tfstructvae.data import load_dataset
    from tfstructvae.export import export_saved_model
    from tfstructvae.rundir import load_run, write_json_atomic
    from tfstructvae.train import train_and_evaluate

    work = tempfile.mkdtemp(prefix="tfstructvae-memory-")
    cfg = get_preset("mnist").override(**{"data.data_dir": args.data_dir, "train.epochs": args.epochs,
                                          "train.steps_per_epoch": args.steps_per_epoch})
    tracker = RssPerEpoch()
    start = time.time()
    metrics = train_and_evaluate(cfg, os.path.join(work, "run"), verbose=0, callbacks=[tracker])
    train = {"epochs": cfg.train.epochs, "rss_mb_per_epoch": tracker.values, "peak_rss_mb": peak_rss_mb(),
             "growth_mb_after_first_epoch": tracker.values[-1] - tracker.values[min(1, len(tracker.values) - 1)],
             "test_error": metrics["test_error"], "wall_time_s": time.time() - start}
    print(f"training: peak RSS {train['peak_rss_mb']:.0f} MB; RSS per epoch "
          f"{[round(v) for v in tracker.values]}; growth after epoch 1: {train['growth_mb_after_first_epoch']:+.1f} MB")

    _, model = load_run(os.path.join(work, "run"))
    export_saved_model(model, os.path.join(work, "saved"))
    del model
    served = tf.saved_model.load(os.path.join(work, "saved")).signatures["classify"]
    x = load_dataset("mnist", args.data_dir).x_test.astype(np.float32) / 255.0
    samples, done, start = [], 0, time.time()
    while done < args.requests:
        idx = np.arange(done, done + args.chunk) % len(x)
        served(images=tf.constant(x[idx]))["probabilities"].numpy()
        done += args.chunk
        samples.append(rss_mb())
    serve = {"requests": done, "chunk": args.chunk, "rss_mb_first": samples[0], "rss_mb_last": samples[-1],
             "growth_mb_after_10_chunks": samples[-1] - samples[min(9, len(samples) - 1)],
             "peak_rss_mb_process": peak_rss_mb(), "images_per_sec": done / (time.time() - start)}
    print(f"serving: {done} images in chunks of {args.chunk}: RSS {samples[0]:.0f} -> {samples[-1]:.0f} MB "
          f"(growth after 10 chunks {serve['growth_mb_after_10_chunks']:+.1f} MB), "
          f"{serve['images_per_sec']:.0f} images/s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, {"training": train, "serving": serve,
                                 "command": " ".join(["python", "benchmarks/memory.py", *(argv or sys.argv[1:])])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
