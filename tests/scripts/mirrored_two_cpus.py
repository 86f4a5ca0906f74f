"""Train a few steps under MirroredStrategy on two logical CPUs (run in its own process).

Usage: mirrored_two_cpus.py ESTIMATOR. XLA is off: on *logical* CPU devices XLA cannot read a
replica's variables placed on the other device (an XLA limitation, not ours); on GPUs each
replica compiles on its own device.
"""
import sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfstructvae.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig
from tfstructvae.data import training_pipeline
from tfstructvae.train import build_model, compile_model
cfg = Config(data=DataConfig(batch_size=32, supervision_rate=0.5), model=ModelConfig(hidden_units=(32,)),
             objective=ObjectiveConfig(estimator=sys.argv[1]), train=TrainConfig(jit_compile=False, steps_per_execution=5))
rng = np.random.default_rng(0)
ds, _ = training_pipeline(rng.integers(0, 255, (200, 28, 28, 1), dtype=np.uint8),
                          rng.integers(0, 255, (50, 28, 28, 1), dtype=np.uint8), np.arange(50) % 10, cfg.data)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = compile_model(build_model(cfg, (28, 28, 1)), cfg, 5)
h = model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
print("steps per call", model.steps_per_execution)    # 5 asked: Keras's loop of steps fails under the strategy
print("replicas", strategy.num_replicas_in_sync, "loss", h.history["loss"], "acc", h.history["labelled_accuracy"])
