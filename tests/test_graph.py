"""The graph language: refused graphs, several discrete nodes, every estimator, partial labels,
q as a TFP joint distribution, conditional priors, and graphs in the configuration."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfstructvae import Bernoulli, Categorical, LatentGraph, Normal, StructuredVAE
from tfstructvae.config import PRESETS, Config, ConfigError, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig, parse_overrides
from tfstructvae.families import BernoulliFamily, CategoricalFamily
from tfstructvae.graph import GraphError

tfd = tfp.distributions
SHAPE = (8, 8, 1)


def images(n=4, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(size=(n, *SHAPE)), tf.float32)


def small(graph, seed=1, **objective):
    return StructuredVAE(SHAPE, graph, model_config=ModelConfig(hidden_units=(8,)),
                         objective_config=ObjectiveConfig(**objective), seed=seed)


@pytest.mark.parametrize("nodes,message", [
    ((), "at least one node"),
    ((Categorical("y", 10, labelled=True), Categorical("y", 3, labelled=True)), "duplicate node name 'y'"),
    ((Normal("z", 2, parents=("y",)), Categorical("y", 10, labelled=True)), "parent 'y', which is not an earlier"),
    ((Normal("z", 2, parents=("w",)),), "node 'z' names parent 'w'"),
    ((Categorical("y", 3), Normal("z", 2, prior_parents=("c",))), "node 'z' names prior parent 'c'"),
    ((Categorical("y", 1, labelled=True),), "node 'y' has impossible size 1"),
    ((Normal("z", 0),), "node 'z' has impossible size 0"),
    ((Normal("z", 2, estimator="enumerate"),), "node 'z': estimator 'enumerate' does not apply to a normal node"),
    ((Bernoulli("b", 3, estimator="enumerate"),), "node 'b': estimator 'enumerate' does not apply to a bernoulli"),
    ((Categorical("y", 3, estimator="gumbel"),), "node 'y': estimator 'gumbel' does not apply"),
    ((Categorical("y", 3, alpha=5.0),), "node 'y': alpha=5.0 needs a labelled node"),
    ((Categorical("my y", 3),), "must be a Python identifier"),
])
def test_invalid_graphs_are_refused(nodes, message):
    with pytest.raises(GraphError, match=message):
        LatentGraph(*nodes)


def test_top_k_enumeration_takes_the_product_of_the_truncated_sizes_and_refuses_an_enumerated_parent():
    two = LatentGraph(Categorical("a", 6, estimator="enumerate"), Categorical("b", 2, estimator="enumerate"),
                      Normal("z", 2, parents=("a", "b")))
    model = small(two, enumeration_top_k=3)
    # a keeps its 3 likeliest values, b (2 values) all of them: 6 rows
    assert model.estimators["a"].rows.shape == (6, 1, 3) and model.estimators["a"].top_k == 3
    assert model.estimators["b"].rows.shape == (6, 1, 2) and model.estimators["b"].top_k is None
    x = tf.random.stateless_uniform((4, *SHAPE), (1, 2))
    assert np.all(np.isfinite(model.objective_terms(x)["elbo"].numpy()))
    chained = LatentGraph(Categorical("a", 4, estimator="enumerate"),
                          Categorical("b", 4, parents=("a",), estimator="enumerate"))
    with pytest.raises(GraphError, match="enumeration_top_k .* cannot apply to a node whose q depends on another"):
        small(chained, enumeration_top_k=2).objective_terms(x)


def test_impossible_models_are_refused():
    big = LatentGraph(Categorical("a", 40, estimator="enumerate"), Categorical("b", 40, estimator="enumerate"))
    with pytest.raises(GraphError, match=r"enumerating \{'a': 40, 'b': 40\} takes 1600 rows.*max_enumeration_rows"):
        small(big)
    assert small(big, max_enumeration_rows=1600).estimators["b"].rows.shape == (1600, 1, 40)
    with pytest.raises(GraphError, match="consistency regularisers need a labelled node that depends on x alone"):
        small(LatentGraph(Categorical("c", 2), Categorical("y", 3, parents=("c",), labelled=True)),
              consistency_weight=1.0)
    with pytest.raises(GraphError, match="consistency regularisers need a labelled node that depends on x alone"):
        small(LatentGraph(Normal("a", 2, labelled=True), Categorical("y", 3, parents=("a",), labelled=True)),
              consistency_weight=1.0, consistency_nodes="classifiers")
    with pytest.raises(ConfigError, match="model.graph: node 'y': unknown family 'poisson'"):
        ModelConfig(graph=({"family": "poisson", "name": "y", "size": 3},)).validate()
    model = small(LatentGraph(Categorical("a", 3, labelled=True), Categorical("b", 2, labelled=True)))
    with pytest.raises(ValueError, match="2 labelled nodes.*pass labels as a dict"):
        model.objective_terms(images(), tf.constant([0, 1, 2, -1]))
    with pytest.raises(ValueError, match="labels given for 'c', which is not a labelled node"):
        model.objective_terms(images(), {"c": tf.constant([0, 1, 2, -1])})


def two_digit_graph(a_estimator="enumerate", b_estimator="enumerate"):
    return LatentGraph(Categorical("a", 3, labelled=True, estimator=a_estimator),
                       Categorical("b", 2, parents=("a",), labelled=True, estimator=b_estimator))


def test_enumerating_two_nodes_equals_the_double_sum():
    """U(x) = sum_{i,j} q(a=i|x) q(b=j|x,a=i) [log p(x|i,j) + log p(i) + log p(j) - log q(i) - log q(j|i)]."""
    model = small(two_digit_graph())
    x = images()
    elbo = model.objective_terms(x)["elbo"].numpy()                       # nothing observed
    qa = model.q_node("a", x, []).probs_parameter().numpy()               # (B, 3)
    by_hand = np.zeros(len(x))
    for i in range(3):
        a = tf.one_hot([i] * len(x), 3)
        qb = model.q_node("b", x, [a]).probs_parameter().numpy()          # (B, 2)
        for j in range(2):
            log_px = model.decode(a=a, b=tf.one_hot([j] * len(x), 2)).log_prob(x).numpy()
            w = qa[:, i] * qb[:, j]
            by_hand += w * (log_px + math.log(1 / 3) + math.log(1 / 2) - np.log(qa[:, i]) - np.log(qb[:, j]))
    np.testing.assert_allclose(elbo, by_hand, rtol=1e-5)


@pytest.mark.parametrize("estimators", [("enumerate", "enumerate"), ("enumerate", "plugin"),
                                        ("plugin", "enumerate"), ("plugin", "plugin")])
def test_partly_labelled_batch_equals_its_examples_computed_apart(estimators):
    model = small(two_digit_graph(*estimators))
    x = images(5)
    labels = {"a": tf.constant([2, 0, -1, -1, 1]), "b": tf.constant([1, -1, 0, -1, 0])}
    together = model.objective_terms(x, labels)
    for i in range(5):
        alone = model.objective_terms(x[i:i + 1], {k: v[i:i + 1] for k, v in labels.items()})
        for name in ("reconstruction", "kl/a", "kl/b", "log_q/a", "log_q/b", "elbo", "entropy"):
            np.testing.assert_allclose(together[name].numpy()[i], alone[name].numpy()[0], rtol=1e-5, atol=1e-5,
                                       err_msg=f"example {i} {name}")
    # an example with both labels is the labelled ELBO: -kl is log p(label), log_q is log q(label | ...)
    np.testing.assert_allclose(together["kl/a"].numpy()[0], math.log(3), rtol=1e-6)
    np.testing.assert_allclose(together["kl/b"].numpy()[0], math.log(2), rtol=1e-6)
    qa = model.q_node("a", x, []).probs_parameter().numpy()
    np.testing.assert_allclose(together["log_q/a"].numpy()[[0, 1, 4]], np.log(qa[[0, 1, 4], [2, 0, 1]]), rtol=1e-5)
    np.testing.assert_array_equal(together["log_q/a"].numpy()[[2, 3]], 0.0)


def test_relaxed_samples_and_log_prob_match_tfp_and_approach_one_hot():
    logits = tf.constant([[1.0, -0.5, 0.3, 2.0], [0.0, 0.0, 0.0, 0.0]])
    q, prior = CategoricalFamily.distribution(logits), CategoricalFamily.fixed_prior(4)
    seed = tf.constant([3, 4], tf.int32)
    value, kl = CategoricalFamily.relaxed_sample(q, prior, 0.66, seed)
    relaxed_q = tfd.RelaxedOneHotCategorical(0.66, logits=logits)
    relaxed_p = tfd.RelaxedOneHotCategorical(0.66, logits=tf.zeros([4]))
    np.testing.assert_allclose(value.numpy(), relaxed_q.sample(seed=seed).numpy(), rtol=1e-5)
    np.testing.assert_allclose(kl.numpy(), (relaxed_q.log_prob(value) - relaxed_p.log_prob(value)).numpy(),
                               rtol=1e-3, atol=1e-3)
    many = tf.tile(logits, [500, 1])
    largest = [CategoricalFamily.relaxed_sample(CategoricalFamily.distribution(many), prior, t, seed)[0]
               .numpy().max(-1).mean() for t in (5.0, 0.5, 0.05, 0.005)]
    assert np.all(np.diff(largest) > 0) and largest[0] < 0.5 and largest[-1] > 0.99
    # Bernoulli: the binary Concrete, the same as tfd.RelaxedBernoulli's sample
    b_logits = tf.constant([[0.5, -1.0, 2.0]])
    value, _ = BernoulliFamily.relaxed_sample(BernoulliFamily.distribution(b_logits),
                                              BernoulliFamily.fixed_prior(3), 0.5, seed)
    assert value.shape == (1, 3) and np.all((value.numpy() > 0) & (value.numpy() < 1))


def test_relaxed_node_temperature_anneals():
    model = small(LatentGraph(Categorical("y", 3, labelled=True, estimator="relaxed")),
                  temperature=0.5, temperature_start=2.0, temperature_anneal_steps=100)
    model.compile(optimizer="adam")
    assert float(model._temperature()) == pytest.approx(2.0)
    model.optimizer.iterations.assign(50)
    assert float(model._temperature()) == pytest.approx(1.0)
    model.optimizer.iterations.assign(1000)
    assert float(model._temperature()) == pytest.approx(0.5)


def test_supervised_normal_and_bernoulli_nodes():
    graph = LatentGraph(Normal("slant", 1, labelled=True, alpha=2.0), Bernoulli("attrs", 3, labelled=True),
                        Normal("z", 2, parents=("slant", "attrs")))
    model = small(graph)
    x = images(3)
    labels = {"slant": tf.constant([[0.5], [np.nan], [-1.0]]), "attrs": tf.constant([[1, 0, 1], [0, 0, 1], [-1, 0, 1]])}
    terms = model.objective_terms(x, labels)
    q_slant = model.q_node("slant", x, [])
    standard = tfd.Normal(0.0, 1.0)
    np.testing.assert_allclose(terms["kl/slant"].numpy()[[0, 2]], -standard.log_prob([0.5, -1.0]).numpy(), rtol=1e-5)
    np.testing.assert_allclose(terms["kl/slant"].numpy()[1],
                               tfd.kl_divergence(q_slant, tfd.Independent(tfd.Normal([0.0], 1.0), 1)).numpy()[1],
                               rtol=1e-5)
    np.testing.assert_allclose(terms["log_q/slant"].numpy()[[0, 2]],
                               q_slant.log_prob([[0.5], [0.0], [-1.0]]).numpy()[[0, 2]], rtol=1e-5)
    assert terms["log_q/slant"].numpy()[1] == 0.0
    q_attrs = model.q_node("attrs", x, [])
    np.testing.assert_allclose(terms["log_q/attrs"].numpy()[:2],
                               q_attrs.log_prob([[1.0, 0, 1], [0, 0, 1], [0, 0, 0]]).numpy()[:2], rtol=1e-5)
    np.testing.assert_allclose(terms["kl/attrs"].numpy()[:2], 3 * math.log(2), rtol=1e-5)
    assert terms["log_q/attrs"].numpy()[2] == 0.0 and model.alphas() == {"slant": 2.0, "attrs": 50.0}


def test_posterior_is_a_joint_distribution_that_pins_observed_nodes():
    graph = LatentGraph(Categorical("y", 3, labelled=True), Normal("z", 2, parents=("y",)))
    model = small(graph)
    x = images()
    q = model.posterior(x)
    assert isinstance(q, tfd.JointDistribution)
    sample = q.sample(seed=(1, 2))
    assert sample.y.shape == (4, 3) and sample.z.shape == (4, 2)
    by_hand = (model.q_node("y", x, []).log_prob(sample.y)
               + model.q_node("z", x, [sample.y]).log_prob(sample.z))
    np.testing.assert_allclose(q.log_prob(sample).numpy(), by_hand.numpy(), rtol=1e-5)
    y = tf.constant([2, 0, 1, 1])
    dists, _ = q.sample_distributions(seed=(1, 2), y=tf.one_hot(y, 3))
    np.testing.assert_allclose(dists.z.mean().numpy(), model.encode(x, y=y)["z"].mean().numpy(), rtol=1e-5)


def test_conditional_prior_learns_a_mean_per_class_and_its_kl_is_analytic():
    graph = LatentGraph(Categorical("y", 3, labelled=True), Normal("z", 2, parents=("y",), prior_parents=("y",)))
    for estimator in ("plugin", "enumerate"):
        model = small(graph, estimator=estimator)
        net = model.prior_nets["z"]
        net.projections[0].kernel.assign(tf.reshape(tf.range(12, dtype=tf.float32) / 10, (3, 4)))
        x, y = images(), tf.constant([0, 2, 1, -1])
        kl = model.objective_terms(x, y)["kl/z"].numpy()
        params = net.projections[0].kernel.numpy() + net.projections[0].bias.numpy()        # (3, 4): per class
        loc, scale = params[:, :2], np.log1p(np.exp(params[:, 2:])) + 1e-3

        def kl_given(k, i):
            qz = model.q_node("z", x, [tf.one_hot([k] * 4, 3)])
            mu, sigma = qz.distribution.loc.numpy()[i], qz.distribution.scale.numpy()[i]
            return np.sum(np.log(scale[k] / sigma) + (sigma ** 2 + (mu - loc[k]) ** 2) / (2 * scale[k] ** 2) - 0.5)
        np.testing.assert_allclose(kl[:3], [kl_given(0, 0), kl_given(2, 1), kl_given(1, 2)], rtol=1e-4)
        if estimator == "enumerate":
            qy = model.classify(x).numpy()[3]
            np.testing.assert_allclose(kl[3], sum(qy[k] * kl_given(k, 3) for k in range(3)), rtol=1e-4)


def test_graph_round_trips_through_the_configuration_and_set():
    graph = LatentGraph(Normal("aux", 4), Categorical("y", 10, parents=("aux",), labelled=True, alpha=20.0),
                        Bernoulli("thick", 1, estimator="plugin"), Normal("z", 2, parents=("y", "aux")))
    cfg = Config(model=ModelConfig(graph=graph.to_config(), hidden_units=(8,)),
                 train=TrainConfig(epochs=1)).validate()
    again = Config.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.model.latent_graph() == graph
    model = StructuredVAE.from_config(again, image_shape=SHAPE)
    assert model.latent_graph == graph
    rebuilt = StructuredVAE.from_config(model.get_config())
    assert rebuilt.latent_graph == graph and rebuilt.image_shape == SHAPE
    text = json.dumps([{"family": "categorical", "name": "y", "size": 10, "labelled": True},
                       {"family": "normal", "name": "z", "size": 2, "parents": ["y"]}])
    changed = Config().override(**parse_overrides([f"model.graph={text}"])).validate()
    assert changed.model.latent_graph() == LatentGraph(Categorical("y", 10, labelled=True),
                                                       Normal("z", 2, parents=("y",)))


def test_decode_and_encode_per_node():
    graph = LatentGraph(Categorical("a", 3, labelled=True), Categorical("b", 2, labelled=True, estimator="relaxed"),
                        Normal("z", 2, parents=("a", "b")))
    model = small(graph)
    x = images()
    q = model.encode(x, values={"b": tf.constant([0, 1, 1, 0])})
    assert set(q) == {"a", "b", "z"} and q["z"].batch_shape == (4,)
    assert model.classify(x, node="b").shape == (4, 2)
    p = model.decode(tf.constant([0, 1, 2, 0]), tf.constant([1, 0, 1, 0]), tf.zeros([4, 2]))
    assert p.batch_shape == (4,) and p.event_shape == SHAPE
    with pytest.raises(ValueError, match=r"missing \['z'\]"):
        model.decode(a=tf.constant([0]), b=tf.constant([1]))


MIXES = {
    "m2-enumerate": LatentGraph(Categorical("y", 10, labelled=True, estimator="enumerate"),
                                Normal("z", 2, parents=("y",))),
    "two-digits-enumerate": LatentGraph(Categorical("d1", 10, labelled=True, estimator="enumerate"),
                                        Categorical("d2", 10, labelled=True, estimator="enumerate"),
                                        Normal("z", 2, parents=("d1", "d2"))),
    "enumerate+relaxed+plugin": LatentGraph(Categorical("y", 10, labelled=True, estimator="enumerate"),
                                            Categorical("c", 4, estimator="relaxed"),
                                            Bernoulli("b", 3, estimator="plugin"),
                                            Normal("z", 2, parents=("y", "c"), prior_parents=("y",))),
    "relaxed-y+supervised-normal": LatentGraph(Categorical("y", 10, labelled=True, estimator="relaxed"),
                                               Normal("slant", 1, labelled=True), Bernoulli("b", 2),
                                               Normal("z", 2, parents=("y", "slant"))),
}


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_every_estimator_mix_trains_compiled_and_traced_once(mnist, mix):
    graph = MIXES[mix]
    n, batch = 256, 32
    x = mnist.x_train[:n].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    labels = {}
    for node in graph.labelled_nodes:          # about half of every label present, independently per node
        keep = rng.uniform(size=n) < 0.5
        if node.family == "categorical":
            labels[node.name] = np.where(keep, mnist.y_train[:n] % node.size, -1).astype(np.int32)
        else:
            labels[node.name] = np.where(keep[:, None], rng.normal(size=(n, node.size)), np.nan).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).repeat().batch(batch, drop_remainder=True)
    model = StructuredVAE((28, 28, 1), graph, model_config=ModelConfig(hidden_units=(32,)),
                          objective_config=ObjectiveConfig(estimator="plugin", consistency_weight=1.0,
                                                           entropy_weight=1.0, alpha=10.0, augment_weight=1.0,
                                                           augment_flip=True))
    model.compile(optimizer="adam", jit_compile=True)
    model.optimizer.build(model.trainable_variables)
    traces = []
    step = model.train_step

    def counted(data):
        traces.append(1)
        return step(data)

    model.train_step = counted
    history = model.fit(ds, epochs=2, steps_per_epoch=3, verbose=0).history
    assert model.jit_compile is True and len(traces) == 1
    for node in graph:
        assert np.all(np.isfinite(history[f"kl/{node.name}"])), node.name
    for name in ("loss", "elbo", "reconstruction", "labelled_accuracy", "consistency", "augment"):
        assert np.all(np.isfinite(history[name])), name
    assert all(f"log_q/{n.name}" in history for n in graph.labelled_nodes)


def test_a_general_graph_exports_and_reloads(tmp_path):
    from tfstructvae.export import export_saved_model
    graph = LatentGraph(Categorical("digit", 3, labelled=True), Categorical("colour", 2, estimator="relaxed"),
                        Bernoulli("thick", 2), Normal("style", 2, parents=("digit",)))
    model = small(graph)
    diffs = export_saved_model(model, str(tmp_path / "saved"))      # compares every signature after reloading
    assert max(diffs.values()) < 1e-5
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    decode = loaded.signatures["decode"]
    assert set(decode.structured_input_signature[1]) == {"classes", "colour", "thick", "style"}
    out = loaded.signatures["encode"](images=images(2))
    assert set(out) == {"probabilities", "colour_probabilities", "thick_probabilities", "style_mean", "style_scale"}
    from tfstructvae import visualize
    grid = visualize.analogies(visualize.Codec(model), images(2).numpy())
    assert grid.shape == (2, 3, *SHAPE)


@pytest.mark.parametrize("estimator", ["enumerate", "plugin", "relaxed"])
def test_classifier_elbo_weight_scales_only_the_elbo_gradient_into_q_y(estimator):
    """Same forward terms; the ELBO's gradient into q(y|x) is scaled, the labelled
    log q(y|x) term still trains it."""
    graph = LatentGraph(Categorical("y", 3, labelled=True, estimator=estimator), Normal("z", 2, parents=("y",)))
    x, labels = images(4), tf.constant([1, -1, -1, 0])
    model = small(graph)
    classifier = model.q_nets[0].trainable_variables + model.x_bodies[0].trainable_variables

    def terms_and_grads(weight):
        model.objective_config = dataclasses.replace(model.objective_config, classifier_elbo_weight=weight)
        model.seed_generator = keras.random.SeedGenerator(7)
        with tf.GradientTape(persistent=True) as tape:
            terms = model.objective_terms(x, labels, training=True)
            elbo, log_q = tf.reduce_sum(terms["elbo"]), tf.reduce_sum(terms["log_q/y"])
        return terms, tape.gradient(elbo, classifier), tape.gradient(log_q, classifier)

    full, g_full, g_log_q_full = terms_and_grads(1.0)
    _, g_half, _ = terms_and_grads(0.5)
    none, g_none, g_log_q_none = terms_and_grads(0.0)
    for name in ("elbo", "log_q/y", "reconstruction", "kl/y", "kl/z"):
        np.testing.assert_allclose(full[name], none[name], rtol=1e-5, atol=1e-5)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in g_full) > 1e-4
    for g1, gh, g0 in zip(g_full, g_half, g_none):
        np.testing.assert_allclose(gh, 0.5 * g1, rtol=1e-4, atol=1e-6)
        assert g0 is None or float(tf.reduce_max(tf.abs(g0))) == 0.0
    for g1, g0 in zip(g_log_q_full, g_log_q_none):
        np.testing.assert_allclose(g0, g1, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="classifier_elbo_weight must be >= 0"):
        ObjectiveConfig(classifier_elbo_weight=-1.0).validate()


def test_activation_reaches_every_mlp_and_unknown_ones_are_refused():
    graph = LatentGraph(Categorical("y", 3, labelled=True), Normal("z", 2, parents=("y",)))
    model = StructuredVAE(SHAPE, graph, model_config=ModelConfig(hidden_units=(8,), activation="softplus"))
    for net in (*model.q_nets, model.p_net):
        assert net.activation is keras.activations.softplus
    with pytest.raises(ConfigError, match="unknown activation 'swishy'"):
        ModelConfig(activation="swishy").validate()


def test_a_normal_node_scale_floor_bounds_q_and_round_trips():
    graph = LatentGraph(Categorical("y", 3, labelled=True), Normal("slant", 1, labelled=True, scale_floor=0.1),
                        Normal("z", 2, parents=("y",)))
    model = small(graph)
    x = images(4)
    assert float(tf.reduce_min(model.q_node("slant", x, []).stddev())) >= 0.1
    # the floor is the node's own: other nodes keep model.scale_floor (1e-3)
    model.q_nets[2].head.bias.assign(tf.fill(model.q_nets[2].head.bias.shape, -30.0))
    assert float(tf.reduce_min(model.q_node("z", x, [tf.one_hot([0, 1, 2, 0], 3)]).stddev())) < 0.01
    assert LatentGraph.from_config(graph.to_config()) == graph and graph.to_config()[1]["scale_floor"] == 0.1
    with pytest.raises(GraphError, match="node 'slant': scale_floor must be > 0, got 0.0"):
        LatentGraph(Normal("slant", 1, scale_floor=0.0))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_round_trips_through_json(name):
    from tfstructvae import get_preset
    cfg = get_preset(name).validate()
    assert cfg.preset == name
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_mnist_relaxed_holds_siddharth_2017_settings():
    from tfstructvae import get_preset
    cfg = get_preset("mnist-relaxed")
    assert (cfg.objective.estimator, cfg.objective.temperature, cfg.objective.alpha) == ("relaxed", 0.66, 0.1)
    assert (cfg.model.hidden_units, cfg.model.style_dim, cfg.data.batch_size) == ((256,), 50, 128)
    assert cfg.objective.consistency_weight == cfg.objective.entropy_weight == 0    # the paper's objective alone


def test_labelled_tail_gives_the_same_terms():
    # A graph without sampled nodes is deterministic: the step's terms computed in two parts, the
    # labelled tail with `a` and `b` fed once, equal those of the whole minibatch enumerated.
    model = small(two_digit_graph())
    x = images(6)
    labels = {"a": tf.constant([-1, -1, -1, 0, 2, 1]), "b": tf.constant([-1, -1, -1, 1, 0, 1])}
    whole = model.objective_terms(x, labels, training=True)
    model.set_labelled_tail(3, ("a", "b"))
    parts = model.training_terms(x, labels)
    assert set(parts) == set(whole)
    for k in whole:
        np.testing.assert_allclose(parts[k].numpy(), whole[k].numpy(), rtol=2e-5, atol=2e-5, err_msg=k)
    model.set_labelled_tail(0)
    assert model.labelled_tail == 0 and model.training_terms(x, labels)["elbo"].shape == (6,)


@pytest.mark.parametrize("estimator", ["enumerate", "plugin", "relaxed"])
def test_label_rows_read_the_shifted_copies_only_where_a_label_can_be(estimator):
    # objective.augment_labelled reads each label on a shifted copy; with the share pipeline's
    # layout declared (labels only in the last 2 rows), q(y | t(x)) runs on those 2 rows alone
    # and every term keeps its value (the same noise: the seed generator's state is restored).
    model = small(LatentGraph(Categorical("y", 3, labelled=True), Normal("z", 2, parents=("y",))),
                  augment_labelled=True, augment_shift=2, mixup_weight=1.0, augment_weight=1.0, estimator=estimator)
    x, labels = images(6), tf.constant([-1, -1, -1, -1, 2, 0])
    state = model.seed_generator.state.numpy()
    whole = model.objective_terms(x, labels, training=True)
    rows, q_params = [], model._q_params

    def spy(name, xs, *args, **kwargs):
        rows.append(xs.shape[0])
        return q_params(name, xs, *args, **kwargs)
    model._q_params = spy
    model.set_label_rows(2)
    model.seed_generator.state.assign(state)
    parts = model.objective_terms(x, labels, training=True)
    # q(y | x') in one call: the labels' 2 shifted rows, the shift term's 6 and MixUp's 6
    assert 2 + 6 + 6 in rows and set(parts) == set(whole)
    for k in whole:
        np.testing.assert_allclose(parts[k].numpy(), whole[k].numpy(), rtol=2e-5, atol=2e-5, err_msg=k)
    assert parts["log_q/y"].numpy()[:4].tolist() == [0.0] * 4 and (parts["log_q/y"].numpy()[4:] < 0).all()
    model.set_label_rows(6)                   # the whole minibatch: nothing to leave out
    assert model._first_label_row(x) == 0
    with pytest.raises(ValueError, match="rows must be >= 0"):
        model.set_label_rows(-1)


def decoder_rows(model):
    """Record the batch shape of every p(x | latents) the model builds."""
    shapes, original = [], model.p_x_given_latents

    def spy(values, training=False):
        p = original(values, training)
        shapes.append(tuple(p.batch_shape))
        return p
    model.p_x_given_latents = spy
    return shapes


@pytest.mark.parametrize("known,tail_rows", [(("a", "b"), (2,)), (("a",), (2, 2))])
def test_labelled_tail_decodes_labelled_rows_once(known, tail_rows):
    model = small(LatentGraph(Categorical("a", 3, labelled=True), Categorical("b", 2, labelled=True),
                              Normal("z", 2, parents=("a", "b"))), estimator="enumerate")
    model.set_labelled_tail(2, known)                                 # with ("a",): `b` missing on labelled rows
    shapes = decoder_rows(model)
    labels = {"a": tf.constant([-1, -1, 1, 2]), "b": tf.constant([-1, -1, 0, 1 if len(known) == 2 else -1])}
    terms = model.training_terms(images(), labels)
    assert shapes == [tail_rows, (6, 2)]                      # tail first; the head enumerates all 3 x 2 values
    assert all(np.isfinite(v.numpy()).all() and v.shape[0] == 4 for v in terms.values())
    plugin = small(LatentGraph(Categorical("a", 3, labelled=True)), estimator="plugin")
    plugin.set_labelled_tail(2, ("a",))
    assert plugin.labelled_tail == 0                          # nothing enumerated: nothing to save


def test_a_labelled_minibatch_gives_the_same_step_without_enumerating_its_labels():
    # rate supervision: minibatches labelled throughout or not at all; one compiled step holds both
    # paths, each taking its own gradient. A graph without sampled nodes is deterministic: one SGD
    # step moves every weight as the step that enumerates the labels does.
    x = images()
    labelled = {"a": tf.constant([0, 2, 1, 1]), "b": tf.constant([1, 0, 1, 0])}
    unlabelled = {"a": tf.constant([-1] * 4), "b": tf.constant([-1] * 4)}
    for labels in (labelled, unlabelled):
        stepped, start = [], None
        for declared in (("a", "b"), ()):
            model = small(two_digit_graph())
            if start is None:
                start = model.get_weights()
            model.set_weights(start)
            model.set_labelled_batches(declared)
            shapes = decoder_rows(model)
            model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
            model.make_train_function()
            model.train_function(iter(tf.data.Dataset.from_tensors((x, labels))))
            stepped.append(model.get_weights())
            # traced once: the labelled path decodes the 4 rows, the other all 3 x 2 values of (a, b)
            assert shapes == ([(4,), (6, 1)] if declared else [(6, 1)])
        for declared_path, enumerated in zip(*stepped):
            np.testing.assert_allclose(declared_path, enumerated, rtol=2e-5, atol=2e-6)
        assert max(np.abs(a - b).max() for a, b in zip(stepped[0], start)) > 1e-3     # the step moved them
    model.set_labelled_batches(())
    assert model._labelled_batch_estimators is None


def test_rate_mode_training_declares_its_labelled_batches(mnist):
    from tfstructvae.train import prepare_training
    cfg = Config(data=DataConfig(labels_per_class=2, batch_size=20, supervision_mode="rate", supervision_rate=0.3,
                                 validation_size=0),
                 model=ModelConfig(hidden_units=(8,)), objective=ObjectiveConfig(estimator="enumerate")).validate()
    run = prepare_training(cfg, mnist)
    assert run.model.labelled_batch_nodes == ("y",) and run.model.labelled_tail == 0


def test_share_mode_training_declares_its_labelled_tail(mnist):
    from tfstructvae.train import label_rows, labelled_tail
    from tfstructvae.data import labelled_split
    from tfstructvae.data.pairs import mnist_pairs
    pairs = mnist_pairs(mnist, n_train=300, n_test=40)
    graph = ({"family": "categorical", "name": "left", "size": 10, "labelled": True},
             {"family": "categorical", "name": "right", "size": 10, "labelled": True},
             {"family": "normal", "name": "style", "size": 2, "parents": ["left", "right"]})
    split = labelled_split(pairs.y_train, 2, 10, 0)
    for mode, share, expect in (("share", 0.2, (0, ())), ("share", 1.0, (20, ("left", "right"))),
                                ("rate", 0.1, (0, ())), ("rate", 1.0, (20, ("left", "right")))):
        cfg = Config(data=DataConfig(labels_per_class=2, batch_size=20, node_labels="labelled",
                                     supervision_mode=mode, labelled_share=share, supervision_rate=share),
                     model=ModelConfig(hidden_units=(8,), graph=graph)).validate()
        rows, known = labelled_tail(cfg, pairs, split)
        assert (rows, tuple(sorted(known))) == expect, (mode, share)
        # where a label can be at all: the share pipeline's labelled part, when it is a part
        assert label_rows(cfg, pairs, split) == (4 if (mode, share) == ("share", 0.2) else 0), (mode, share)
        anywhere = cfg.override(**{"data.node_labels": "all"})     # other nodes' labels may sit on any row
        assert label_rows(anywhere, pairs, split) == 0


def test_shared_encoder_is_one_trunk_with_a_linear_head_per_node(tmp_path):
    model = StructuredVAE(SHAPE, LatentGraph(Categorical("y", 3, labelled=True), Normal("z", 2, parents=("y",))),
                          model_config=ModelConfig(hidden_units=(8,), shared_encoder=True), seed=1)
    names = sorted(v.path for v in model.trainable_variables if v.path.startswith("q_"))
    assert names == ["q_trunk/hidden0/bias", "q_trunk/hidden0/kernel", "q_y/in0/bias", "q_y/in0/kernel",
                     "q_z/in0/bias", "q_z/in0/kernel", "q_z/in1/kernel"]
    x = images()
    trunk = model.trunk(model.x_bodies[0](x))
    q = model.encode(x)
    np.testing.assert_allclose(q["y"].logits_parameter().numpy(), model.q_nets[0]([trunk]).numpy(), rtol=1e-6)
    # The labels' gradient reaches the trunk the style head reads.
    with tf.GradientTape() as tape:
        log_q = model.q_node("y", x, []).log_prob(tf.one_hot([0, 1, 2, 0], 3))
    assert tf.reduce_sum(tf.abs(tape.gradient(log_q, model.trunk.trainable_variables[0]))) > 0
    path = str(tmp_path / "shared.weights.h5")
    model.save_weights(path)
    again = StructuredVAE.from_config(model.get_config())
    again.load_weights(path)
    np.testing.assert_allclose(again.classify(x).numpy(), model.classify(x).numpy(), rtol=1e-6)
    with pytest.raises(ConfigError, match="shared_encoder"):
        ModelConfig(shared_encoder=True, classifier_units=(10,)).validate()
    calls, call = [], model.trunk.call                     # h(x) is computed once for all the nodes
    model.trunk.call = lambda h, training=False: (calls.append(1), call(h, training))[1]
    model.objective_terms(x, tf.constant([0, -1, 1, -1]), training=True)
    assert len(calls) == 1


def test_a_node_chooses_how_its_posterior_reads_the_image():
    from tfstructvae.graph import GraphError, node_from_config
    graph = LatentGraph(Categorical("y", 10, labelled=True), Normal("slant", 1, labelled=True, network="conv"),
                        Normal("z", 2, parents=("y", "slant")))
    model = StructuredVAE(SHAPE, graph, model_config=ModelConfig(hidden_units=(8,)), seed=1)
    kinds = {n.name: type(b).__name__ for n, b in zip(graph, model.x_bodies)}
    assert kinds["slant"] == "ConvBody" and kinds["y"] != "ConvBody" and kinds["z"] != "ConvBody"
    q = model.encode(images())
    assert q["slant"].batch_shape == (4,)
    with pytest.raises(GraphError, match="unknown network 'cnn'"):
        LatentGraph(Categorical("y", 10, labelled=True), Normal("z", 2, parents=("y",), network="cnn"))
    assert node_from_config({"family": "normal", "name": "s", "size": 1, "network": "conv"}).network == "conv"


def test_set_null_clears_a_field_that_a_preset_sets():
    from tfstructvae.config import get_preset
    best = get_preset("mnist-best")
    assert best.model.classifier_units == (1200, 600, 300)
    changes = parse_overrides(["model.classifier_units=null", "model.shared_encoder=true"])
    cleared = best.override(**changes).validate()          # shared_encoder refuses classifier_units
    assert cleared.model.classifier_units is None and cleared.model.shared_encoder
    assert best.override(**{"model.classifier_units": None}).model.classifier_units == (1200, 600, 300)
    assert json.loads(cleared.to_json())["model"]["classifier_units"] is None


def auxiliary_graph():
    """Maaloe et al. (2016)'s auxiliary latent: q(a|x) q(y|x,a) q(z|x,a,y), p(x|a,y,z)."""
    return LatentGraph(Normal("a", 3), Categorical("y", 4, parents=("a",), labelled=True),
                       Normal("z", 2, parents=("a", "y")))


