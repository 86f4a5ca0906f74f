"""train_and_evaluate(config, run_dir): the whole job, importable and testable.

`prepare_training(cfg)` builds what a training needs (data, labelled split,
pipeline, model); `train_and_evaluate` adds the run directory (rundir.py),
callbacks, checkpoints and the final test evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tfstructvae.callbacks import EpochTime, FasterStep, History, ProgressBar, StopOnNonFinite
from tfstructvae.checkpointing import CheckpointEvery, latest_step, restore_latest
from tfstructvae.config import Config, ConfigError, get_preset
from tfstructvae.data.pipeline import missing_labels
from tfstructvae.distribution import (PEER_FAILURES, distribute_global_batches, is_chief, make_strategy, worker_lost,
                                      xla_refusal)
from tfstructvae.data import (ImageDataset, LabelledSplit, epoch_steps, evaluation_pipeline, labelled_split, load_dataset,
                              training_pipeline)
from tfstructvae.data.records import take_rows
from tfstructvae.model import StructuredVAE
from tfstructvae.selftraining import with_teacher_labels
from tfstructvae.rundir import (RunDirError, check_run_dir, load_run, prepare_run_dir, read_run_config,  # noqa: F401
                                write_json_atomic)
from tfstructvae.visualize import ImageSummaries

EVAL_BATCH = 500


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped training after its state was saved."""


def build_model(cfg: Config, image_shape) -> StructuredVAE:
    return StructuredVAE.from_config(cfg, image_shape)


class Adam(keras.optimizers.Adam):
    """Adam whose weight average (`use_ema`) replaces the model's weights only when asked
    (`average_weights`): Keras does it at the end of every `fit` call, and a run resumed in the
    middle of an epoch calls `fit` twice, so the second call would go on from the average."""

    def __init__(self, *args, ema_ramp: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_ramp = ema_ramp

    def get_config(self):
        return {**super().get_config(), "ema_ramp": self.ema_ramp}

    def update_step(self, gradient, variable, learning_rate):
        """Keras's Adam step, the same arithmetic (m += (1 - b1)(g - m), v += (1 - b2)(g^2 - v),
        w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)), as TensorFlow's fused kernel:
        one pass over a variable and its two moments where Keras's three assignments make three,
        and on the CPU without XLA one multi-threaded kernel instead of a dozen small ones. The
        update is memory-bound (7 reads and writes a weight), up to a fifth of a small model's step."""
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        t = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, t), beta2_power=tf.pow(beta_2, t), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))

    def _update_model_variables_moving_average(self, trainable_variables):
        """Keras's update of the weight average, with the momentum ramped up along the steps when
        `ema_ramp` (train.ema_ramp): min(ema_momentum, (1 + t) / (10 + t)) at step t."""
        if not (self.use_ema and self.ema_ramp):
            return super()._update_model_variables_moving_average(trainable_variables)
        t = keras.ops.cast(self.iterations, "float32")
        momentum = keras.ops.minimum(self.ema_momentum, (1.0 + t) / (10.0 + t))
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = keras.ops.cast(momentum, var.dtype)
                average.assign(m * average + (1.0 - m) * var)

    def finalize_variable_values(self, var_list):
        pass

    def average_weights(self, var_list):
        super().finalize_variable_values(var_list)


def weight_average_callbacks(cfg: Config, at_epoch_end: bool = False) -> list:
    """Validation during fit reads the weight average, when there is one (train.ema_momentum);
    `at_epoch_end`: the later callbacks' `on_epoch_end` read it too (scoring of their own)."""
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=at_epoch_end)] if cfg.train.ema_momentum else []


def steps_per_execution(cfg: Config, steps_per_epoch: int) -> int:
    """train.steps_per_execution, or the largest number below it that divides the epoch's steps:
    Keras runs whole executions, so one that does not divide them would run past the epoch's end
    (and a resumed epoch's remainder, a multiple of it, would not line up)."""
    wanted = cfg.train.steps_per_execution
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        # Keras 3.15's loop of steps inside one call fails under MirroredStrategy, a one-layer
        # model too (docs/results.md, "Session 32"): one step a call there.
        return 1
    return max(n for n in range(1, min(wanted, steps_per_epoch) + 1) if steps_per_epoch % n == 0)


