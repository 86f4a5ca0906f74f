"""Keras callbacks of the package."""

from __future__ import annotations

import math
import statistics
import time

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
    LAST = ("entropy", "consistency", "augment", "mixup", "elbo", "loss")

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
        # The loss sums every term but the entropy when its weight is 0 (a zero alpha or KL warm-up
        # keeps a NaN: 0 * NaN = NaN), and a logged term is its running mean over the epoch, which
        # stays non-finite once a step was: reading those two each step finds every failure, with
        # two reads from the device instead of one a term.
        logs = logs or {}
        if "loss" in logs and all(math.isfinite(float(logs[k])) for k in ("loss", "entropy") if k in logs):
            return
        bad = [k for k in self._ordered(logs) if not math.isfinite(float(logs[k]))]
        if bad:
            step = int(self.model.optimizer.iterations.numpy())
            self.message = (f"training stopped at step {step} (epoch {self._epoch + 1}, batch {batch + 1}): "
                            f"objective term {bad[0]!r} is {float(logs[bad[0]])}"
                            f"{' (also ' + ', '.join(bad[1:]) + ')' if bad[1:] else ''}")
            self.model.stop_training = True

    def raise_if_failed(self, note: str = ""):
        if self.message:
            raise NonFiniteError(self.message + (f"; {note}" if note else ""))


class EpochTime(keras.callbacks.Callback):
    """Logs `epoch_time_s`, the wall time of the epoch's training steps (validation excluded),
    so history.csv and TensorBoard show throughput next to the loss."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):      # fit validates after the epoch's last step
        self._steps_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and hasattr(self, "_start"):
            logs["epoch_time_s"] = (self._steps_end or time.perf_counter()) - self._start


class History(keras.callbacks.CSVLogger):
    """history.csv: one row per epoch, one column per logged figure.

    Keras' CSVLogger adds a `val_` column for every figure when the first epoch has none (it
    cannot know whether validation comes later); a run without a validation split then carries
    a column of NA per figure. Here validation runs after every epoch or never, so the columns
    are the first epoch's figures."""

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and logs:
            self.keys = sorted(logs)
        super().on_epoch_end(epoch, logs)


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


class FasterStep(keras.callbacks.Callback):
    """`train.jit_compile = "auto"`: time the training step with XLA and without on the run's first
    steps, and keep the faster one for the rest of the run.

    Neither is faster everywhere. On this project's 2-core CPU XLA fuses the elementwise work
    around the matrix products and wins where that dominates (`mnist-paper`'s 2-d style), but its
    matrix products are slower than TensorFlow's oneDNN kernels, so it loses where the enumerated
    decoder's products dominate (MLP-500 with a 50-d style: 38 against 26 ms a step); on a GPU it
    usually wins. The steps timed are ordinary training steps, nothing is spent but one extra
    trace: `warmup` steps of each kind come first and are not timed (the first of each compiles),
    then the two kinds alternate step by step for `timed` steps each and their medians are
    compared. Alternating, not one block after the other, so that a change in the machine's load
    during the timing (another process starting, a CPU clock settling) falls on both alike. The
    model compiled with XLA comes first; its compiled function is kept and reused, as is the other
    once built. `chosen` (True: XLA) and `step_ms` record the outcome; the choice is said once.
    """

    def __init__(self, warmup: int = 3, timed: int = 20, clock=time.perf_counter, log=print):
        super().__init__()
        self.warmup, self.timed, self.clock, self.log = warmup, timed, clock, log
        self.chosen = None                      # True: XLA, False: without
        self.step_ms = {}                       # {True: median ms with XLA, False: without}
        # The kind of every step until the choice: XLA's warm-up, the other's, then alternating.
        self._schedule = [True] * warmup + [False] * warmup + [True, False] * timed
        self._times = {True: [], False: []}
        self._step = 0
        self._functions = {}
        self._start = None

    def _use(self, xla: bool) -> None:
        m = self.model
        if bool(m.jit_compile) == xla and m.train_function is self._functions.get(xla):
            return
        m.jit_compile = xla
        if xla in self._functions:
            m.train_function = self._functions[xla]
        else:
            m.make_train_function(force=True)
            self._functions[xla] = m.train_function
        m.test_function = m.predict_function = None      # rebuilt with the step's setting when next needed

    def on_train_begin(self, logs=None):
        if self.chosen is not None:
            return
        if not self.model.jit_compile:
            raise ValueError("FasterStep starts from the XLA step: compile the model with jit_compile=True")
        self._functions.setdefault(True, self.model.train_function)

    def on_train_batch_begin(self, batch, logs=None):
        self._start = self.clock() if self.chosen is None else None

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            return
        if logs:   # the step's outputs are ready once one is read (on a GPU the call returns first)
            float(next(iter(logs.values())))
        elapsed = (self.clock() - self._start) / self.model.steps_per_execution   # a call runs that many steps
        if self._step >= 2 * self.warmup:
            self._times[bool(self.model.jit_compile)].append(elapsed)
        self._step += 1
        if self._step < len(self._schedule):
            self._use(self._schedule[self._step])
            return
        self.step_ms = {k: 1000 * statistics.median(v) for k, v in self._times.items()}
        self.chosen = self.step_ms[True] <= self.step_ms[False]
        self._use(self.chosen)
        self.log(f"train step: {self.step_ms[True]:.1f} ms with XLA, {self.step_ms[False]:.1f} ms without "
                 f"(medians of {self.timed} steps each, alternating): training continues "
                 f"{'with' if self.chosen else 'without'} XLA (set train.jit_compile to true or false to fix it)")