@pytest.mark.parametrize("estimator", ["enumerate", "plugin"])
def test_consistency_terms_hold_a_classifier_that_reads_an_auxiliary_latent(estimator):
    """q(y|x,a) with a ~ q(a|x) depends on x alone: the consistency terms recompute it on the
    perturbed x with a drawn again from q(a | perturbed x), so their gradient reaches q(a|x)."""
    graph = auxiliary_graph()
    assert graph.reads_x_alone("a") and graph.reads_x_alone("y") and not graph.reads_x_alone("z")
    model = small(graph, estimator=estimator, consistency_weight=1.0, augment_weight=1.0, mixup_weight=1.0,
                  augment_labelled=True)
    assert [n.name for n in model.held_still] == ["y"]
    x, y = images(6), tf.constant([0, 1, -1, -1, -1, 3])
    q_a = model.q_nets[model.node_index["a"]].trainable_variables
    for term in ("consistency", "augment", "mixup", "log_q/y"):
        with tf.GradientTape() as tape:
            value = model.objective_terms(x, y, training=True)[term]
        assert value.shape == (6,) and np.all(np.isfinite(value.numpy())), term
        grads = tape.gradient(value, q_a)                  # of the sum over the minibatch
        assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads), term
    # a fresh a each call: the classifier's input is noisy; a node without parents reads x alone
    assert not np.allclose(model.q_from_x("y", x).probs_parameter(), model.q_from_x("y", x).probs_parameter())
    np.testing.assert_allclose(model.q_from_x("a", x).mean(), model.q_node("a", x, []).mean())
    assert model.classify(x).shape == (6, 4)
    with pytest.raises(GraphError, match="augment_teacher runs the weight average.*'y', \\('a',\\)"):
        small(graph, augment_weight=1.0, augment_teacher=True)