def compile_model(model: StructuredVAE, cfg: Config, steps_per_epoch: int) -> StructuredVAE:
    """Compile for training under the current tf.distribute strategy (call it in its scope).
    `model.xla_refusal` says why XLA is off when the strategy's devices cannot compile the step."""
    lr = cfg.train.learning_rate
    if cfg.train.lr_decay == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=cfg.train.epochs * steps_per_epoch)
    # "auto" starts with XLA; train_and_evaluate's FasterStep may switch it off after timing both.
    model.xla_refusal = xla_refusal(tf.distribute.get_strategy())
    jit = cfg.train.jit_compile is not False and model.xla_refusal is None
    ema = cfg.train.ema_momentum
    model.compile(optimizer=Adam(lr, weight_decay=cfg.train.weight_decay or None,
                                 clipvalue=cfg.train.clip_value or None,
                                 global_clipnorm=cfg.train.global_clip_norm or None,
                                 use_ema=ema > 0, ema_momentum=ema or 0.99, ema_ramp=cfg.train.ema_ramp),
                  jit_compile=jit, steps_per_execution=steps_per_execution(cfg, steps_per_epoch))
    # Create the optimizer's slots now: variables created inside the first trace make
    # tf.function trace the step a second time.
    model.optimizer.build(model.trainable_variables)
    return model


def load_data(cfg: Config) -> ImageDataset:
    return load_dataset(cfg.data.dataset, cfg.data.data_dir, verify_checksum=cfg.data.verify_checksum,
                        use_extra=cfg.data.use_extra)


def _write_hparams(log_dir: str, cfg: Config) -> None:
    from tensorboard.plugins.hparams import api as hp
    flat = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        else:
            flat[section] = values
    with tf.summary.create_file_writer(os.path.join(log_dir, "train")).as_default():
        hp.hparams(flat)
        tf.summary.text("config", "```\n" + cfg.to_json() + "\n```", step=0)


@dataclass
class Training:
    """What a training needs, built from a Config: `train_and_evaluate` and the benchmarks share it."""
    cfg: Config
    data: ImageDataset
    split: LabelledSplit
    steps: int                              # steps in an epoch
    validation: tf.data.Dataset | None      # the held-out part of the training set, if any
    model: StructuredVAE
    strategy: tf.distribute.Strategy | None = None
    taught: dict = field(default_factory=dict)   # what `data.teacher` added (`with_teacher_labels`)
    taught_data: ImageDataset | None = None      # `data` with the teachers' labels, what the pipeline feeds

    def pipeline(self, start_step: int = 0) -> tf.data.Dataset:
        """The training minibatches from `start_step` on (the same stream for any start); under
        several replicas, each replica's slice of them (`distribute_global_batches`)."""
        if self.strategy is not None:
            return distribute_global_batches(self.strategy, lambda: self.global_pipeline(start_step))
        return self.global_pipeline(start_step)

    def global_pipeline(self, start_step: int = 0) -> tf.data.Dataset:
        x, split = self.data.x_train, self.split
        taught = self.data if self.taught_data is None else self.taught_data
        labelled = node_labels(self.cfg, taught, "train", split.labelled)
        unlabelled = node_labels(self.cfg, self.data, "train", split.unlabelled, with_class=False)
        if isinstance(unlabelled, dict) and self.cfg.data.node_labels == "labelled":
            unlabelled = {k: missing_labels(np.asarray(v), len(v)) for k, v in unlabelled.items()}
        ds, _ = training_pipeline(take_rows(x, split.unlabelled), take_rows(x, split.labelled), labelled, self.cfg.data,
                                  start_step=start_step, num_classes=self.data.num_classes,
                                  y_unlabelled=unlabelled if isinstance(labelled, dict) else None)
        return ds


