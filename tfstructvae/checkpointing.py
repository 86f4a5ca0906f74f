"""Exact resumption: the training state, saved often, atomically, and on SIGINT/SIGTERM.

The state of a run is the model's variables, the optimizer's (with its step
counter), and the sampling-seed generator; the data stream needs only the step
counter, since the pipeline can start at any step (data/pipeline.py). A run
killed at any moment therefore continues from its last checkpoint with the same
weights, the same noise and the same minibatches as if it had not stopped.

tf.train.CheckpointManager writes the checkpoint files first and its index
last, by rename, so the last good checkpoint is never replaced by a partial one;
a checkpoint is never written while a logged term is non-finite.
"""

from __future__ import annotations

import math
import os
import signal

import keras
import tensorflow as tf


def training_state(model) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                               sampling_seed=model.seed_generator.state)


def restore_latest(model, directory: str) -> int:
    """Restore the newest checkpoint in `directory` into `model`; return its step (0 if none)."""
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        return 0
    model.optimizer.build(model.trainable_variables)
    training_state(model).restore(latest).assert_existing_objects_matched()
    return int(model.optimizer.iterations.numpy())


class CheckpointEvery(keras.callbacks.Callback):
    """Save the training state every `every_steps` steps, at epoch ends, and on SIGINT/SIGTERM.

    On a signal the current step finishes, the state is saved, and training stops;
    `interrupted` then says so, and the signal's usual effect is left to the caller.
    """

    def __init__(self, directory: str, every_steps: int, max_to_keep: int = 2):
        super().__init__()
        self.directory, self.every_steps, self.max_to_keep = directory, every_steps, max_to_keep
        self.manager = None
        self.interrupted = None
        self._previous_handlers = {}

    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations.numpy())
        self.manager = tf.train.CheckpointManager(training_state(self.model), self.directory,
                                                  max_to_keep=self.max_to_keep)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:   # not the main thread: signals stay with the caller
                pass

    def _on_signal(self, signum, frame):
        self.interrupted = signal.Signals(signum).name

    def _save(self, logs):
        if any(not math.isfinite(float(v)) for v in (logs or {}).values()
               if isinstance(v, (int, float)) or getattr(v, "shape", None) == ()):
            return
        step = int(self.model.optimizer.iterations.numpy())
        if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(f"-{step}"):
            return
        self.manager.save(checkpoint_number=step)

    def on_train_batch_end(self, batch, logs=None):
        # counted here rather than read from the optimizer: a read per step waits for the device.
        # A call runs `steps_per_execution` steps: save when they passed a multiple of every_steps.
        before, self._step = self._step, self._step + self.model.steps_per_execution
        if self.interrupted or self._step // self.every_steps > before // self.every_steps:
            self._save(logs)
        if self.interrupted:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._save(logs)

    def on_train_end(self, logs=None):
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}


def latest_step(directory: str) -> int:
    latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    return int(latest.rsplit("-", 1)[1]) if latest else 0
