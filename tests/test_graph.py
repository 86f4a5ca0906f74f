"""The declarative latent graph: validation, and graphs beyond the paper's two nodes."""

import numpy as np
import pytest
import tensorflow as tf

from tfstructvae import Categorical, LatentGraph, Normal, StructuredVAE
from tfstructvae.config import ModelConfig, ObjectiveConfig
from tfstructvae.graph import GraphError


@pytest.mark.parametrize("nodes,message", [
    ((), "at least one node"),
    ((Categorical("y", 10, labelled=True), Categorical("y", 3, labelled=True)), "duplicate node name 'y'"),
    ((Normal("z", 2, parents=("y",)), Categorical("y", 10, labelled=True)), "parent 'y', which is not an earlier"),
    ((Normal("z", 2, labelled=True),), "only Categorical nodes can be labelled"),
    ((Categorical("y", 10, labelled=True), Categorical("c", 3)), r"categorical nodes must be labelled.*\['c'\]"),
    ((Categorical("y", 1, labelled=True),), "impossible size 1"),
])
def test_invalid_graphs_are_refused(nodes, message):
    with pytest.raises(GraphError, match=message):
        LatentGraph(*nodes)


@pytest.mark.parametrize("estimator", ["plugin", "enumerate"])
def test_auxiliary_latent_graph_trains(estimator):
    """q(a|x) q(y|x,a) q(z|x,y): an ADGM-style auxiliary variable, in the same language."""
    graph = LatentGraph(Normal("a", 4), Categorical("y", 10, parents=("a",), labelled=True),
                        Normal("z", 2, parents=("y", "a")))
    model = StructuredVAE((28, 28, 1), graph, model_config=ModelConfig(hidden_units=(16,)),
                          objective_config=ObjectiveConfig(estimator=estimator))
    x = tf.random.uniform([6, 28, 28, 1])
    y = tf.constant([1, -1, 3, -1, -1, 9])
    with tf.GradientTape() as tape:
        terms = model.objective_terms(x, y, training=True)
        loss = -tf.reduce_mean(terms["elbo"])
    grads = tape.gradient(loss, model.trainable_variables)
    assert terms["elbo"].shape == (6,) and np.all(np.isfinite(terms["elbo"].numpy()))
    # every network, the auxiliary one included, receives a gradient
    assert all(g is not None for g in grads)
    q = model.encode(x)
    assert set(q) == {"a", "y", "z"} and model.classify(x).shape == (6, 10)
    # kl_z sums the KL of both continuous nodes: a (B,) and z (K, B) under enumerate
    assert np.all(terms["kl_z"].numpy() > 0)