def node_labels(cfg: Config, data: ImageDataset, part: str, index=None, with_class: bool = True):
    """The labels the model sees for examples `index` of the train or test part.

    The dataset's class labels for a graph whose only labelled node is the class (an array,
    as for M2); else {node: labels}: the class (or -1 without `with_class`) and every other
    labelled node's labels from the dataset (`y_<node>_train` / `y_<node>_test` in a .npz).
    """
    graph = cfg.model.latent_graph()
    y = data.y_train if part == "train" else data.y_test
    index = np.arange(len(y)) if index is None else index
    classes = [n.name for n in graph.classifier_nodes[:1]]
    others = [n.name for n in graph.labelled_nodes if n.name not in classes]
    if not others:
        return y[index]
    stored = data.node_labels_train if part == "train" else data.node_labels_test
    missing = [n for n in others if n not in stored]
    if missing:
        raise ConfigError(f"the graph's labelled nodes {missing} have no labels in {data.name} ({data.source}); "
                          f"a .npz gives node n its labels as arrays y_n_train and y_n_test")
    labels = {n: np.asarray(stored[n])[index] for n in others}
    if classes:
        labels[classes[0]] = y[index] if with_class else np.full(len(index), -1, np.int64)
    return labels


def resolve_for_data(cfg: Config, data: ImageDataset) -> Config:
    """What the data decides, written into the configuration that is saved with the run: the
    image shape, the class count of the default graph, and a validation hold-out of at most a
    tenth of the training set (so a small dataset still trains with a preset's 5,000)."""
    changes = {"model.image_shape": data.image_shape,
               "data.validation_size": min(cfg.data.validation_size, len(data.y_train) // 10)}
    if cfg.model.image_shape is not None and tuple(cfg.model.image_shape) != data.image_shape:
        raise ConfigError(f"model.image_shape={tuple(cfg.model.image_shape)} but {data.name} holds images of "
                          f"shape {data.image_shape}")
    if cfg.model.graph is None:
        changes["model.num_classes"] = data.num_classes
    graph = cfg.override(**changes).model.latent_graph()
    if graph.classifier_nodes and graph.label.size != data.num_classes:
        raise ConfigError(f"the graph's class node {graph.label.name!r} has {graph.label.size} values but "
                          f"{data.name} has {data.num_classes} classes")
    return cfg.override(**changes).validate()


def prepare_training(cfg: Config, data: ImageDataset | None = None,
                     strategy: tf.distribute.Strategy | None = None) -> Training:
    """Load the data, draw the labelled split, count an epoch's steps, build and compile the model
    (in `strategy`'s scope when given).

    `cfg` is resolved against the data first (`resolve_for_data`); `Training.cfg` holds the result.
    """
    cfg.validate()
    data = data if data is not None else load_data(cfg)
    cfg = resolve_for_data(cfg, data)
    split = labelled_split(data.y_train, cfg.data.labels_per_class, data.num_classes,
                           cfg.data.label_seed, cfg.data.validation_size)
    taught_data, taught = None, {}
    if cfg.data.teacher:
        taught_data, split, taught = with_teacher_labels(cfg, data, split)
        print(f"self-training: {taught['teacher_labelled']:,} of {taught['unlabelled']:,} unlabelled images labelled "
              f"by {len(cfg.data.teacher)} teacher run(s) (probability >= {cfg.data.teacher_threshold})", flush=True)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.train.init_seed)
    # the images a teacher labelled are counted once, as in the teacher's epochs
    n_labelled = len(split.labelled) - taught.get("teacher_labelled", 0)
    steps = cfg.train.steps_per_epoch or epoch_steps(len(split.unlabelled), n_labelled, cfg.data.batch_size)
    validation = (evaluation_pipeline(data.x_train[split.validation],
                                      node_labels(cfg, data, "train", split.validation), EVAL_BATCH)
                  if len(split.validation) else None)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = compile_model(build_model(cfg, data.image_shape), cfg, steps)
    model.set_labelled_tail(*labelled_tail(cfg, data, split))
    model.set_label_rows(label_rows(cfg, data, split))
    if cfg.data.supervision_mode == "rate" and 0 < cfg.data.supervision_rate < 1:
        # a labelled minibatch is labelled throughout: its labels are not enumerated
        model.set_labelled_batches(labelled_pool_nodes(cfg, data, split))
    return Training(cfg, data, split, steps, validation, model, strategy, taught, taught_data)


def labelled_tail(cfg: Config, data: ImageDataset, split: LabelledSplit) -> tuple[int, tuple[str, ...]]:
    """The labelled examples at the end of every training minibatch that the step computes apart
    (`StructuredVAE.set_labelled_tail`), and the categorical nodes whose labels the labelled pool
    holds in full: what `Training.pipeline` guarantees the step.

    Only minibatches that are labelled throughout (labelled_share or supervision_rate 1: the
    supervised baselines) are declared. There it pays: `mnist-best` with every example labelled
    takes 44.1 against 60.7 ms a step with XLA, 26.9 against 46.8 ms without. With a labelled
    fifth of each minibatch (`share` 0.2) the two passes cost more than the decoder rows they save
    at 10 classes: 64.0 against 61.6 ms, 49.6 against 42.9 ms (benchmarks/throughput.py, 2 cores;
    benchmarks/results/throughput_mnist_best_*labelled_tail*.json).
    """
    d = cfg.data
    share = d.supervision_rate if d.supervision_mode == "rate" else d.labelled_share
    if share < 1:
        return 0, ()
    return d.batch_size, labelled_pool_nodes(cfg, data, split)


def label_rows(cfg: Config, data: ImageDataset, split: LabelledSplit) -> int:
    """How many rows at the end of every training minibatch can carry a label
    (`StructuredVAE.set_label_rows`); 0 when a label can sit on any row.

    In `share` mode the pipeline lays every minibatch out with its round(share * B) labelled
    examples last. That holds for the class; another node's labels may also sit on unlabelled
    images (`data.node_labels` other than "labelled", `node_labelled_share`), so those graphs
    declare nothing."""
    d = cfg.data
    if d.supervision_mode != "share" or not 0 < d.labelled_share < 1 or d.node_labelled_share:
        return 0
    if isinstance(node_labels(cfg, data, "train", split.labelled[:1]), dict) and d.node_labels != "labelled":
        return 0
    return round(d.labelled_share * d.batch_size)


def labelled_pool_nodes(cfg: Config, data: ImageDataset, split: LabelledSplit) -> tuple[str, ...]:
    """The categorical nodes whose labels every example of the labelled pool carries."""
    graph = cfg.model.latent_graph()
    labels = node_labels(cfg, data, "train", split.labelled)
    if not isinstance(labels, dict):
        labels = {graph.label.name: labels}
    return tuple(n for n, v in labels.items()
                 if graph[n].family == "categorical" and len(v) and np.all(np.asarray(v) >= 0))


def train_and_evaluate(cfg: Config, run_dir: str, overwrite: bool = False, resume: bool = False,
                       verbose="auto", callbacks=(), test: bool = True) -> dict:
    """Train `cfg` into `run_dir`, evaluate on the test set, write metrics.json; return the metrics.
    `test=False` leaves the test set unscored (a validation study: metrics.json then holds the
    held-out `validation_error` and no test figure; `evaluate_run` scores the test set later).

    Under `train.distribute="multiworker"` every worker calls this with the same arguments; the
    chief alone writes the run directory (config, logs, history, weights, metrics), the others
    save their share of each checkpoint to a temporary directory, as TensorFlow's multi-worker
    checkpointing requires, and resume from the chief's (a directory all workers can read).
    """
    start = time.time()
    cfg.validate()
    strategy, cluster = make_strategy(cfg.train.distribute)
    chief = is_chief(cluster)
    if chief:
        check_run_dir(run_dir, overwrite, resume)
    data = load_data(cfg)   # fail on bad data before touching the run directory
    made, teacher, teacher_dirs = False, {}, ()
    if cfg.data.teacher_preset:
        # the run directory (and its config.json) first, so that a run cut short while its
        # teacher trains is resumed like any other
        cfg = resolve_for_data(cfg, data)
        if not resume and chief:
            prepare_run_dir(run_dir, overwrite=overwrite)
            write_json_atomic(os.path.join(run_dir, "config.json"), cfg.to_dict())
            made = True
        teacher_dir, teacher = train_preset_teacher(cfg, run_dir, verbose=verbose, test=test)
        teacher_dirs = (teacher_dir,)
        start = time.time()     # the student's own time from here; the teacher's is in `teacher`
    # refuses an impossible split before the run dir is made
    run = prepare_training(cfg.override(**{"data.teacher": cfg.data.teacher + teacher_dirs}), data, strategy)
    # the saved configuration names the trained teacher by its preset, not its directory, so that
    # the run directory can move
    cfg = run.cfg.override(**{"data.teacher": cfg.data.teacher})
    saved = read_run_config(run_dir) if resume else None
    if resume and saved != cfg:
        _check_extension(saved, cfg, run_dir)
        if chief:     # a longer run of the same settings: it goes on to cfg.train.epochs
            write_json_atomic(os.path.join(run_dir, "config.json"), cfg.to_dict())
    if not resume and chief and not made:
        prepare_run_dir(run_dir, overwrite=overwrite)
        write_json_atomic(os.path.join(run_dir, "config.json"), cfg.to_dict())
    model, steps, validation, split = run.model, run.steps, run.validation, run.split
    if model.xla_refusal:
        print(model.xla_refusal, flush=True)
    if model.steps_per_execution != cfg.train.steps_per_execution and verbose != 0:
        why = ("one under a strategy with several replicas" if strategy.num_replicas_in_sync > 1
               else f"the largest number that divides the epoch's {steps} steps")
        print(f"train.steps_per_execution={cfg.train.steps_per_execution}: {model.steps_per_execution} steps "
              f"run per call instead ({why})", flush=True)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    start_step = restore_latest(model, ckpt_dir) if resume else 0
    save_dir = ckpt_dir if chief else tempfile.mkdtemp(prefix="tfstructvae-worker-checkpoints-")

    log_dir = os.path.join(run_dir, "logs")
    if not resume and chief:
        _write_hparams(log_dir, cfg)
    guard = StopOnNonFinite()
    saver = CheckpointEvery(save_dir, cfg.train.checkpoint_every_steps or steps)
    # First in the list, so that its step times exclude the other callbacks' work. Not across
    # workers: each would time its own steps and might choose differently from the others.
    chooser = (FasterStep(log=print if verbose != 0 else (lambda message: None))
               if cfg.train.jit_compile == "auto" and model.jit_compile and not cfg.train.deterministic
               and cluster is None else None)
    writers = [History(os.path.join(run_dir, "history.csv"), append=True),
               keras.callbacks.TensorBoard(log_dir, update_freq="epoch"),
               ImageSummaries(log_dir, data.x_test[:8].astype(np.float32) / 255.0)] if chief else []
    cbs = [*([chooser] if chooser else []), EpochTime(), guard, saver, ProgressBar(cfg.train.progress_metrics),
           *weight_average_callbacks(cfg), *writers, *callbacks]

    def fit(first_step, initial_epoch, epochs, steps_per_epoch):
        model.fit(run.pipeline(first_step), epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, validation_data=validation, callbacks=cbs,
                  verbose=verbose, shuffle=False)

    epoch, offset = divmod(start_step, steps)
    try:
        if offset:   # finish the epoch the interruption cut short, on the same minibatches
            fit(start_step, epoch, epoch + 1, steps - offset)
            epoch += 1
        if epoch < cfg.train.epochs and not (saver.interrupted or guard.message):
            fit(epoch * steps, epoch, cfg.train.epochs, steps)
    except PEER_FAILURES as e:
        if cluster is None:
            raise
        raise worker_lost(e, ckpt_dir) from None
    finally:
        if not chief:      # a worker's share of the checkpoints is kept by the chief alone
            shutil.rmtree(save_dir, ignore_errors=True)
    guard.raise_if_failed(f"the last good state is kept in {ckpt_dir}; no weights or metrics were written")
    if saver.interrupted:
        raise TrainingInterrupted(
            f"interrupted by {saver.interrupted} at step {int(model.optimizer.iterations.numpy())}; "
            f"the state is saved in {ckpt_dir}: continue with --resume")
    train_time = time.time() - start
    model.optimizer.average_weights(model.trainable_variables)     # no-op without train.ema_momentum
    if chief:
        model.save_weights(os.path.join(run_dir, "model.weights.h5"))

    metrics = evaluate_model(model, data, cfg) if test else {"test_scored": False}
    metrics.update({
        "preset": cfg.preset,
        "dataset": data.name,
        "labels_per_class": cfg.data.labels_per_class,
        "labelled_examples": int(len(split.labelled)),
        **run.taught,
        **teacher,
        "estimator": cfg.objective.estimator,
        "epochs": cfg.train.epochs,
        "steps_per_epoch": steps,
        "resumed_from_step": start_step,
        "seeds": {"label": cfg.data.label_seed, "data": cfg.data.data_seed, "init": cfg.train.init_seed},
        "train_time_s": train_time,
        "wall_time_s": time.time() - start,
        "xla": bool(model.jit_compile),
        "replicas": int(strategy.num_replicas_in_sync),
        **({"step_ms_xla": chooser.step_ms[True], "step_ms_without_xla": chooser.step_ms[False]}
           if chooser and chooser.step_ms else {}),
    })
    if teacher:     # what the whole recipe took, teacher and student
        metrics["recipe_wall_time_s"] = metrics["wall_time_s"] + teacher["teacher_wall_time_s"]
    if validation is not None:
        val = model.evaluate(validation, return_dict=True, verbose=0)
        metrics["validation_error"] = 1.0 - float(val["accuracy"]) if "accuracy" in val else None
    if chief:
        write_json_atomic(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def _check_extension(saved: Config, cfg: Config, run_dir: str) -> None:
    """Pass if `cfg` is `saved` trained for more epochs at a constant learning rate (the steps
    already taken are those of the longer run, so it can go on from them); else say why not."""
    if saved.override(**{"train.epochs": cfg.train.epochs}) != cfg:
        raise ConfigError(f"--resume: the configuration differs from the one saved in {run_dir}; "
                          "resume with the same settings (or none: they are read from the run; "
                          "train.epochs alone may grow)")
    if cfg.train.epochs <= saved.train.epochs:
        raise ConfigError(f"--resume: {run_dir} is a run of {saved.train.epochs} epochs; it can go on "
                          f"to more, not {cfg.train.epochs}")
    if cfg.train.lr_decay != "none":
        raise ConfigError(
            f"--resume: {run_dir} was trained for {saved.train.epochs} epochs; it can go on to more "
            f"only at a constant learning rate (train.lr_decay='none'): the length of its "
            f"{saved.train.lr_decay!r} schedule sets the rate of every step")


def train_preset_teacher(cfg: Config, run_dir: str, verbose="auto", test: bool = True) -> tuple[str, dict]:
    """`data.teacher_preset`: that preset trained on this run's data and labelled split (labels,
    hold-out, seeds; `train.steps_per_epoch` too, for short runs) into RUN_DIR/teacher, or resumed
    or reused there. Returns its directory and what it cost and scored."""
    teacher_dir = os.path.join(run_dir, "teacher")
    same = {f"data.{name}": getattr(cfg.data, name) for name in (
        "dataset", "data_dir", "labels_per_class", "validation_size", "label_seed", "data_seed",
        "verify_checksum", "use_extra")}
    tcfg = get_preset(cfg.data.teacher_preset).override(**same, **{
        "train.init_seed": cfg.train.init_seed, "train.steps_per_epoch": cfg.train.steps_per_epoch,
        "train.jit_compile": cfg.train.jit_compile, "train.distribute": cfg.train.distribute})
    if not os.path.isfile(os.path.join(teacher_dir, "metrics.json")):
        print(f"self-training: first the teacher, {cfg.data.teacher_preset} ({tcfg.train.epochs} epochs), "
              f"into {teacher_dir}", flush=True)
    metrics = train_or_reuse(tcfg, teacher_dir, verbose=verbose, test=test)
    return teacher_dir, {"teacher_wall_time_s": metrics["wall_time_s"],
                         **{f"teacher_{k}": metrics[k] for k in ("test_error", "validation_error") if k in metrics}}


def train_or_reuse(cfg: Config, run_dir: str, verbose=0, test: bool = True) -> dict:
    """The metrics of `run_dir` if it finished with this configuration, else train it (quietly
    unless `verbose`) first: benchmarks resume this way. A run cut short under this configuration
    continues from its last checkpoint. A run whose config.json differs (a preset that changed
    since) is trained again rather than reported under the new settings."""
    done = os.path.join(run_dir, "metrics.json")
    saved = os.path.isfile(os.path.join(run_dir, "config.json"))
    if not saved:
        return train_and_evaluate(cfg, run_dir, overwrite=True, verbose=verbose, test=test)
    stored = read_run_config(run_dir)
    wanted = resolve_for_data(cfg, load_data(cfg))
    same = _same_settings(stored.to_dict(), wanted.to_dict())
    extended = stored.override(**{"train.epochs": wanted.train.epochs})   # the stored run, longer
    longer = (wanted.train.epochs > stored.train.epochs and stored.train.lr_decay == "none"
              and _same_settings(extended.to_dict(), wanted.to_dict()))
    if longer and latest_step(os.path.join(run_dir, "checkpoints")) > 0:
        print(f"{run_dir}: trained for {stored.train.epochs} epochs; going on to {wanted.train.epochs}", flush=True)
        return train_and_evaluate(extended, run_dir, resume=True, verbose=verbose, test=test)
    if same and os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    # a self-training run cut short while its teacher trained has no checkpoint but a teacher to go on with
    if same and (latest_step(os.path.join(run_dir, "checkpoints")) > 0 or stored.data.teacher_preset):
        print(f"{run_dir}: resuming from its last checkpoint", flush=True)
        return train_and_evaluate(cfg.override(**{"data.data_dir": stored.data.data_dir}), run_dir,
                                  resume=True, verbose=verbose, test=test)
    if os.path.isfile(done):
        print(f"{run_dir}: finished with another configuration; training it again", flush=True)
    return train_and_evaluate(cfg, run_dir, overwrite=True, verbose=verbose, test=test)


def _same_settings(stored: dict, wanted: dict) -> bool:
    """Two run configurations equal but for where the data files are and how the step is run
    (XLA or not, on how many replicas: the same computation up to rounding)."""
    if stored["model"]["image_shape"] is None:     # runs saved before shapes were recorded
        stored["model"]["image_shape"] = wanted["model"]["image_shape"]
    stored["data"]["data_dir"] = wanted["data"]["data_dir"]
    for name in ("jit_compile", "distribute"):
        stored["train"][name] = wanted["train"][name]
    return stored == wanted


def evaluate_model(model: StructuredVAE, data: ImageDataset, cfg: Config) -> dict:
    """Test-set error of q(y|x) and the test ELBO terms (unlabelled bound, nats per image)."""
    results = model.evaluate(evaluation_pipeline(data.x_test, node_labels(cfg, data, "test"), EVAL_BATCH),
                             return_dict=True, verbose=0)
    return {
        "test_error": 1.0 - float(results["accuracy"]) if "accuracy" in results else None,
        "test_elbo": float(results["elbo"]),
        "test_reconstruction": float(results["reconstruction"]),
        **{f"test_{k}": float(v) for k, v in results.items() if k.startswith(("kl/", "accuracy/"))},
        **continuous_node_metrics(model, data.x_test, node_labels(cfg, data, "test")),
        "test_examples": int(len(data.y_test)),
    } | ({"test_cluster_error": cluster_error(predict_labels(model, data.x_test), data.y_test, data.num_classes)}
         if model.label_node is not None else {})


def cluster_error(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Error after the best one-to-one matching of predicted clusters to classes (Hungarian):
    the figure that means something for an unsupervised run (r = 0), whose cluster indices are
    arbitrary; a supervised run's is at most its test error."""
    from scipy.optimize import linear_sum_assignment
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (predicted, labels), 1)                              # (cluster, class)
    rows, cols = linear_sum_assignment(-counts)
    return 1.0 - counts[rows, cols].sum() / len(labels)


def error_and_worst_confusion(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, str]:
    """The error against `labels`, and the largest off-diagonal cell of the confusion matrix as
    "true -> predicted: count of the true class's size": a class read as another shows there first."""
    confusion = np.zeros([num_classes, num_classes], np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    off = confusion - np.diag(np.diag(confusion))
    true, read = np.unravel_index(off.argmax(), off.shape)
    return float(np.mean(predicted != labels)), f"{true} -> {read}: {off[true, read]} of {confusion[true].sum()}"


def unlabelled_pool_error(model: StructuredVAE, data: ImageDataset, split: LabelledSplit) -> dict:
    """q(y|x)'s error on the training images whose labels the run never saw (the unlabelled pool,
    scored against their hidden labels) and its largest confusion: a failure seen on a test draw
    shows here first, without the test set. Empty for data without one class label per image."""
    if data.y_train.ndim != 1:
        return {}
    pool = split.unlabelled
    error, worst = error_and_worst_confusion(predict_labels(model, data.x_train[pool]), data.y_train[pool],
                                             data.num_classes)
    return {"unlabelled_images": int(len(pool)), "pool_error": error, "worst_confusion": worst}


def run_pool_error(run_dir: str, data_dir: str | None = None, latest_checkpoint: bool = False) -> dict:
    """`unlabelled_pool_error` of a finished run: its labelled split drawn again from its
    configuration (`data.label_seed`, `data.validation_size`); `data_dir` if its data moved.
    `latest_checkpoint`: the run's newest checkpoint instead, for a run still training or cut short
    (with its weight average swapped in, as the run would end there); `step` says which."""
    if latest_checkpoint:
        cfg = read_run_config(run_dir)
        model = compile_model(StructuredVAE.from_config(cfg), cfg, steps_per_epoch=1)
        step = restore_latest(model, os.path.join(run_dir, "checkpoints"))
        if not step:
            raise RunDirError(f"{run_dir} has no checkpoint yet")
        model.optimizer.average_weights(model.trainable_variables)     # no-op without train.ema_momentum
    else:
        cfg, model = load_run(run_dir)
        step = None
    if data_dir:
        cfg = cfg.override(**{"data.data_dir": data_dir})
    data = load_data(cfg)
    split = labelled_split(data.y_train, cfg.data.labels_per_class, data.num_classes,
                           cfg.data.label_seed, cfg.data.validation_size)
    return {**unlabelled_pool_error(model, data, split), **({"step": step} if step is not None else {})}


def continuous_node_metrics(model: StructuredVAE, x: np.ndarray, labels, batch_size: int = EVAL_BATCH) -> dict:
    """R^2 and RMSE of the posterior mean of every labelled Normal node against its labels,
    on the examples that carry one: `test_r2/<node>`, `test_rmse/<node>`."""
    nodes = [n.name for n in model.latent_graph.labelled_nodes if n.family == "normal"]
    if not nodes or not isinstance(labels, dict):
        return {}
    means = {n: [] for n in nodes}
    for start in range(0, len(x), batch_size):
        q = model.encode((x[start:start + batch_size] / 255.0).astype(np.float32))
        for n in nodes:
            means[n].append(q[n].mean().numpy())
    out = {}
    for n in nodes:
        truth = np.asarray(labels[n], np.float64).reshape(len(x), -1)
        guess = np.concatenate(means[n]).reshape(len(x), -1)
        known = ~np.isnan(truth).any(axis=1)
        if known.sum() < 2:
            continue
        t, g = truth[known], guess[known]
        out[f"test_r2/{n}"] = float(1.0 - ((t - g) ** 2).sum() / ((t - t.mean(0)) ** 2).sum())
        out[f"test_rmse/{n}"] = float(np.sqrt(((t - g) ** 2).mean()))
    return out


def evaluate_run(run_dir: str, data_dir: str | None = None) -> dict:
    cfg, model = load_run(run_dir)
    if data_dir:
        cfg = cfg.override(**{"data.data_dir": data_dir})
    compile_model(model, cfg, steps_per_epoch=1)
    data = load_data(cfg)
    return evaluate_model(model, data, cfg)


def predict_probabilities(model: StructuredVAE, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """q(y|x)'s class probabilities for images `x` (uint8 pixels), by the compiled predict."""
    return model.predict(evaluation_pipeline(x, np.zeros(len(x), np.int64), batch_size)
                         .map(lambda a, b: a), verbose=0)


def predict_labels(model: StructuredVAE, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    return predict_probabilities(model, x, batch_size).argmax(-1)
