"""Categorical nodes: q(n | ...) = OneHotCategorical(logits), p(n) = Cat(1/K).

Values are one-hot vectors (B, K) so that networks, the enumerated rows and the
plug-in probability vector all share one layout. Labels are integers with -1
for a missing value. The relaxed estimator draws from the Concrete distribution
(Maddison et al. 2017; Jang et al. 2017) in log space (ExpRelaxedOneHotCategorical),
where its density is stable at low temperature; the sample fed on is its exp,
exactly a `tfd.RelaxedOneHotCategorical` sample. The KL estimate is
log q~(s) - log p~(s) for the relaxed q~ and p~ at the sample s, in which the
Jacobian of exp cancels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfstructvae.distribution import global_batch_noise
from tfstructvae.families.base import Family, tfd


class CategoricalFamily(Family):
    name = "categorical"

    @staticmethod
    def param_size(size):
        return size

    @staticmethod
    def distribution(params, scale_floor=None, name=None):
        return tfd.OneHotCategorical(logits=params, dtype=tf.float32, name=name or "OneHotCategorical")

    @staticmethod
    def fixed_prior(size):
        return tfd.OneHotCategorical(logits=tf.zeros([size]), dtype=tf.float32)

    @staticmethod
    def observation(raw, size):
        raw = tf.cast(raw, tf.int32)
        if raw.shape.rank != 1:
            raise ValueError(f"categorical labels must be integers of shape (batch,), got shape {raw.shape}")
        return tf.one_hot(tf.maximum(raw, 0), size), raw >= 0

    @staticmethod
    def mean_value(q):
        return q.probs_parameter()

    @staticmethod
    def point_value(q):
        return tf.one_hot(tf.argmax(q.logits_parameter(), -1), q.event_shape_tensor()[-1])

    @staticmethod
    def relaxed_sample(q, prior, temperature, seed):
        q_relaxed = tfd.ExpRelaxedOneHotCategorical(temperature, logits=q.logits_parameter())
        p_relaxed = tfd.ExpRelaxedOneHotCategorical(temperature, logits=prior.logits_parameter())
        # q_relaxed.sample(seed), with the Gumbel noise drawn as one device draws it for the global
        # minibatch under several replicas (global_batch_noise).
        logits = q_relaxed.logits_parameter()                                      # (..., B, K)
        tiny = np.finfo(np.float32).tiny
        uniform = global_batch_noise(lambda shape, alg: tf.random.stateless_uniform(shape, seed, minval=tiny, maxval=1.0, alg=alg),
                                     tf.shape(logits), batch_axis=-2, static_shape=logits.shape)
        noisy = (logits - tf.math.log(-tf.math.log(uniform))) / temperature
        log_sample = noisy - tf.reduce_logsumexp(noisy, axis=-1, keepdims=True)
        return tf.exp(log_sample), q_relaxed.log_prob(log_sample) - p_relaxed.log_prob(log_sample)

    @staticmethod
    def missing_marker():
        return "-1"
