"""Where the training step runs: `train.distribute` (`tfstructvae train --distribute`).

- "none": the default strategy, one device.
- "mirrored": `tf.distribute.MirroredStrategy` over every local GPU (or the CPU): one replica per
  device, gradients summed across replicas each step.
- "multiworker": `tf.distribute.MultiWorkerMirroredStrategy`, one process per worker, the cluster
  read from the `TF_CONFIG` environment variable as TensorFlow documents it
  (https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_environment_variable).

A step's loss is the sum over the global batch divided by its size on any number of replicas
(`StructuredVAE.train_step`), so a configuration means the same thing on 1 or N of them: the
pipeline yields global minibatches of `data.batch_size`, which Keras splits across the replicas.
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf

from tfstructvae.config import ConfigError

KINDS = ("none", "mirrored", "multiworker")
# What a dead peer looks like from the others: TensorFlow's coordination service stops the
# collectives once a task misses its heartbeats (about 10 s here) and names it.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)
TASK_NAME = re.compile(r"/job:\w+/replica:\d+/task:\d+")


class WorkerLost(RuntimeError):
    """A worker of a multi-worker run stopped; the others stop too, and say which and how to go on."""


def worker_lost(error: Exception, checkpoints: str) -> WorkerLost:
    tasks = sorted(set(TASK_NAME.findall(str(error))))
    who = ", ".join(tasks) if tasks else "a worker"
    return WorkerLost(f"{who} stopped ({type(error).__name__}: no heartbeat or failed collective), so this "
                      f"worker stops too; the last checkpoint is in {checkpoints}: restart every worker "
                      "with --resume")
TF_CONFIG_HELP = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                  '"task": {"type": "worker", "index": 0}}\' on the first worker, index 1 on the second')


def read_tf_config(environ=None) -> dict:
    """The cluster and this process's task from TF_CONFIG, checked; refuses what TensorFlow would
    otherwise turn into a hang or an obscure error."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        raise ConfigError("--distribute multiworker reads the cluster from the TF_CONFIG environment "
                          f"variable, which is not set; {TF_CONFIG_HELP}")
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not JSON ({e}); {TF_CONFIG_HELP}") from None
    cluster, task = conf.get("cluster"), conf.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG needs a 'cluster' and a 'task' object; {TF_CONFIG_HELP}")
    members = {k: v for k, v in cluster.items() if k in ("chief", "worker")}
    if not members or not all(isinstance(v, list) and v for v in members.values()):
        raise ConfigError(f"TF_CONFIG's cluster lists no 'worker' (or 'chief') addresses; {TF_CONFIG_HELP}")
    kind, index = task.get("type"), task.get("index")
    if kind not in members or not isinstance(index, int) or not 0 <= index < len(members[kind]):
        raise ConfigError(f"TF_CONFIG's task {task} is not one of the cluster's "
                          f"{ {k: len(v) for k, v in members.items()} } tasks")
    return conf


def is_chief(tf_config: dict | None) -> bool:
    """The process that writes the run directory: the 'chief' task, or worker 0 without one
    (TensorFlow's rule). True outside a cluster."""
    if tf_config is None:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def make_strategy(kind: str) -> tuple[tf.distribute.Strategy, dict | None]:
    """(strategy, TF_CONFIG or None) for `train.distribute`."""
    if kind == "none":
        return tf.distribute.get_strategy(), None
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(), None
    if kind == "multiworker":
        conf = read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(), conf
    raise ConfigError(f"unknown distribute {kind!r}; expected one of {KINDS}")


def xla_refusal(strategy: tf.distribute.Strategy) -> str | None:
    """Why the step cannot be XLA-compiled under `strategy`, or None when it can.

    Several replicas on CPU devices (logical CPUs, or one CPU per worker): XLA cannot read a
    replica's variables placed on another CPU device, nor run the cross-replica all-reduce on
    the CPU. On GPUs each replica compiles on its own device.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas <= 1:
        return None
    devices = list(strategy.extended.worker_devices)
    if any("CPU" in d.upper() for d in devices):
        return (f"XLA is off for this run: {replicas} replicas on CPU devices ({', '.join(devices)}) "
                "cannot compile the replicated step with XLA; the step runs as a TensorFlow graph")
    return None


def distribute_global_batches(strategy: tf.distribute.Strategy, make_dataset) -> tf.data.Dataset:
    """The minibatches of `make_dataset()` (global minibatches, the same stream on every worker:
    the pipeline is seeded) cut into one slice per replica, so that one step of N replicas covers
    exactly the examples one device sees at that step, in the same labelled/unlabelled mix.

    Replica r, counted over the workers in order and then each worker's devices, gets rows
    [r b, (r + 1) b) of every minibatch, b = batch / N. Each worker builds the global stream and
    keeps its slices (tf.distribute's automatic sharding would shard the examples before the
    minibatches are drawn, and every worker would see another stream). One replica: the dataset
    itself.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_dataset()

    def for_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = make_dataset()
        batch = ds.element_spec[0].shape[0]
        if batch is None or batch % replicas:
            raise ConfigError(f"data.batch_size {batch} does not split into {replicas} equal replica batches; "
                              f"choose a multiple of {replicas}")
        local, size = replicas // context.num_input_pipelines, batch // replicas
        first = context.input_pipeline_id * local * size

        def slices(*element):
            mine = tf.nest.map_structure(
                lambda t: tf.reshape(t[first:first + local * size], [local, size, *t.shape[1:]]), element)
            return tf.data.Dataset.from_tensor_slices(mine)

        return ds.flat_map(slices)

    return strategy.distribute_datasets_from_function(for_worker)


def noise_algorithm() -> str:
    """The counter-based generator for the step's stateless noise: "threefry" inside a function
    XLA compiles, "philox" elsewhere. XLA's Philox on the CPU made the draws of `mnist-best`'s
    step (the adversarial direction, 100 x 784 normals, and the style samples) cost 16.6 ms of its
    58 ms (benchmarks/profile_step.py; with threefry the XLA step takes 41 ms instead of 69), and
    TensorFlow's own kernels have no threefry. TensorFlow exposes whether a graph is compiled by
    XLA only internally (control_flow_util); if that moves, the noise falls back to Philox."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
        return "threefry" if control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()) else "philox"
    except (ImportError, AttributeError):
        return "philox"


def global_batch_noise(draw, shape, batch_axis: int = 0, static_shape=None):
    """`draw(shape, alg)` (seeded stateless noise from the generator `alg`: `noise_algorithm()`)
    as one device would draw it for the whole minibatch: under N replicas each draws the noise of
    the global batch (N times the rows along `batch_axis`) and keeps its own rows, the rows
    `distribute_global_batches` gave it. Every example then gets the
    same noise on any number of replicas, so an N-replica step computes one device's step (up to
    the order of the gradient sum). Costs N times the noise, which is small next to the networks.
    `static_shape`: what is known of `shape` while tracing (the result keeps it)."""
    strategy = tf.distribute.get_strategy()
    context = tf.distribute.get_replica_context()
    replicas = strategy.num_replicas_in_sync
    alg = noise_algorithm()
    if replicas == 1 or context is None:
        return draw(shape, alg)
    shape = tf.convert_to_tensor(shape, tf.int32)
    axis = batch_axis % int(shape.shape[0])
    rows = shape[axis]
    full = draw(tf.tensor_scatter_nd_update(shape, [[axis]], [rows * replicas]), alg)
    first = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
    mine = tf.gather(full, tf.range(first, first + rows), axis=axis)
    return mine if static_shape is None else tf.ensure_shape(mine, static_shape)
