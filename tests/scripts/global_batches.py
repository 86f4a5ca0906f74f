"""Print, as JSON, what this process's replicas get of the first training minibatches (for
tests/test_distribute.py): per step, per local replica, each example's label and pixel sum.

Usage: global_batches.py DATA_NPZ DISTRIBUTE [LOGICAL_CPUS]   (multiworker: TF_CONFIG as usual)
"""
import json
import sys

import tensorflow as tf

data, distribute = sys.argv[1:3]
cpus = int(sys.argv[3]) if len(sys.argv) > 3 else 1
if cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
from tfstructvae import get_preset  # noqa: E402
from tfstructvae.distribution import make_strategy  # noqa: E402
from tfstructvae.train import prepare_training  # noqa: E402

cfg = get_preset("mnist-best").override(**{
    "data.data_dir": data, "data.labels_per_class": 5, "data.validation_size": 0, "data.batch_size": 20,
    "model.hidden_units": (16,), "model.classifier_units": (16,), "train.distribute": distribute})
strategy, _ = make_strategy(distribute)
run = prepare_training(cfg, strategy=strategy)
steps = []
it = iter(run.pipeline(start_step=3))
for _ in range(4):
    element = next(it)
    local = strategy.experimental_local_results(element) if strategy.num_replicas_in_sync > 1 else (element,)
    steps.append([[[int(v) for v in y.numpy()], [round(float(v), 3) for v in tf.reduce_sum(x, [1, 2, 3]).numpy()]]
                  for x, y in local])
print("BATCHES " + json.dumps(steps), flush=True)
