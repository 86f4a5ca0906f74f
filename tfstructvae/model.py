"""StructuredVAE: a Keras 3 model whose encoder is a latent graph.

For the graph q(y|x) q(z|x,y) (see graph.py) the factors are

    q_y_given_x   = OneHotCategorical(logits = f_y(x))                    (B,) event [K]
    q_z_given_xy  = Normal(mu(x, y), softplus(s(x, y)) + floor)           (B,) event [D]
    p_x_given_yz  = Bernoulli(logits = g(y, z)), one event per image      (B,) event image_shape
                    (or Normal(sigmoid(g(y, z)), learned per-pixel scale) for colour images)

and every node of a general graph gets a factor q(node | x, parents) of its
family. Supervision is data: a minibatch is (x, y) with y = -1 marking an
unlabelled example, so one step serves labelled, unlabelled and mixed batches
with no Python branching. The terms and the loss are in objectives.py.

`encode`, `decode`, `classify` return distributions or probabilities for use in
Python; `call`/`predict` and export see tensors only.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfstructvae import objectives
from tfstructvae.config import ModelConfig, ObjectiveConfig
from tfstructvae.graph import Categorical, LatentGraph, digit_style_graph
from tfstructvae.networks import DeconvDecoder, mlp, x_body

tfd = tfp.distributions

METRICS = ("loss", "elbo", "reconstruction", "kl_z", "kl_y", "classifier", "accuracy",
           "labelled_fraction", "entropy", "consistency")


class StructuredVAE(keras.Model):
    """Semi-supervised VAE with a structured (graphical-model) encoder."""

    def __init__(self, image_shape, latent_graph: LatentGraph | None = None,
                 model_config: ModelConfig = ModelConfig(),
                 objective_config: ObjectiveConfig = ObjectiveConfig(),
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        model_config.validate()
        objective_config.validate()
        self.latent_graph = latent_graph or digit_style_graph(model_config.num_classes,
                                                              model_config.style_dim)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_pixels = math.prod(self.image_shape)
        self.model_config = model_config
        self.objective_config = objective_config
        self.label_node = self.latent_graph.label
        self.num_classes = self.label_node.size
        if objective_config.consistency_weight and self.label_node.parents:
            raise ValueError("the consistency regulariser needs q(y|x) to depend on x alone; "
                             f"node {self.label_node.name!r} has parents {self.label_node.parents}")

        hidden, bn = model_config.hidden_units, model_config.batch_norm
        self.node_index = {n.name: i for i, n in enumerate(self.latent_graph)}
        label_name = self.label_node.name
        classifier_body = model_config.classifier_network or model_config.network
        classifier_hidden = model_config.classifier_units or hidden
        self.x_bodies = [x_body(classifier_body if n.name == label_name else model_config.network, bn,
                                name=f"q_{n.name}_body") for n in self.latent_graph]
        self.q_nets = [
            mlp(classifier_hidden if n.name == label_name else hidden,
                n.size if isinstance(n, Categorical) else 2 * n.size,
                n_inputs=1 + len(n.parents), batch_norm=bn, name=f"q_{n.name}")
            for n in self.latent_graph]
        n_latents = len(self.latent_graph.nodes)
        if model_config.network == "conv":
            if len(self.image_shape) != 3:
                raise ValueError(f"the conv network needs (H, W, C) images, got {self.image_shape}")
            self.p_net = DeconvDecoder(hidden, self.image_shape, n_latents, batch_norm=bn, name="p_x")
        else:
            self.p_net = mlp(hidden, self.num_pixels, n_inputs=n_latents, batch_norm=bn, name="p_x")
        if model_config.likelihood == "normal":
            # One learned scale per pixel and channel, shared by all images.
            self.pixel_scale_raw = self.add_weight(shape=self.image_shape, initializer="zeros",
                                                   name="pixel_scale_raw")
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRICS}
        self._build_networks()

    # ------------------------------------------------------------------ factors

    def _build_networks(self):
        x = tf.zeros([1, *self.image_shape])
        for node, body, net in zip(self.latent_graph, self.x_bodies, self.q_nets):
            net([body(x)] + [tf.zeros([1, self.latent_graph.nodes[self.node_index[p]].size])
                             for p in node.parents])
        self.p_net([tf.zeros([1, n.size]) for n in self.latent_graph])
        self.built = True

    def _check_images(self, x):
        x = tf.convert_to_tensor(x)
        if x.dtype != tf.float32:
            raise TypeError(f"images must be float32 in [0, 1], got dtype {x.dtype.name}; "
                            "divide uint8 pixels by 255 (the data pipeline does this)")
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape (batch, {', '.join(map(str, self.image_shape))})"
                             f" for this model, got {tuple(x.shape)}")
        return x

    def q_node(self, name, x, parent_values, training=False) -> tfd.Distribution:
        """q(name | x, parents(name)), batch shape (B,) or (K, B) when a parent is enumerated."""
        i = self.node_index[name]
        node = self.latent_graph.nodes[i]
        features = self.x_bodies[i](x, training=training)                     # (B, F)
        out = self.q_nets[i]([features, *parent_values], training=training)
        if isinstance(node, Categorical):
            return tfd.OneHotCategorical(logits=out, dtype=tf.float32)
        loc, raw_scale = tf.split(out, 2, axis=-1)
        scale = tf.nn.softplus(raw_scale) + self.model_config.scale_floor
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def p_x_given_latents(self, latent_values, training=False) -> tfd.Distribution:
        """p(x | all latents), one event per image; latents listed in graph order.

        Bernoulli(logits) for binary-like images; for natural colour images a Normal
        with mean sigmoid(g) and a learned per-pixel scale (softplus + floor), a proper
        density on intensities whose noise level is fitted rather than fixed.
        """
        out = self.p_net(list(latent_values), training=training)         # (..., B, P) | (..., B, H, W, C)
        if self.model_config.network != "conv":
            out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], self.image_shape], axis=0))
        if self.model_config.likelihood == "normal":
            scale = tf.nn.softplus(self.pixel_scale_raw) + self.model_config.scale_floor
            pixels = tfd.Normal(tf.sigmoid(out), scale)
        else:
            pixels = tfd.Bernoulli(logits=out, dtype=tf.float32)
        return tfd.Independent(pixels, reinterpreted_batch_ndims=len(self.image_shape))

    def q_y_given_x(self, x, training=False) -> tfd.OneHotCategorical:
        x = self._check_images(x)
        if self.label_node.parents:
            return self.encode(x, training=training)[self.label_node.name]
        return self.q_node(self.label_node.name, x, [], training)

    def _sample_seed(self):
        return tf.cast(self.seed_generator.next(), tf.int32)

    # ------------------------------------------------------------ public API

    def classify(self, x):
        """Class probabilities q(y|x). Returns (B, K)."""
        return self.q_y_given_x(x).probs_parameter()

    def call(self, x, training=False):
        return self.q_y_given_x(x, training=training).probs_parameter()

    def encode(self, x, y=None, training=False) -> dict[str, tfd.Distribution]:
        """The distributions of q, node by node; a node's children see its mean.

        The class node feeds its children onehot(y) when `y` (int labels) is
        given; otherwise the probability vector of q(y|x) for a plug-in model,
        or the onehot of its mode for an enumerating one (what each saw in training).
        """
        x = self._check_images(x)
        dists, values = {}, {}
        for node in self.latent_graph:
            q = self.q_node(node.name, x, [values[p] for p in node.parents], training)
            dists[node.name] = q
            if node is self.label_node:
                probs = q.probs_parameter()
                if y is not None:
                    values[node.name] = tf.one_hot(tf.cast(y, tf.int32), self.num_classes)
                elif self.objective_config.estimator == "enumerate":
                    values[node.name] = tf.one_hot(tf.argmax(probs, -1), self.num_classes)
                else:
                    values[node.name] = probs
            else:
                values[node.name] = q.mean()
        return dists

    def decode(self, y, *latents) -> tfd.Distribution:
        """p(x | y, latents...): y as int labels (B,) or class vectors (B, K)."""
        y = tf.convert_to_tensor(y)
        if y.dtype.is_integer:
            y = tf.one_hot(y, self.num_classes)
        values, others = [], list(latents)
        for node in self.latent_graph:
            values.append(y if node is self.label_node else tf.convert_to_tensor(others.pop(0)))
        return self.p_x_given_latents(values)

    # -------------------------------------------------------------- objective

    def objective_terms(self, x, y, training=False) -> dict[str, tf.Tensor]:
        """Per-example terms of objectives.py for a batch with labels y (-1 = unlabelled)."""
        x = self._check_images(x)
        K = self.num_classes
        labelled = y >= 0                                                      # (B,)
        y_onehot = tf.one_hot(tf.maximum(y, 0), K)                             # (B, K)
        enumerate_y = self.objective_config.estimator == "enumerate"

        values, kl_z = {}, 0.0
        for node in self.latent_graph:
            q = self.q_node(node.name, x, [values[p] for p in node.parents], training)
            if node is self.label_node:
                q_y = q
                weights = objectives.class_weights(q_y, y_onehot, labelled)     # (B, K)
                # enumerate: every class at once on a leading axis, (K, 1, K);
                # plugin: onehot(y) if labelled, else q(y|x)'s probabilities.
                values[node.name] = tf.eye(K)[:, None, :] if enumerate_y else weights
            else:
                values[node.name] = q.sample(seed=self._sample_seed())         # (B, D) | (K, B, D)
                kl_z += tfd.kl_divergence(q, objectives.standard_normal_prior(node.size))

        reconstruction = self.p_x_given_latents(
            [values[n.name] for n in self.latent_graph], training).log_prob(x)   # (B,) | (K, B)
        if enumerate_y:
            reconstruction = objectives.expect_over_classes(weights, reconstruction)
        if isinstance(kl_z, float):                                            # no Normal nodes
            kl_z = tf.zeros_like(reconstruction)
        elif enumerate_y and kl_z.shape.rank == 2:
            kl_z = objectives.expect_over_classes(weights, kl_z)
        kl_y = objectives.kl_y(q_y, labelled, K)
        terms = {
            "reconstruction": reconstruction,
            "kl_z": kl_z,
            "kl_y": kl_y,
            "elbo": objectives.elbo(reconstruction, kl_z, kl_y),
            "log_q_label": objectives.log_q_label(q_y, y_onehot, labelled),
            "entropy_unlabelled": objectives.unlabelled_entropy(q_y, labelled),
            "labelled": tf.cast(labelled, tf.float32),
            "q_y_logits": q_y.logits_parameter(),
        }
        if self.objective_config.consistency_weight and training:
            terms["consistency"] = objectives.virtual_adversarial_kl(
                lambda xp: self.q_node(self.label_node.name, xp, [], training).logits_parameter(),
                x, terms["q_y_logits"], self._sample_seed(),
                self.objective_config.consistency_epsilon, self.objective_config.consistency_xi)
        return terms

    # ---------------------------------------------------------- train / test

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _update_trackers(self, terms, loss, labels):
        correct = tf.cast(tf.equal(tf.argmax(terms["q_y_logits"], -1, output_type=tf.int32), labels),
                          tf.float32)
        has_label = tf.cast(labels >= 0, tf.float32)
        unlabelled = 1.0 - terms["labelled"]
        t = self.trackers
        t["loss"].update_state(loss)
        for name in ("elbo", "reconstruction", "kl_z", "kl_y"):
            t[name].update_state(terms[name])
        t["classifier"].update_state(terms["log_q_label"], sample_weight=terms["labelled"])
        t["accuracy"].update_state(correct, sample_weight=has_label)
        t["labelled_fraction"].update_state(terms["labelled"])
        t["entropy"].update_state(terms["entropy_unlabelled"], sample_weight=unlabelled)
        if "consistency" in terms:
            t["consistency"].update_state(terms["consistency"])
        return {name: m.result() for name, m in t.items()}

    def train_step(self, data):
        x, y = data
        cfg = self.objective_config
        with tf.GradientTape() as tape:
            terms = self.objective_terms(x, y, training=True)
            beta = objectives.kl_warmup(self.optimizer.iterations, cfg.kl_warmup_steps)
            loss_per_example = objectives.per_example_loss(
                terms, cfg.alpha, beta, cfg.entropy_weight, cfg.consistency_weight)      # (B,)
            # Sum over the global batch so gradients do not depend on the replica count.
            global_batch = tf.cast(tf.shape(x)[0], tf.float32) * \
                tf.distribute.get_strategy().num_replicas_in_sync
            loss = tf.reduce_sum(loss_per_example) / global_batch
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_trackers(terms, loss_per_example, y)

    def test_step(self, data):
        """Held-out metrics: the unlabelled bound on log p(x) and accuracy of q(y|x) against y."""
        x, y = data
        terms = self.objective_terms(x, -tf.ones_like(y), training=False)
        return self._update_trackers(terms, -terms["elbo"], y)
