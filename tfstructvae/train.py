"""train_and_evaluate(config, run_dir): the whole job, importable and testable.

A run directory holds

    config.json          the resolved Config
    model.weights.h5     final weights (Keras format)
    checkpoints/         the training state (model, optimizer, step, sampling seed) for --resume
    logs/                TensorBoard: every objective term, accuracy, hparams, images
    history.csv          per-epoch metrics (appended across resumes)
    metrics.json         test_error (fraction), the test ELBO terms, wall_time_s, ...
"""

from __future__ import annotations

import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfstructvae.callbacks import StopOnNonFinite
from tfstructvae.checkpointing import CheckpointEvery, restore_latest
from tfstructvae.config import Config, ConfigError
from tfstructvae.data import (IMAGE_SHAPES, ImageDataset, epoch_steps, evaluation_pipeline, labelled_split, load_dataset,
                              training_pipeline)
from tfstructvae.model import StructuredVAE
from tfstructvae.visualize import ImageSummaries

EVAL_BATCH = 500


class RunDirError(ValueError):
    """An output directory that cannot be used as asked."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped training after its state was saved."""


def write_json_atomic(path: str, obj) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    os.replace(tmp, path)


def build_model(cfg: Config, image_shape) -> StructuredVAE:
    return StructuredVAE(image_shape, model_config=cfg.model, objective_config=cfg.objective,
                         seed=cfg.train.init_seed, name="structured_vae")


def compile_model(model: StructuredVAE, cfg: Config, steps_per_epoch: int) -> StructuredVAE:
    lr = cfg.train.learning_rate
    if cfg.train.lr_decay == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=cfg.train.epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(lr), jit_compile=cfg.train.jit_compile)
    # Create the optimizer's slots now: variables created inside the first trace make
    # tf.function trace the step a second time.
    model.optimizer.build(model.trainable_variables)
    return model


def load_data(cfg: Config) -> ImageDataset:
    return load_dataset(cfg.data.dataset, cfg.data.data_dir, verify_checksum=cfg.data.verify_checksum,
                        use_extra=cfg.data.use_extra)


def check_run_dir(run_dir: str, overwrite: bool, resume: bool) -> bool:
    """Refuse to reuse a run directory unless asked; return whether it holds a run."""
    has_run = os.path.exists(os.path.join(run_dir, "config.json"))
    if has_run and not (overwrite or resume):
        raise RunDirError(f"{run_dir} already holds a run (config.json); pass --resume to continue "
                          "it or --overwrite to replace it")
    if resume and not has_run:
        raise RunDirError(f"--resume: {run_dir} holds no run (no config.json)")
    return has_run


def prepare_run_dir(run_dir: str, overwrite: bool) -> None:
    """Create (or, with overwrite, replace) the run directory; call once the inputs are valid."""
    if check_run_dir(run_dir, overwrite, resume=False) and overwrite:
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)


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


