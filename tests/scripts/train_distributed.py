"""Run `tfstructvae train` in this process on a small configuration (for tests/test_distribute.py).

Usage: train_distributed.py DATA_NPZ RUN_DIR DISTRIBUTE [LOGICAL_CPUS] [extra CLI args...]
With LOGICAL_CPUS > 1 the CPU is split into that many logical devices first (MirroredStrategy then
has that many replicas); multiworker reads TF_CONFIG from the environment as usual.
"""
import sys

import tensorflow as tf

data, run_dir, distribute = sys.argv[1:4]
cpus = int(sys.argv[4]) if len(sys.argv) > 4 else 1
if cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
import keras  # noqa: E402

keras.config.disable_traceback_filtering()
from tfstructvae.cli import main  # noqa: E402

sys.exit(main(["train", "--preset", "mnist-paper", "--data-dir", data, "--output-dir", run_dir,
               "--distribute", distribute, "--labels-per-class", "5", "--validation-size", "0",
               "--epochs", "2", "--steps-per-epoch", "5", "--batch-size", "20", "--seed", "0",
               "--set", "model.hidden_units=[32]", "--set", "train.deterministic=true",
               "--verbose", "0", *sys.argv[5:]]))
