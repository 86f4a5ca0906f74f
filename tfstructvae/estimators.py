"""How each node of q enters the objective: one interface, four estimators.

For a node with recognition factor q(n | x, parents), prior p(n | prior parents),
and, where an example carries a label, an observed value pinned in q and p, an
estimator returns a `NodeTerms`:

    value    what the node's children and the decoder see
    weight   for `enumerate`: the weight of every enumerated row, (E, B); else None
    kl       the node's share of the ELBO's KL, per example (and per row): for an
             observed example -log p(n = value), else KL(q || p) (or its estimate)

Estimators (Kingma et al. 2014; Siddharth et al. 2016; Maddison/Jang et al. 2017):

    enumerate  every value at once on a leading row axis: with enumerated nodes
               n_1..n_m of sizes K_1..K_m, E = K_1 * ... * K_m rows list their product
               space and one decoder call of E*B rows serves them all; the row weight
               is prod_i q(n_i = v_i(row) | ...), or onehot(label) where observed.
               With objective.enumeration_top_k = k, each example's k likeliest values
               under q instead, weighted by q renormalised over them.
    plugin     the probability vector E_q[n] is fed to the networks (one call of B rows)
    relaxed    a reparameterised Concrete / Gumbel-softmax sample at a temperature
    sample     Normal nodes: a reparameterised sample
    observed   a node known on every example of the minibatch: its value, fed once
               (what `enumerate` becomes on a block of labelled examples; see
               `StructuredVAE.set_labelled_tail`)

Terms of shape (E, B) become per-example terms by `expectation(weights, t)`:
sum_e w[e, b] t[e, b]. The model walks the graph in order and never asks which
estimator a node holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from tfstructvae.graph import GraphError


@dataclass
class NodeTerms:
    value: tf.Tensor
    kl: tf.Tensor
    weight: tf.Tensor | None = None


@dataclass
class Context:
    """What an estimator may need beyond its node: noise and the temperature."""
    seed: Callable[[], tf.Tensor]
    temperature: tf.Tensor | float = 1.0


def _pin(mask, observed, free):
    """observed where the example carries a label, else free; broadcasts (B, D) against (E, B, D)."""
    return tf.where(mask[:, None], observed, free)


def _kl_or_log_prior(family, q, prior, observed, mask, ctx, kl=None):
    kl = family.kl(q, prior, ctx.seed) if kl is None else kl
    if observed is None:
        return kl
    return tf.where(mask, -prior.log_prob(observed), kl)


class Sample:
    """A reparameterised sample (Normal nodes)."""
    name = "sample"

    def __call__(self, family, q, prior, observed, mask, ctx) -> NodeTerms:
        value = family.sample(q, ctx.seed())
        kl = family.kl(q, prior, ctx.seed)
        if observed is not None:
            value = _pin(mask, observed, value)
        return NodeTerms(value, _kl_or_log_prior(family, q, prior, observed, mask, ctx, kl))


class PlugIn:
    """The probability vector of q fed to the networks (Siddharth et al. 2016)."""
    name = "plugin"

    def __call__(self, family, q, prior, observed, mask, ctx) -> NodeTerms:
        value = family.mean_value(q)
        if observed is not None:
            value = _pin(mask, observed, value)
        return NodeTerms(value, _kl_or_log_prior(family, q, prior, observed, mask, ctx))


class Relaxed:
    """A Concrete / Gumbel-softmax sample at `ctx.temperature`, its KL estimated at the sample."""
    name = "relaxed"

    def __call__(self, family, q, prior, observed, mask, ctx) -> NodeTerms:
        value, kl = family.relaxed_sample(q, prior, ctx.temperature, ctx.seed())
        if observed is not None:
            value = _pin(mask, observed, value)
        return NodeTerms(value, _kl_or_log_prior(family, q, prior, observed, mask, ctx, kl))


class Observed:
    """A node whose value is given on every example: that value, one row (no enumeration)."""
    name = "observed"

    def __call__(self, family, q, prior, observed, mask, ctx) -> NodeTerms:
        if observed is None:
            raise ValueError("a node declared observed on these examples came without labels")
        return NodeTerms(observed, -prior.log_prob(observed))


class Enumerate:
    """Every value of the node on the shared row axis, weighted by q (or the label).

    With `top_k` (< the node's size), each example enumerates only the k values q ranks highest,
    weighted by q renormalised over them: the ELBO of the truncated posterior
    q~(n) = q(n) 1[n in top_k(q)] / sum_top_k q, which is still a lower bound on log p(x) (any
    distribution over n gives one), at k / K of the decoder's enumerated work. Values outside the
    top k get no gradient from the unlabelled ELBO (the labels and consistency terms still reach
    them); a labelled example's top value is its label, at weight 1.
    """
    name = "enumerate"

    def __init__(self, rows: tf.Tensor, top_k: int | None = None):
        self.rows = rows                  # (E, 1, K) one-hot; with top_k (E, 1, k): a slot per row
        self.top_k = top_k

    def __call__(self, family, q, prior, observed, mask, ctx) -> NodeTerms:
        probs = family.mean_value(q)                                         # (B, K) | (E, B, K)
        if observed is not None:
            probs = _pin(mask, observed, probs)
        if self.top_k is None:
            weight = tf.reduce_sum(self.rows * probs, axis=-1)               # (E, B)
            return NodeTerms(self.rows, _kl_or_log_prior(family, q, prior, observed, mask, ctx), weight)
        if probs.shape.rank != 2:
            raise GraphError("objective.enumeration_top_k ranks a node's values by q(node | x) per example; "
                             "it cannot apply to a node whose q depends on another enumerated node")
        top, index = tf.math.top_k(probs, self.top_k)                        # (B, k)
        top = top / tf.reduce_sum(top, axis=-1, keepdims=True)               # q~ on its support
        slots = self.rows[:, 0, :]                                           # (E, k)
        value = tf.einsum("es,bsv->ebv", slots, tf.one_hot(index, probs.shape[-1]))   # (E, B, K)
        weight = tf.einsum("es,bs->eb", slots, top)                          # (E, B)
        # KL(q~ || p), the same bound's KL; 0 log 0 = 0 on a labelled example's empty rows
        kl = tf.reduce_sum(tf.math.xlogy(weight, weight) - weight * prior.log_prob(value), axis=0)   # (B,)
        return NodeTerms(value, _kl_or_log_prior(family, q, prior, observed, mask, ctx, kl), weight)


def enumeration_rows(sizes: dict[str, int], max_rows: int) -> dict[str, tf.Tensor]:
    """One-hot value tables (E, 1, K_i) listing the product space of the enumerated nodes, row-major."""
    total = math.prod(sizes.values())
    if total > max_rows:
        raise GraphError(
            f"enumerating {dict(sizes)} takes {total} rows per example (the product of their sizes), more "
            f"than objective.max_enumeration_rows={max_rows}; use the 'plugin' or 'relaxed' estimator "
            "for some of these nodes, objective.enumeration_top_k, or raise the limit")
    tables, stride = {}, total
    for name, k in sizes.items():
        stride //= k
        index = (np.arange(total) // stride) % k
        tables[name] = tf.constant(np.eye(k, dtype=np.float32)[index][:, None, :])
    return tables


def build_estimators(graph, default: str, max_rows: int, observed=(), top_k: int = 0) -> dict:
    """The estimator of every node: its own, else `default` where it applies, else its family's default;
    `observed` nodes (known on every example the estimators will see) take `Observed`. top_k > 0:
    enumerated nodes of more values enumerate only each example's top_k under q (`Enumerate`)."""
    chosen = {}
    for node in graph:
        name = node.estimator or (default if default in node.estimators else node.default_estimator)
        chosen[node.name] = "observed" if node.name in observed else name
    truncated = {n: top_k for n, e in chosen.items() if e == "enumerate" and 0 < top_k < graph[n].size}
    rows = enumeration_rows({n: truncated.get(n, graph[n].size) for n, e in chosen.items() if e == "enumerate"},
                            max_rows)
    make = {"sample": Sample, "plugin": PlugIn, "relaxed": Relaxed, "observed": Observed}
    return {n: Enumerate(rows[n], truncated.get(n)) if e == "enumerate" else make[e]() for n, e in chosen.items()}


def expectation(weights, term):
    """sum_e w[e, b] * t[e, b] for a term on the row axis; a (B,) term is already per example."""
    if weights is None or term.shape.rank < 2:
        return term
    return tf.reduce_sum(weights * term, axis=0)