def train_and_evaluate(cfg: Config, run_dir: str, overwrite: bool = False, resume: bool = False,
                       verbose="auto", callbacks=()) -> dict:
    """Train `cfg` into `run_dir`, evaluate on the test set, write metrics.json; return the metrics."""
    start = time.time()
    check_run_dir(run_dir, overwrite, resume)
    if resume:
        if read_run_config(run_dir) != cfg:
            raise ConfigError(f"--resume: the configuration differs from the one saved in {run_dir}; "
                              "resume with the same settings (or none: they are read from the run)")
    cfg.validate()
    data = load_data(cfg)   # fail on bad data before touching the run directory
    split = labelled_split(data.y_train, cfg.data.labels_per_class, data.num_classes,
                           cfg.data.label_seed, cfg.data.validation_size)
    if cfg.model.num_classes != data.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but {data.name} has "
                          f"{data.num_classes} classes")
    if not resume:
        prepare_run_dir(run_dir, overwrite=overwrite)
        write_json_atomic(os.path.join(run_dir, "config.json"), cfg.to_dict())

    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.train.init_seed)
    x_u, x_l, y_l = data.x_train[split.unlabelled], data.x_train[split.labelled], data.y_train[split.labelled]
    steps = cfg.train.steps_per_epoch or epoch_steps(len(x_u), len(x_l), cfg.data.batch_size)
    validation = (evaluation_pipeline(data.x_train[split.validation], data.y_train[split.validation],
                                      EVAL_BATCH) if len(split.validation) else None)
    model = compile_model(build_model(cfg, data.image_shape), cfg, steps)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    start_step = restore_latest(model, ckpt_dir) if resume else 0

    log_dir = os.path.join(run_dir, "logs")
    if not resume:
        _write_hparams(log_dir, cfg)
    guard = StopOnNonFinite()
    saver = CheckpointEvery(ckpt_dir, cfg.train.checkpoint_every_steps or steps)
    cbs = [guard, saver,
           keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
           keras.callbacks.TensorBoard(log_dir, update_freq="epoch"),
           ImageSummaries(log_dir, data.x_test[:8].astype(np.float32) / 255.0),
           *callbacks]

    def fit(first_step, initial_epoch, epochs, steps_per_epoch):
        train_ds, _ = training_pipeline(x_u, x_l, y_l, cfg.data, start_step=first_step,
                                        num_classes=data.num_classes)
        model.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                  validation_data=validation, callbacks=cbs, verbose=verbose, shuffle=False)

    epoch, offset = divmod(start_step, steps)
    if offset:   # finish the epoch the interruption cut short, on the same minibatches
        fit(start_step, epoch, epoch + 1, steps - offset)
        epoch += 1
    if epoch < cfg.train.epochs and not (saver.interrupted or guard.message):
        fit(epoch * steps, epoch, cfg.train.epochs, steps)
    guard.raise_if_failed(f"the last good state is kept in {ckpt_dir}; no weights or metrics were written")
    if saver.interrupted:
        raise TrainingInterrupted(
            f"interrupted by {saver.interrupted} at step {int(model.optimizer.iterations.numpy())}; "
            f"the state is saved in {ckpt_dir}: continue with --resume")
    train_time = time.time() - start
    model.save_weights(os.path.join(run_dir, "model.weights.h5"))

    metrics = evaluate_model(model, data, cfg)
    metrics.update({
        "preset": cfg.preset,
        "dataset": data.name,
        "labels_per_class": cfg.data.labels_per_class,
        "labelled_examples": int(len(split.labelled)),
        "estimator": cfg.objective.estimator,
        "epochs": cfg.train.epochs,
        "steps_per_epoch": steps,
        "resumed_from_step": start_step,
        "seeds": {"label": cfg.data.label_seed, "data": cfg.data.data_seed, "init": cfg.train.init_seed},
        "train_time_s": train_time,
        "wall_time_s": time.time() - start,
    })
    if validation is not None:
        val = model.evaluate(validation, return_dict=True, verbose=0)
        metrics["validation_error"] = 1.0 - float(val["accuracy"])
    write_json_atomic(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def train_or_reuse(cfg: Config, run_dir: str) -> dict:
    """The metrics of `run_dir` if it finished with this configuration, else train it (quietly)
    first: benchmarks resume this way. A finished run whose config.json differs (a preset that
    changed since) is trained again rather than reported under the new settings."""
    done = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(done):
        stored = read_run_config(run_dir).to_dict()
        wanted = cfg.to_dict()
        stored["data"]["data_dir"] = wanted["data"]["data_dir"]     # where the files are is not a setting
        if stored == wanted:
            with open(done) as f:
                return json.load(f)
        print(f"{run_dir}: finished with another configuration; training it again", flush=True)
    return train_and_evaluate(cfg, run_dir, overwrite=True, verbose=0)


def evaluate_model(model: StructuredVAE, data: ImageDataset, cfg: Config) -> dict:
    """Test-set error of q(y|x) and the test ELBO terms (unlabelled bound, nats per image)."""
    results = model.evaluate(evaluation_pipeline(data.x_test, data.y_test, EVAL_BATCH),
                             return_dict=True, verbose=0)
    return {
        "test_error": 1.0 - float(results["accuracy"]),
        "test_elbo": float(results["elbo"]),
        "test_reconstruction": float(results["reconstruction"]),
        "test_kl_z": float(results["kl_z"]),
        "test_kl_y": float(results["kl_y"]),
        "test_examples": int(len(data.y_test)),
    }


def read_run_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunDirError(f"{run_dir} holds no run: config.json is missing")
    with open(path) as f:
        return Config.from_dict(json.load(f))


def load_run(run_dir: str) -> tuple[Config, StructuredVAE]:
    """Rebuild a trained model from its run directory."""
    cfg = read_run_config(run_dir)
    weights = os.path.join(run_dir, "model.weights.h5")
    if not os.path.isfile(weights):
        raise RunDirError(f"{run_dir} is not a finished run: model.weights.h5 is missing")
    model = build_model(cfg, IMAGE_SHAPES[cfg.data.dataset])
    model.load_weights(weights)
    return cfg, model


def evaluate_run(run_dir: str, data_dir: str | None = None) -> dict:
    cfg, model = load_run(run_dir)
    if data_dir:
        cfg = cfg.override(**{"data.data_dir": data_dir})
    compile_model(model, cfg, steps_per_epoch=1)
    data = load_data(cfg)
    return evaluate_model(model, data, cfg)


def predict_labels(model: StructuredVAE, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    probs = model.predict(evaluation_pipeline(x, np.zeros(len(x), np.int64), batch_size)
                          .map(lambda a, b: a), verbose=0)
    return probs.argmax(-1)
