"""Bernoulli nodes: D binary attributes, q(n | ...) = prod_d Bernoulli(logits_d), p(n) = Bernoulli(0.5)^D.

Labels are integers (B, D) in {0, 1}; an example with -1 anywhere in its label is
unlabelled for this node. The relaxed estimator draws the binary Concrete
(RelaxedBernoulli) in logit space, l ~ Logistic(logits / T, 1 / T), and feeds
sigmoid(l) on; the KL estimate is log q~(l) - log p~(l) in that space, where the
Jacobian of the sigmoid cancels.
"""

from __future__ import annotations

import tensorflow as tf

from tfstructvae.families.base import Family, label_rows, mask_all, tfd


class LogitBernoulli(tfd.Bernoulli):
    """tfd.Bernoulli(logits=l) whose log-density is computed as x l - softplus(l).

    TFP's form, (1 - x) log(1 - p) + x log p, takes two softplus terms and two products that
    guard against NaN; the two are equal for every x in [0, 1] (binary or grey), and this one is
    half the elementwise work. For the pixels of p(x | latents) that work is the step's
    largest outside the products: enumeration computes it on K x B x 784 values (docs/results.md,
    "bfloat16 products", the profile). Logits must be finite (a network's output is)."""

    def _log_prob(self, event):
        logits = self._logits_parameter_no_checks()
        return tf.cast(event, logits.dtype) * logits - tf.math.softplus(logits)


class BernoulliFamily(Family):
    name = "bernoulli"

    @staticmethod
    def param_size(size):
        return size

    @staticmethod
    def distribution(params, scale_floor=None, name=None):
        return tfd.Independent(tfd.Bernoulli(logits=params, dtype=tf.float32), reinterpreted_batch_ndims=1,
                               name=name or "Bernoulli")

    @staticmethod
    def fixed_prior(size):
        return tfd.Independent(tfd.Bernoulli(logits=tf.zeros([size]), dtype=tf.float32),
                               reinterpreted_batch_ndims=1)

    @staticmethod
    def observation(raw, size):
        raw = label_rows(raw, size, tf.int32, "Bernoulli", "integers")
        mask = mask_all(raw >= 0)
        return tf.cast(tf.maximum(raw, 0), tf.float32), mask

    @staticmethod
    def mean_value(q):
        return q.distribution.probs_parameter()

    @staticmethod
    def point_value(q):
        return tf.cast(q.distribution.logits_parameter() > 0, tf.float32)

    @staticmethod
    def relaxed_sample(q, prior, temperature, seed):
        def logistic(logits):
            return tfd.Independent(tfd.Logistic(logits / temperature, 1.0 / temperature), 1)
        q_logits = q.distribution.logits_parameter()
        q_relaxed, p_relaxed = logistic(q_logits), logistic(prior.distribution.logits_parameter())
        logit_sample = q_relaxed.sample(seed=seed)                               # (..., B, D)
        return tf.sigmoid(logit_sample), q_relaxed.log_prob(logit_sample) - p_relaxed.log_prob(logit_sample)

    @staticmethod
    def missing_marker():
        return "-1"
