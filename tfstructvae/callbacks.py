"""Keras callbacks of the package."""

from __future__ import annotations

import math

import keras


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite objective term."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first step whose logged terms are not finite, and say which term and step.

    Keras's TerminateOnNaN watches only the loss; this names the objective term
    (reconstruction, kl_z, kl_y, classifier, ...) that went bad first. After fit,
    `raise_if_failed()` raises NonFiniteError with that message.
    """

    ORDER = ("reconstruction", "kl_z", "kl_y", "classifier", "entropy", "consistency", "elbo", "loss")

    def __init__(self):
        super().__init__()
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = [k for k in self.ORDER if k in (logs or {}) and not math.isfinite(float(logs[k]))]
        if bad:
            step = int(self.model.optimizer.iterations.numpy())
            self.message = (f"training stopped at step {step} (epoch {self._epoch + 1}, batch {batch + 1}): "
                            f"objective term {bad[0]!r} is {float(logs[bad[0]])}"
                            f"{' (also ' + ', '.join(bad[1:]) + ')' if bad[1:] else ''}")
            self.model.stop_training = True

    def raise_if_failed(self, note: str = ""):
        if self.message:
            raise NonFiniteError(self.message + (f"; {note}" if note else ""))
