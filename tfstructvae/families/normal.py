"""Normal nodes: q(n | ...) = N(mu, softplus(s) + floor) diagonal, p(n) = N(0, I).

Labels are real vectors (B, D); an example with NaN in its label is unlabelled
for this node (a regression-style label, observed on a few examples).
"""

from __future__ import annotations

import tensorflow as tf

from tfstructvae.distribution import global_batch_noise
from tfstructvae.families.base import Family, label_rows, mask_all, tfd


class NormalFamily(Family):
    name = "normal"

    @staticmethod
    def param_size(size):
        return 2 * size

    @staticmethod
    def distribution(params, scale_floor=1e-3, name=None):
        loc, raw_scale = tf.split(params, 2, axis=-1)
        scale = tf.nn.softplus(raw_scale) + scale_floor
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1, name=name or "Normal")

    @staticmethod
    def sample(q, seed):
        """loc + scale * eps, eps ~ N(0, I): what q.sample(seed) computes, with eps drawn as one
        device draws it for the global minibatch under several replicas (global_batch_noise)."""
        loc, scale = q.distribution.loc, q.distribution.scale
        eps = global_batch_noise(lambda shape, alg: tf.random.stateless_normal(shape, seed, alg=alg), tf.shape(loc),
                                 batch_axis=-2, static_shape=loc.shape)     # rows: (B, D) | (E, B, D)
        return loc + scale * eps

    @staticmethod
    def fixed_prior(size):
        return tfd.Independent(tfd.Normal(tf.zeros([size]), 1.0), reinterpreted_batch_ndims=1)

    @staticmethod
    def observation(raw, size):
        raw = label_rows(raw, size, tf.float32, "Normal", "floats")
        mask = mask_all(~tf.math.is_nan(raw))
        return tf.where(mask[:, None], raw, 0.0), mask

    @staticmethod
    def missing_marker():
        return "NaN"
