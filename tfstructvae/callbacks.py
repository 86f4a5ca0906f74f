"""Keras callbacks of the package."""

from __future__ import annotations

import math

import keras


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite objective term."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first step whose logged terms are not finite, and say which term and step.

    Keras's TerminateOnNaN watches only the loss; this names the objective term
    (reconstruction, kl/<node>, log_q/<node>, ...) that went bad first. After fit,
    `raise_if_failed()` raises NonFiniteError with that message.
    """

    # The terms, then what is computed from them: the first bad one in this order is the cause.
    FIRST = ("reconstruction",)
    LAST = ("entropy", "consistency", "augment", "elbo", "loss")

    def _ordered(self, logs):
        middle = sorted(k for k in logs if k.startswith(("kl/", "log_q/")))
        return [k for k in (*self.FIRST, *middle, *self.LAST) if k in logs]

    def __init__(self):
        super().__init__()
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = [k for k in self._ordered(logs or {}) if not math.isfinite(float(logs[k]))]
        if bad:
            step = int(self.model.optimizer.iterations.numpy())
            self.message = (f"training stopped at step {step} (epoch {self._epoch + 1}, batch {batch + 1}): "
                            f"objective term {bad[0]!r} is {float(logs[bad[0]])}"
                            f"{' (also ' + ', '.join(bad[1:]) + ')' if bad[1:] else ''}")
            self.model.stop_training = True

    def raise_if_failed(self, note: str = ""):
        if self.message:
            raise NonFiniteError(self.message + (f"; {note}" if note else ""))


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar showing only `shown` of the logged figures ("all" or None: every one).

    Every figure still reaches the other callbacks (TensorBoard, CSVLogger); this filters what
    is printed, so that an epoch's line stays readable in a narrow terminal.
    """

    def __init__(self, shown=("loss", "elbo", "val_accuracy")):
        super().__init__()
        self.shown = None if shown in (None, "all", ("all",)) else tuple(shown)

    def _filter(self, logs):
        if self.shown is None or logs is None:
            return logs
        return {k: v for k, v in logs.items() if k in self.shown}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._filter(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._filter(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._filter(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self._filter(logs))