def test_an_auxiliary_node_is_left_out_of_the_decoder_and_explained_by_its_own_prior():
    """ADGM (Maaloe et al. 2016): p(x|y,z) p(a|x,y,z); the ELBO's term for a is
    log q(a|x) - log p(a|x,y,z) at a's sample, per enumerated y, under q's weights."""
    graph = LatentGraph(Normal("a", 3, auxiliary=True), Categorical("y", 4, parents=("a",), labelled=True),
                        Normal("z", 2, parents=("a", "y")))
    assert [n.name for n in graph.decoded_nodes] == ["y", "z"] and graph.reads_x_alone("y")
    model = small(graph, estimator="enumerate", consistency_weight=1.0)
    assert model.p_net.n_inputs == 2
    x = images(5)
    terms = model.objective_terms(x, tf.constant([0, -1, -1, 2, -1]), training=True)
    assert terms["kl/a"].shape == (5,) and np.all(np.isfinite(terms["elbo"].numpy()))
    # the decoder ignores a: any value of a decodes alike, and a may be left out by name
    y, z = tf.one_hot([0, 1, 2, 3, 0], 4), tf.zeros([5, 2])
    np.testing.assert_allclose(model.decode(a=tf.ones([5, 3]), y=y, z=z).mean(), model.decode(y=y, z=z).mean())
    # the term for a, by hand from the same noise: draw the model's sample again with its seed state
    seed_state = model.seed_generator.state.numpy()
    terms = model.objective_terms(x, training=False)
    model.seed_generator.state.assign(seed_state)
    q_a = model.q_node("a", x, [])
    a = model.families["a"].sample(q_a, model._sample_seed())
    q_y = model.q_node("y", x, [a]).probs_parameter()                          # (B, K)
    rows = tf.eye(4)[:, None, :]                                               # (K, 1, K)
    q_z = model.q_node("z", x, [a, rows])
    z = model.families["z"].sample(q_z, model._sample_seed())                  # (K, B, 2)
    log_p_a = model.auxiliary_prior("a", x, {"y": rows, "z": z}).log_prob(a)   # (K, B)
    by_hand = tf.reduce_sum(tf.transpose(q_y) * (q_a.log_prob(a) - log_p_a), axis=0)
    np.testing.assert_allclose(terms["kl/a"].numpy(), by_hand.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(GraphError, match="an auxiliary node is free"):
        LatentGraph(Normal("a", 3, auxiliary=True, labelled=True), Categorical("y", 4))
    with pytest.raises(GraphError, match="every node is auxiliary"):
        LatentGraph(Normal("a", 3, auxiliary=True))


@pytest.mark.parametrize("graph", [LatentGraph(Categorical("y", 4, labelled=True), Normal("z", 2, parents=("y",))),
                                   LatentGraph(Categorical("y", 4, labelled=True), Bernoulli("b", 2, labelled=True),
                                               Normal("z", 2, parents=("y", "b")))],
                         ids=["m2", "two_labelled_nodes"])
def test_the_consistency_terms_read_their_minibatches_in_one_call_with_the_same_values(graph):
    """The adversarial, shift and MixUp terms and the labels' shifted pass each read q(y | x') on a
    minibatch of their own; the model stacks them into one call of q(y|x)'s network
    (`q_from_x_parts`). Same noise, same values as four calls."""
    model = small(graph, estimator="enumerate", consistency_weight=1.0, augment_weight=1.0, mixup_weight=1.0,
                  augment_labelled=True, consistency_nodes="labelled")
    x = images(6)
    labels = {"y": tf.constant([0, 1, -1, -1, -1, 3])}
    if "b" in [n.name for n in graph]:
        labels["b"] = tf.constant([[0, 1], [1, 1], [-1, -1], [-1, -1], [0, 0], [-1, -1]])
    calls = []
    reads = model._q_params
    model._q_params = lambda name, *a, **k: calls.append((name, a[0].shape[0])) or reads(name, *a, **k)
    state = model.seed_generator.state.numpy()
    stacked = model.objective_terms(x, labels, training=True)
    # q(y|x): the clean pass, the adversarial probe, then one call on 6 + 6 + 6 + 6 rows
    assert [rows for name, rows in calls if name == "y"] == [6, 6, 24]
    model.seed_generator.state.assign(state)
    model.q_from_x_parts = lambda name, xs, training=False: [model.q_from_x(name, p, training) for p in xs]
    one_by_one = model.objective_terms(x, labels, training=True)
    for term in ("consistency", "augment", "mixup", "log_q/y", "elbo"):
        np.testing.assert_allclose(stacked[term], one_by_one[term], rtol=1e-5, atol=1e-6, err_msg=term)
