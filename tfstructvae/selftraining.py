"""Self-training: the classifier of finished runs labels the unlabelled pool of the next run.

With `data.teacher = (RUN_DIR, ...)` a run trains on its labelled split as before plus the unlabelled
images its teachers classify with probability at least `data.teacher_threshold`, each under the
class the teachers' averaged q(y|x) gives it. Those images stay in the unlabelled stream too: only
the labelled set grows. A student usually ends below its teacher because it fits the teacher's
many consistent predictions and not its few scattered mistakes, and it can teach the next round
(docs/results.md, "Towards 1%: self-training"). The test set and the validation hold-out are never
labelled: a teacher must have been trained on the same labelled split and hold-out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfstructvae.config import Config, ConfigError
from tfstructvae.data import ImageDataset, LabelledSplit
from tfstructvae.data.records import take_rows
from tfstructvae.rundir import load_run, read_run_config

# The teacher's split must be the student's: otherwise its training pool may hold the student's
# validation images, or its labelled examples be ones the student must not see labelled.
SPLIT_FIELDS = ("dataset", "labels_per_class", "label_seed", "validation_size")


def check_teacher(cfg: Config, teacher_dir: str) -> Config:
    """The teacher's configuration, if it was trained on the student's labelled split."""
    tcfg = read_run_config(teacher_dir)
    differ = [f"data.{f}: {getattr(tcfg.data, f)!r} there, {getattr(cfg.data, f)!r} here"
              for f in SPLIT_FIELDS if getattr(tcfg.data, f) != getattr(cfg.data, f)]
    if differ:
        raise ConfigError(f"teacher {teacher_dir} was trained on another labelled split ({'; '.join(differ)}); "
                          "a teacher must share the student's labels and validation hold-out")
    return tcfg


def teacher_probabilities(cfg: Config, x: np.ndarray, num_classes: int, batch_size: int = 1000) -> np.ndarray:
    """The class probabilities of q(y|x), averaged over the runs in `cfg.data.teacher`, for images `x`."""
    from tfstructvae.train import predict_probabilities     # train.py builds on this module
    total = np.zeros([len(x), num_classes], np.float64)
    for teacher_dir in cfg.data.teacher:
        check_teacher(cfg, teacher_dir)
        _, model = load_run(teacher_dir)
        label = model.latent_graph.label
        if label.size != num_classes:
            raise ConfigError(f"teacher {teacher_dir} classifies into {label.size} classes, the data has {num_classes}")
        total += predict_probabilities(model, x, batch_size)
    return total / len(cfg.data.teacher)


def with_teacher_labels(cfg: Config, data: ImageDataset,
                        split: LabelledSplit) -> tuple[ImageDataset, LabelledSplit, dict]:
    """What a student trains on: a copy of `data` whose unlabelled images the teachers classify
    confidently carry the teachers' class instead of the true one, and `split` with those images
    added to the labelled indices. Returns (taught data, split, summary); score against `data`."""
    graph = cfg.model.latent_graph()
    if [n.name for n in graph.labelled_nodes] != [graph.label.name]:
        raise ConfigError("data.teacher labels the class node alone; this graph has other labelled nodes "
                          f"({[n.name for n in graph.labelled_nodes]})")
    probs = teacher_probabilities(cfg, take_rows(data.x_train, split.unlabelled), data.num_classes)  # shards too
    confident = probs.max(-1) >= cfg.data.teacher_threshold
    chosen = split.unlabelled[confident]
    y = data.y_train.copy()
    y[chosen] = probs.argmax(-1)[confident]
    summary = {"teacher_labelled": int(confident.sum()), "unlabelled": int(len(split.unlabelled)),
               "teacher_threshold": cfg.data.teacher_threshold,
               # the share of the teachers' labels that are wrong, from the pool's hidden labels
               "teacher_label_error": float((y[chosen] != data.y_train[chosen]).mean()) if len(chosen) else 0.0}
    return (dataclasses.replace(data, y_train=y),
            LabelledSplit(np.sort(np.concatenate([split.labelled, chosen])), split.unlabelled, split.validation),
            summary)
