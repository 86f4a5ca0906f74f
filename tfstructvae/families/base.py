"""What every family provides; the shared parts."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class Family:
    name = ""

    @staticmethod
    def param_size(size: int) -> int:
        """Network outputs that parameterise a node of this size."""
        raise NotImplementedError

    @staticmethod
    def distribution(params, scale_floor: float, name=None) -> tfd.Distribution:
        """The node's distribution from network outputs (..., param_size); one event per example."""
        raise NotImplementedError

    @staticmethod
    def fixed_prior(size: int) -> tfd.Distribution:
        raise NotImplementedError

    @staticmethod
    def observation(raw, size: int):
        """A label batch -> (value (B, size) float32, mask (B,) bool: the example carries a value)."""
        raise NotImplementedError

    @staticmethod
    def mean_value(q):
        """The value the plug-in estimator feeds the networks: E_q[node]. (..., size)"""
        return q.mean()

    @staticmethod
    def point_value(q):
        """What a node's children see when it is neither observed nor sampled (encode)."""
        return q.mean()

    @staticmethod
    def sample(q, seed):
        """A reparameterised sample of q (the `sample` estimator)."""
        return q.sample(seed=seed)

    @staticmethod
    def relaxed_sample(q, prior, temperature, seed):
        """(value, estimate of KL(q || p) at that value) for a relaxed (Concrete) sample."""
        raise NotImplementedError

    @staticmethod
    def kl(q, prior, seed_fn):
        """KL(q || p): analytic where TFP registers it, else a one-sample estimate at q's sample."""
        try:
            return tfd.kl_divergence(q, prior)
        except NotImplementedError:
            value = q.sample(seed=seed_fn())
            return q.log_prob(value) - prior.log_prob(value)

    @staticmethod
    def log_prob(q, value):
        return q.log_prob(value)

    @staticmethod
    def missing_marker() -> str:
        raise NotImplementedError


def mask_all(condition):
    """An example is observed when every dimension of its label is. (B, D) -> (B,)"""
    return tf.reduce_all(condition, axis=-1)


def label_rows(raw, size: int, dtype, family: str, kind: str):
    """Labels of a vector node as (B, size) of `dtype`; (B,) is accepted for size 1."""
    raw = tf.cast(raw, dtype)
    if raw.shape.rank == 1 and size == 1:
        raw = raw[:, None]
    if raw.shape.rank != 2 or raw.shape[-1] != size:
        raise ValueError(f"labels of a {family} node of size {size} must be {kind} of shape (batch, {size}), "
                         f"got shape {raw.shape}")
    return raw
