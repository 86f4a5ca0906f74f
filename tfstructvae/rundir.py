"""Run directories: where a run's configuration, weights and results live, and how to reload them.

A run directory holds

    config.json          the resolved Config (the latent graph included)
    model.weights.h5     final weights (Keras format)
    checkpoints/         the training state (model, optimizer, step, sampling seed) for --resume
    logs/                TensorBoard: every objective term, accuracy, hparams, images
    history.csv          per-epoch metrics (appended across resumes)
    metrics.json         test_error (fraction), the test ELBO terms, wall_time_s, ...

train, visualize, export and the CLI import this module; it imports none of them.
"""

from __future__ import annotations

import json
import os
import shutil

from tfstructvae.config import Config


class RunDirError(ValueError):
    """An output directory that cannot be used as asked."""


def write_json_atomic(path: str, obj) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    os.replace(tmp, path)


def check_run_dir(run_dir: str, overwrite: bool, resume: bool) -> bool:
    """Refuse to reuse a run directory unless asked; return whether it holds a run."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir} is a file, not a directory; choose a new --output-dir")
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
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the run directory {run_dir}: {e.strerror}") from None


def read_run_config(run_dir: str) -> Config:
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir} is not a run directory ({'a file' if os.path.exists(run_dir) else 'it does not exist'})")
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunDirError(f"{run_dir} holds no run: config.json is missing")
    with open(path) as f:
        return Config.from_dict(json.load(f))


def load_run(run_dir: str):
    """Rebuild a trained model from its run directory: (Config, StructuredVAE)."""
    from tfstructvae.model import StructuredVAE
    cfg = read_run_config(run_dir)
    weights = os.path.join(run_dir, "model.weights.h5")
    if not os.path.isfile(weights):
        raise RunDirError(f"{run_dir} is not a finished run: model.weights.h5 is missing")
    model = StructuredVAE.from_config(cfg)
    model.load_weights(weights)
    return cfg, model
