"""StructuredVAE: a Keras 3 model whose encoder is a latent graph.

For a graph of nodes n_1..n_m (graph.py) the factors are

    q(n_i | x, parents(n_i))    a network on x and the parents' values -> the node's family
                                (families/): OneHotCategorical, diagonal Normal or Bernoulli
    p(n_i | prior_parents(n_i)) fixed (uniform, N(0, I), Bernoulli(0.5)) or a learned linear map
    p(x | n_1..n_m)             Bernoulli(logits = g(n_1..n_m)), one event per image
                                (or Normal(sigmoid(g), learned per-pixel scale) for colour images)

For the paper's graph q(y|x) q(z|x,y) these are q_y_given_x, q_z_given_xy and
p_x_given_yz. The step walks the graph in order; each node's estimator
(estimators.py) says what its children see and what it adds to the ELBO, so the
model never branches on the estimator. Supervision is data: a minibatch is
(x, labels), labels a tensor for a graph with one labelled node or a dict
{node: values} (-1 or NaN marking a missing value), so one step serves labelled,
unlabelled and partly labelled batches with no Python branching.

`posterior` returns q as a TFP joint distribution; `encode`, `decode`,
`classify` return distributions or probabilities for use in Python;
`call`/`predict` and export see tensors only.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfstructvae import objectives
from tfstructvae.config import Config, ModelConfig, ObjectiveConfig
from tfstructvae.estimators import Context, build_estimators, expectation
from tfstructvae.families import family_of
from tfstructvae.families.bernoulli import LogitBernoulli
from tfstructvae.graph import GraphError, LatentGraph
from tfstructvae.networks import DeconvDecoder, DenseTrunk, SummedLinear, dtype_policy, mlp, x_body

tfd = tfp.distributions


def metric_names(graph: LatentGraph, training: bool = False) -> tuple[str, ...]:
    """Every logged term, in order: the list behind Keras' logs, TensorBoard and history.csv.

    In training the accuracy is measured on the labelled examples of each batch, which the
    classifier soon fits, so it is logged as `labelled_accuracy`; `evaluate` and validation
    log `accuracy` against every example's label.
    """
    classifiers = graph.classifier_nodes
    accuracy = "labelled_accuracy" if training else "accuracy"
    return ("loss", "elbo", "reconstruction",
            *(f"kl/{n.name}" for n in graph),
            *(f"log_q/{n.name}" for n in graph.labelled_nodes),
            *([accuracy] if classifiers else []),
            *(f"{accuracy}/{n.name}" for n in classifiers[1:]),
            "labelled_fraction", "entropy", "consistency", "augment", "mixup")


def _training_name(name: str) -> str:
    return "labelled_" + name if name.startswith("accuracy") else name


@keras.saving.register_keras_serializable(package="tfstructvae")
class StructuredVAE(keras.Model):
    """Semi-supervised VAE with a structured (graphical-model) encoder.

    A registered Keras object: `model.save("m.keras")` and `keras.models.load_model("m.keras")`
    round-trip the graph, the configuration and the weights; `model.export(path)` writes the
    package's SavedModel with its serving signatures (export.py).

    `seed` seeds the model's sampling noise (z, Concrete and consistency draws). The initial
    weights follow Keras' global seed, as for any Keras model: `keras.utils.set_random_seed(s)`
    before building (which `prepare_training` does with `train.init_seed`).
    """

    def __init__(self, image_shape, latent_graph: LatentGraph | None = None,
                 model_config: ModelConfig = ModelConfig(),
                 objective_config: ObjectiveConfig = ObjectiveConfig(),
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        model_config.validate()
        objective_config.validate()
        self.latent_graph = latent_graph or model_config.latent_graph()
        # The model's own configuration names its graph, so get_config() rebuilds it exactly.
        self.model_config = dataclasses.replace(model_config, graph=self.latent_graph.to_config())
        self.objective_config = objective_config
        self.seed = seed
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_pixels = math.prod(self.image_shape)
        graph = self.latent_graph
        self.families = {n.name: family_of(n) for n in graph}
        self.estimators = self._build_estimators()
        self.classifier_names = {n.name for n in graph.classifier_nodes}
        self.labelled_tail, self._tail_estimators = 0, None       # set_labelled_tail
        self._labelled_batch_estimators, self.labelled_batch_nodes = None, ()   # set_labelled_batches
        self.label_rows = 0                                        # set_label_rows
        self.label_node = graph.classifier_nodes[0] if graph.classifier_nodes else None
        self.num_classes = self.label_node.size if self.label_node else None
        # Regularisers on q(y|x) (entropy, consistency) apply to labelled categorical nodes; the
        # consistency terms perturb x, so they need nodes that depend on x alone (directly, or through
        # an auxiliary latent drawn from q(a|x): graph.reads_x_alone), and with
        # consistency_nodes="labelled" they hold every such labelled node still, of any family.
        by_rule = [n for n in (graph.classifier_nodes if objective_config.consistency_nodes == "classifiers"
                               else graph.labelled_nodes) if graph.reads_x_alone(n.name)]
        self.held_still = [n for n in graph.labelled_nodes
                           if (n in by_rule and n.consistency != 0) or (n.consistency or 0) > 0]
        if (objective_config.consistency_weight or objective_config.augment_weight) and not self.held_still:
            raise GraphError("the consistency regularisers need a labelled node that depends on x alone, "
                             "directly or through free Normal parents that do (a categorical one unless "
                             "objective.consistency_nodes='labelled'); this "
                             f"graph's labelled nodes are {[(n.name, n.parents) for n in graph.labelled_nodes]}")

        if objective_config.mixup_weight and not any(n in graph.classifier_nodes for n in self.held_still):
            raise GraphError("objective.mixup_weight mixes the targets of a labelled categorical node that "
                             f"depends on x alone; this graph's labelled nodes are "
                             f"{[(n.name, n.parents) for n in graph.labelled_nodes]}")
        measured = [n.name for n in graph.labelled_nodes if n.family != "categorical" and graph.reads_x_alone(n.name)
                    ] if objective_config.augment_labelled_geometry else []
        if measured:
            raise GraphError("objective.augment_labelled_geometry rotates and scales the labelled images, which "
                             f"changes the measured factors {measured}: drop it, or keep the labels' copy "
                             "shifted only")
        if objective_config.augment_teacher and any(n.parents for n in self.held_still):
            raise GraphError("objective.augment_teacher runs the weight average of a node's network on x "
                             "alone; the held nodes "
                             f"{[(n.name, n.parents) for n in self.held_still if n.parents]} read parents "
                             "(an auxiliary latent): drop augment_teacher or those parents")
        self.node_index = {n.name: i for i, n in enumerate(graph)}
        with dtype_policy(model_config.dtype_policy):     # the networks' layers; the model's own inputs stay float32
            self._create_networks(model_config)
        if model_config.likelihood == "normal":
            # One learned scale per pixel and channel, shared by all images.
            self.pixel_scale_raw = self.add_weight(shape=self.image_shape, initializer="zeros",
                                                   name="pixel_scale_raw")
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampling_seed")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in metric_names(graph)}
        self._build_networks()

    def _create_networks(self, model_config: ModelConfig):
        """The networks of q's factors, p(x | latents) and the learned conditional priors."""
        hidden, bn = model_config.hidden_units, model_config.batch_norm
        graph = self.latent_graph
        classifier_names = self.classifier_names
        classifier_body = model_config.classifier_network or model_config.network
        classifier_hidden = model_config.classifier_units or hidden
        if model_config.shared_encoder:
            # One trunk h(x); each node's parameters a linear map of [h(x), parents].
            body = x_body(model_config.network, bn, name="q_body")
            self.x_bodies = [body] * len(graph)
            self.trunk = DenseTrunk(hidden, batch_norm=bn, activation=model_config.activation, name="q_trunk")
            self.q_nets = [SummedLinear(self.families[n.name].param_size(n.size), 1 + len(n.parents),
                                        name=f"q_{n.name}") for n in graph]
        else:
            self.trunk = None
            self.x_bodies = [x_body(n.network or (classifier_body if n.name in classifier_names
                                                  else model_config.network), bn, name=f"q_{n.name}_body",
                                    filters=model_config.classifier_filters if n.name in classifier_names else None)
                             for n in graph]
            self.q_nets = [
                mlp(classifier_hidden if n.name in classifier_names else hidden,
                    self.families[n.name].param_size(n.size), n_inputs=1 + len(n.parents), batch_norm=bn,
                    activation=model_config.activation, name=f"q_{n.name}")
                for n in graph]
        if model_config.network == "conv":
            if len(self.image_shape) != 3:
                raise ValueError(f"the conv network needs (H, W, C) images, got {self.image_shape}")
            self.p_net = DeconvDecoder(hidden, self.image_shape, len(graph.decoded_nodes), batch_norm=bn, name="p_x")
        else:
            self.p_net = mlp(hidden, self.num_pixels, n_inputs=len(graph.decoded_nodes), batch_norm=bn,
                             activation=model_config.activation, name="p_x")
        # p(a | x, the decoded nodes) of each auxiliary node: a network of its own on x and their values
        self.auxiliary_priors = {
            n.name: (x_body(model_config.network, bn, name=f"p_{n.name}_body"),
                     mlp(hidden, self.families[n.name].param_size(n.size), n_inputs=1 + len(graph.decoded_nodes),
                         batch_norm=bn, activation=model_config.activation, name=f"p_{n.name}"))
            for n in graph.auxiliary_nodes}
        self.prior_nets = {n.name: SummedLinear(self.families[n.name].param_size(n.size), len(n.prior_parents),
                                                name=f"p_{n.name}")
                           for n in graph if n.prior_parents}

    # ------------------------------------------------------------ configuration

    def get_config(self):
        return {"image_shape": list(self.image_shape), "model": dataclasses.asdict(self.model_config),
                "objective": dataclasses.asdict(self.objective_config), "seed": self.seed, "name": self.name}

    @classmethod
    def from_config(cls, config, image_shape=None):
        """Rebuild a model from a `Config` (and image shape) or from `get_config()`'s dict."""
        if isinstance(config, Config):
            image_shape = image_shape or config.model.image_shape
            if image_shape is None:
                from tfstructvae.data import IMAGE_SHAPES
                if config.data.dataset not in IMAGE_SHAPES:
                    raise ValueError(f"give image_shape: dataset {config.data.dataset!r} has no known shape")
                image_shape = IMAGE_SHAPES[config.data.dataset]
            return cls(image_shape, model_config=config.model, objective_config=config.objective,
                       seed=config.train.init_seed, name="structured_vae")
        parts = Config.from_dict({"model": config["model"], "objective": config["objective"]})
        return cls(config["image_shape"], model_config=parts.model, objective_config=parts.objective,
                   seed=config.get("seed", 0), name=config.get("name", "structured_vae"))

    def export(self, filepath, format="tf_saved_model", verbose=True, **kwargs):
        """The package's SavedModel (classify, encode, encode_given_class, decode, reconstruct),
        checked by reloading it; it serves with TensorFlow alone. Returns the reload check's differences."""
        if format != "tf_saved_model":
            raise ValueError(f"StructuredVAE exports format='tf_saved_model' only, got {format!r}")
        from tfstructvae.export import describe, export_saved_model
        diffs = export_saved_model(self, filepath, config_json=None, **kwargs)
        if verbose:
            print(f"Saved the serving signatures to {filepath}:\n{describe(filepath)}")
        return diffs

    # ------------------------------------------------------------------ factors

    def _build_networks(self):
        x = tf.zeros([1, *self.image_shape])
        graph = self.latent_graph
        for node in graph:
            self.q_node(node.name, x, [tf.zeros([1, graph[p].size]) for p in node.parents])
        self.p_net([tf.zeros([1, n.size]) for n in graph.decoded_nodes])
        for body, net in self.auxiliary_priors.values():
            net([body(x), *[tf.zeros([1, n.size]) for n in graph.decoded_nodes]])
        for name, net in self.prior_nets.items():
            net([tf.zeros([1, graph[p].size]) for p in graph[name].prior_parents])
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

    def shared_features(self, x, training=False):
        """h(x) of the shared encoder trunk (`model.shared_encoder`), else None: computed once
        for all the nodes of q that read the same images. (B, units)"""
        if self.trunk is None:
            return None
        return self.trunk(self.x_bodies[0](x, training=training), training=training)

    def q_node(self, name, x, parent_values, training=False, shared=None) -> tfd.Distribution:
        """q(name | x, parents(name)), batch shape (B,) or (E, B) when a parent is enumerated.
        `shared`: `shared_features(x)` where the caller has it already."""
        return self._node_distribution(name, self._q_params(name, x, parent_values, training, shared))

    def _q_params(self, name, x, parent_values, training=False, shared=None) -> tf.Tensor:
        """The output of q(name | x, parents)'s network: its distribution's parameters. (B, P)"""
        i = self.node_index[name]
        if self.trunk is not None:
            h = shared if shared is not None else self.shared_features(x, training)
            return self.q_nets[i]([h, *parent_values])
        features = self.x_bodies[i](x, training=training)                     # (B, F)
        return self.q_nets[i]([features, *parent_values], training=training)

    def q_from_x(self, name, x, training=False, shared=None) -> tfd.Distribution:
        """q(name | x) for a node that reads x alone (LatentGraph.reads_x_alone): its own network
        on x, its continuous ancestors (an auxiliary latent a of q(y | x, a)) drawn afresh from
        q(. | x) on the way, reparameterised. What the consistency terms recompute on a perturbed or
        transformed x; for a node without parents, q_node(name, x, []). (B,)"""
        return self._node_distribution(name, self._q_from_x_params(name, x, training, shared))

    def _q_from_x_params(self, name, x, training=False, shared=None) -> tf.Tensor:
        graph = self.latent_graph
        if shared is None:
            shared = self.shared_features(x, training)
        ancestors, todo = set(), list(graph[name].parents)
        while todo:
            parent = todo.pop()
            ancestors.add(parent)
            todo.extend(graph[parent].parents)
        values = {}
        for node in graph:            # graph order: parents before children
            if node.name in ancestors:
                q = self.q_node(node.name, x, [values[p] for p in node.parents], training, shared)
                values[node.name] = self.families[node.name].sample(q, self._sample_seed())
        return self._q_params(name, x, [values[p] for p in graph[name].parents], training, shared)

    def q_from_x_parts(self, name, xs, training=False) -> list[tfd.Distribution]:
        """`q_from_x(name, x)` for each x of `xs` (minibatches of images), in one call of the
        node's networks on their rows stacked: a few large matrix products run faster than many
        small ones (the consistency terms and the labels' shifted pass each read q(y | x') on a
        minibatch of their own). With batch normalisation, whose statistics would then mix the
        parts, one call per part."""
        if len(xs) == 1 or self.model_config.batch_norm:
            return [self.q_from_x(name, x, training) for x in xs]
        static = all(x.shape[0] is not None for x in xs)
        rows = [x.shape[0] for x in xs] if static else tf.stack([tf.shape(x)[0] for x in xs])
        params = self._q_from_x_params(name, tf.concat(xs, 0), training)
        return [self._node_distribution(name, part) for part in tf.split(params, rows, axis=0)]

    def _node_distribution(self, name, out) -> tfd.Distribution:
        """The node's family with the parameters `out` of its network, in float32 under any dtype policy."""
        floor = getattr(self.latent_graph[name], "scale_floor", None)
        return self.families[name].distribution(tf.cast(out, tf.float32),
                                                self.model_config.scale_floor if floor is None else floor, name=name)

    def teacher_q(self, name, x) -> tfd.Distribution:
        """q(name | x) under the optimizer's running average of the weights (Adam's `use_ema`,
        train.ema_momentum): the Mean Teacher of `objective.augment_teacher`. A node that reads
        x alone; its network runs statelessly on the averaged values, the model's weights untouched."""
        i = self.node_index[name]
        optimizer = self.optimizer
        if optimizer is None or not getattr(optimizer, "use_ema", False):
            raise ValueError("the teacher is the optimizer's weight average: compile with an optimizer "
                             "that has use_ema=True (train.ema_momentum > 0)")
        # Keras keeps the average of each trainable variable at that variable's index (private
        # API, pinned by tests/test_training.py's teacher test).
        average = optimizer._model_variables_moving_average

        def averaged(layer):
            return [average[optimizer._get_variable_index(v)] for v in layer.trainable_variables]

        def frozen(layer):
            return [v.value for v in layer.non_trainable_variables]

        body, net = self.x_bodies[i], self.q_nets[i]
        features, _ = body.stateless_call(averaged(body), frozen(body), x, training=False)
        out, _ = net.stateless_call(averaged(net), frozen(net), [features], training=False)
        return self._node_distribution(name, out)

    def prior(self, name, values) -> tfd.Distribution:
        """p(name | prior_parents(name)): fixed, or a learned linear map of the parents' values."""
        node = self.latent_graph[name]
        family = self.families[name]
        if not node.prior_parents:
            return family.fixed_prior(node.size)
        out = tf.cast(self.prior_nets[name]([values[p] for p in node.prior_parents]), tf.float32)  # (B, P) | (E, B, P)
        return family.distribution(out, self.model_config.scale_floor)

    def auxiliary_prior(self, name, x, values, training=False) -> tfd.Distribution:
        """p(a | x, the decoded nodes' values) of an auxiliary node a (ADGM). Batch (B,) | (E, B)."""
        body, net = self.auxiliary_priors[name]
        out = net([body(x, training=training), *[values[n.name] for n in self.latent_graph.decoded_nodes]],
                  training=training)
        return self._node_distribution(name, out)

    def p_x_given_latents(self, latent_values, training=False) -> tfd.Distribution:
        """p(x | all latents), one event per image; latents listed in graph order (the values of
        auxiliary nodes, which p does not read, may be given or left out).

        Bernoulli(logits) for binary-like images; for natural colour images a Normal
        with mean sigmoid(g) and a learned per-pixel scale (softplus + floor), a proper
        density on intensities whose noise level is fitted rather than fixed.
        """
        latent_values = list(latent_values)
        if len(latent_values) == len(self.latent_graph) and self.latent_graph.auxiliary_nodes:
            auxiliary = self.latent_graph.auxiliary_nodes
            latent_values = [v for n, v in zip(self.latent_graph, latent_values) if n not in auxiliary]
        out = tf.cast(self.p_net(latent_values, training=training), tf.float32)  # (..., B, P) | (..., B, H, W, C)
        if self.model_config.network != "conv":
            out = tf.reshape(out, tf.concat([tf.shape(out)[:-1], self.image_shape], axis=0))
        if self.model_config.likelihood == "normal":
            scale = tf.nn.softplus(self.pixel_scale_raw) + self.model_config.scale_floor
            pixels = tfd.Normal(tf.sigmoid(out), scale)
        else:
            pixels = LogitBernoulli(logits=out, dtype=tf.float32)
        return tfd.Independent(pixels, reinterpreted_batch_ndims=len(self.image_shape))

    def _sample_seed(self):
        return tf.cast(self.seed_generator.next(), tf.int32)

    def _temperature(self):
        cfg = self.objective_config
        if cfg.temperature_start is None or not cfg.temperature_anneal_steps:
            return tf.constant(cfg.temperature)
        step = self.optimizer.iterations if getattr(self, "optimizer", None) is not None else 0
        return objectives.annealed_temperature(step, cfg.temperature_start, cfg.temperature,
                                               cfg.temperature_anneal_steps)

    def _label_dict(self, labels) -> dict:
        """labels as {node: tensor}; a bare tensor belongs to the graph's one labelled node."""
        if labels is None:
            return {}
        if not isinstance(labels, dict):
            supervised = self.latent_graph.labelled_nodes
            if len(supervised) != 1:
                raise ValueError(f"this graph has {len(supervised)} labelled nodes "
                                 f"{[n.name for n in supervised]}; pass labels as a dict {{node: values}}")
            return {supervised[0].name: labels}
        for name in labels:
            if name not in self.node_index or not self.latent_graph[name].labelled:
                raise ValueError(f"labels given for {name!r}, which is not a labelled node of this graph "
                                 f"(labelled: {[n.name for n in self.latent_graph.labelled_nodes]})")
        return dict(labels)

    def _observations(self, labels) -> dict:
        """{node: (value, mask)} for the labelled nodes present in `labels`."""
        return {name: self.families[name].observation(raw, self.latent_graph[name].size)
                for name, raw in self._label_dict(labels).items()}

    # ------------------------------------------------------------ public API

    def posterior(self, x, training=False) -> tfd.JointDistribution:
        """q(nodes | x) as a `tfd.JointDistributionCoroutine` over the named nodes.

        Its parts are the families' distributions (one-hot categorical values), so
        `sample`, `log_prob` and `sample_distributions(node=value)` (pinning observed
        nodes) are TFP's own. Batch shape (B,) per part.
        """
        x = self._check_images(x)
        Root = tfd.JointDistributionCoroutine.Root

        shared = self.shared_features(x, training)

        def q():
            values = {}
            for node in self.latent_graph:
                dist = self.q_node(node.name, x, [values[p] for p in node.parents], training, shared)
                values[node.name] = yield (dist if node.parents else Root(dist))
        return tfd.JointDistributionCoroutine(q, name="q")

    def classify(self, x, node: str | None = None):
        """Probabilities of q(node | x) for a categorical node (default: the first labelled one). (B, K)"""
        name = node or self._label_name()
        x = self._check_images(x)
        if self.latent_graph[name].parents:
            return self.encode(x)[name].probs_parameter()
        return self.q_node(name, x, []).probs_parameter()

    def _label_name(self):
        if self.label_node is None:
            raise ValueError("this graph has no labelled categorical node to classify with")
        return self.label_node.name

    def call(self, x, training=False):
        if self.label_node is None:
            first = self.latent_graph.nodes[0]
            return self.families[first.name].mean_value(self.encode(x)[first.name])
        return self.classify(x)

    def encode(self, x, y=None, training=False, values: dict | None = None) -> dict[str, tfd.Distribution]:
        """The distributions of q, node by node, each given its parents' values.

        A node's children see its observed value where given (`values[node]`, or `y`:
        int labels of the first labelled categorical node), else a point value:
        the mean of a continuous node, the probability vector of a plug-in node, the
        one-hot mode of an enumerated or relaxed one (what each saw in training).
        """
        x = self._check_images(x)
        pinned = dict(values or {})
        if y is not None:
            pinned[self._label_name()] = y
        observed = {name: self.families[name].observation(v, self.latent_graph[name].size)[0]
                    for name, v in pinned.items()}
        dists, vals = {}, {}
        shared = self.shared_features(x, training)
        for node in self.latent_graph:
            q = self.q_node(node.name, x, [vals[p] for p in node.parents], training, shared)
            dists[node.name] = q
            vals[node.name] = observed[node.name] if node.name in observed else self.point_value(node.name, q)
        return dists

    def point_value(self, name, q):
        """What node `name`'s children see in `encode`: the probability vector of a plug-in node,
        else its family's point value (a mean, or a one-hot / binary mode). (..., size)"""
        family = self.families[name]
        return family.mean_value(q) if self.estimators[name].name == "plugin" else family.point_value(q)

    def decode(self, *values, **named) -> tfd.Distribution:
        """p(x | latents). Positional: the first labelled categorical node's value, then the other
        nodes in graph order (`decode(y, z)` for M2); or every node by name, where auxiliary nodes
        (which p(x | ...) does not read) may be left out. Categorical values may be int labels (B,)
        or vectors (B, K)."""
        order = [n.name for n in self.latent_graph]
        if values:
            if self.label_node is not None:
                order.remove(self.label_node.name)
                order.insert(0, self.label_node.name)
            if len(values) != len(order) or named:
                raise ValueError(f"decode takes one value per node, in the order {order}, or all by name")
            named = dict(zip(order, values))
        missing = set(order) - set(named) - {n.name for n in self.latent_graph.auxiliary_nodes}
        if missing:
            raise ValueError(f"decode needs a value for every node; missing {sorted(missing)}")
        latents = []
        for node in self.latent_graph.decoded_nodes:
            v = tf.convert_to_tensor(named[node.name])
            if node.family == "categorical" and v.dtype.is_integer:
                v = tf.one_hot(v, node.size)
            latents.append(tf.cast(v, tf.float32))
        return self.p_x_given_latents(latents)

    # -------------------------------------------------------------- objective

    def set_labelled_tail(self, rows: int, observed_nodes=()) -> None:
        """Declare that the last `rows` examples of every training minibatch carry the labels of
        `observed_nodes` (as the `share` pipeline lays minibatches out, and all-labelled ones).

        The training step then computes those examples apart, feeding each such node that
        `enumerate` would enumerate its label once (`estimators.Observed`): the same objective,
        with E * (B - rows) + E' * rows decoder rows instead of E * B (E' the product of the
        sizes of the enumerated nodes left). rows = 0 turns it off. Not applied under a strategy
        with several replicas (which splits minibatches across them) or with batch norm (whose
        statistics would be taken over two parts).
        """
        enumerated = {n for n, e in self.estimators.items() if e.name == "enumerate"}
        pinned = tuple(n for n in observed_nodes if n in enumerated)
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        self.labelled_tail = int(rows) if pinned and not self.model_config.batch_norm else 0
        self._tail_estimators = self._build_estimators(observed=pinned) if self.labelled_tail else None

    def _build_estimators(self, observed=()):
        cfg = self.objective_config
        return build_estimators(self.latent_graph, cfg.estimator, cfg.max_enumeration_rows, observed=observed,
                                top_k=cfg.enumeration_top_k)

    def set_label_rows(self, rows: int) -> None:
        """Declare that only the last `rows` examples of every training minibatch can carry a label
        (the `share` pipeline's layout: its labelled part last). The supervised term on shifted
        copies (`objective.augment_labelled`) then runs q(node | t(x)) on those rows alone, not on
        the whole minibatch: the same values (every copy is still drawn, so the noise is the same)
        for a fifth of that classifier pass in `mnist-shift`. rows = 0 (the default): any row.
        Not applied under a strategy with several replicas (each holds a slice of the minibatch)
        or with batch norm (whose statistics would be taken over the rows alone)."""
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        self.label_rows = 0 if self.model_config.batch_norm else int(rows)

    def _first_label_row(self, x) -> int:
        """Where the rows that can carry a label start in this minibatch (`set_label_rows`); 0: anywhere."""
        batch, rows = x.shape[0], self.label_rows
        if not rows or batch is None or rows >= batch or tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return 0
        return batch - rows

    def set_labelled_batches(self, observed_nodes=()) -> None:
        """Declare that a training minibatch may be labelled throughout in `observed_nodes` (as
        `rate` supervision draws them). The step then checks each minibatch, and computes a
        labelled one with each such node that `enumerate` would enumerate fed its label once
        (`estimators.Observed`), like `set_labelled_tail` does for a declared tail; other
        minibatches as usual. One compiled step holds both paths (tf.cond). () turns it off."""
        enumerated = {n for n, e in self.estimators.items() if e.name == "enumerate"}
        pinned = tuple(n for n in observed_nodes if n in enumerated)
        self.labelled_batch_nodes = pinned
        self._labelled_batch_estimators = self._build_estimators(observed=pinned) if pinned else None

    def _labelled_batch_test(self, labels):
        """A boolean tensor, true when this training minibatch is labelled throughout in the
        nodes `set_labelled_batches` declared; None when the step need not tell."""
        if (self.labelled_tail or self._labelled_batch_estimators is None
                or tf.distribute.get_strategy().num_replicas_in_sync > 1):
            return None
        given = self._label_dict(labels)
        return tf.reduce_all([tf.reduce_all(tf.cast(given[n], tf.int32) >= 0) for n in self.labelled_batch_nodes])

    def training_terms(self, x, labels, estimators=None):
        """`objective_terms` in training, the labelled tail (`set_labelled_tail`) computed apart.
        `estimators`: a minibatch labelled throughout (`set_labelled_batches`, `train_step`)."""
        batch, tail = x.shape[0], self.labelled_tail
        several = tf.distribute.get_strategy().num_replicas_in_sync > 1
        if estimators is not None:
            return self.objective_terms(x, labels, training=True, estimators=estimators)
        if not tail or batch is None or tail > batch or several:
            return self.objective_terms(x, labels, training=True)
        head = batch - tail

        def rows(t, a, b):
            return tf.nest.map_structure(lambda v: v[a:b], t)
        tail_terms = self.objective_terms(x[head:], rows(labels, head, batch), training=True,
                                          estimators=self._tail_estimators)
        if not head:
            return tail_terms
        head_terms = self.objective_terms(x[:head], rows(labels, 0, head), training=True)

        def per_example(t, n):     # terms that are a constant 0 for a graph without the nodes they need
            t = tf.convert_to_tensor(t, tf.float32)
            return t if t.shape.rank else tf.fill([n], t)
        return {k: tf.concat([per_example(head_terms[k], head), per_example(tail_terms[k], tail)], 0)
                for k in head_terms}

    def objective_terms(self, x, labels=None, training=False, estimators=None) -> dict[str, tf.Tensor]:
        """Per-example terms of the objective, shape (B,) each (see objectives.py).

        `labels`: a tensor for the graph's one labelled node or {node: values}; -1 (discrete)
        or NaN (Normal) marks a missing value, a missing key an unlabelled node. `estimators`:
        the nodes' estimators, if not the model's own (`training_terms`).
        """
        x = self._check_images(x)
        estimators = estimators or self.estimators
        observations = self._observations(labels)
        ctx = Context(seed=self._sample_seed, temperature=self._temperature())
        values, weights, per_node = {}, None, {}
        shared = self.shared_features(x, training)
        for node in self.latent_graph:
            family = self.families[node.name]
            q = self.q_node(node.name, x, [values[p] for p in node.parents], training, shared)
            observed, mask = observations.get(node.name, (None, None))
            q_elbo = q
            if node.name in self.classifier_names and self.objective_config.classifier_elbo_weight != 1.0:
                # The same q for the ELBO, with a scaled gradient into the classifier (config.py).
                q_elbo = family.distribution(objectives.scale_gradient(
                    q.logits_parameter(), self.objective_config.classifier_elbo_weight), name=node.name)
            node_terms = estimators[node.name](family, q_elbo, self.prior(node.name, values), observed,
                                                    mask, ctx)
            values[node.name] = node_terms.value                                # (B, V) | (E, 1|B, V)
            if node_terms.weight is not None:
                weights = node_terms.weight if weights is None else weights * node_terms.weight   # (E, B)
            per_node[node.name] = (q, node_terms.kl, observed, mask)

        for node in self.latent_graph.auxiliary_nodes:
            # log q(a | x) - log p(a | x, y, z) at a's sample: its prior reads nodes sampled after it
            q, _, observed, mask = per_node[node.name]
            prior = self.auxiliary_prior(node.name, x, values, training)
            per_node[node.name] = (q, q.log_prob(values[node.name]) - prior.log_prob(values[node.name]),
                                   observed, mask)                              # (B,) | (E, B)
        reconstruction = self.p_x_given_latents(
            [values[n.name] for n in self.latent_graph], training).log_prob(x)    # (B,) | (E, B)
        terms = {"reconstruction": expectation(weights, reconstruction)}
        cfg = self.objective_config
        # Every q(node | x') the labels and the consistency terms read on another minibatch x' is
        # asked for first and computed in one call per node (`q_from_x_parts`).
        asked = {}

        def ask(name, purpose, inputs):
            asked.setdefault(name, {})[purpose] = inputs

        # one weakly transformed copy of the minibatch for the supervised term of every labelled
        # node that reads x alone, read only where a label can be (set_label_rows); the other rows'
        # term is 0 either way
        geometry = ((cfg.augment_rotation, cfg.augment_scale, cfg.augment_elastic, cfg.augment_elastic_sigma)
                    if cfg.augment_labelled_geometry else ())
        shifted = (objectives.random_shift_and_flip(x, self._sample_seed(), cfg.augment_shift, cfg.augment_flip,
                                                    0, *geometry)
                   if cfg.augment_labelled and training else None)
        first = self._first_label_row(x) if shifted is not None else 0
        for name, (_, _, observed, _) in per_node.items():
            if (shifted is not None and observed is not None and self.latent_graph[name].labelled
                    and self.latent_graph.reads_x_alone(name)):
                ask(name, "labels", shifted[first:] if first else shifted)
        if cfg.consistency_weight and training:
            for node in self.held_still:
                r_adv = objectives.adversarial_perturbation(
                    lambda xp, n=node.name: self.q_from_x(n, xp, training), x, per_node[node.name][0],
                    self._sample_seed(), cfg.consistency_epsilon, cfg.consistency_xi)
                ask(node.name, "consistency", x + r_adv)
        # the target q(node | x) of the augmentation and MixUp terms, the teacher's computed once for both
        targets = ({node.name: self.teacher_q(node.name, x) if cfg.augment_teacher else per_node[node.name][0]
                    for node in self.held_still} if (cfg.augment_weight or cfg.mixup_weight) and training else {})
        if cfg.augment_weight and training:
            for node in self.held_still:
                ask(node.name, "augment", objectives.random_shift_and_flip(
                    x, self._sample_seed(), cfg.augment_shift, cfg.augment_flip, cfg.augment_cutout,
                    cfg.augment_rotation, cfg.augment_scale, cfg.augment_elastic, cfg.augment_elastic_sigma))
        mixup_targets = {}
        if cfg.mixup_weight and training:
            for node in self.held_still:
                if node in self.latent_graph.classifier_nodes:
                    mixed, mixup_targets[node.name] = objectives.mixup_pairs(
                        x if shifted is None else shifted,
                        self._mixup_targets(targets[node.name], per_node[node.name]),
                        self._sample_seed(), cfg.mixup_concentration)
                    ask(node.name, "mixup", mixed)
        answers = {name: dict(zip(parts, self.q_from_x_parts(name, list(parts.values()), training)))
                   for name, parts in asked.items()}

        batch = tf.shape(x)[:1]
        any_observed = tf.zeros(batch, tf.bool)
        for name, (q, kl, observed, mask) in per_node.items():
            terms[f"kl/{name}"] = expectation(weights, kl)
            if not self.latent_graph[name].labelled:
                continue
            if observed is None:                                                # no labels for this node
                terms[f"log_q/{name}"] = terms[f"observed/{name}"] = tf.zeros(batch)
                continue
            if "labels" in answers.get(name, {}):                              # log q(node | t(x)); config.py
                on_shifted = self.families[name].log_prob(answers[name]["labels"], observed[first:])
                log_q = tf.where(mask[first:], on_shifted, 0.0)
                log_q = tf.concat([tf.zeros([first]), log_q], 0) if first else log_q
            else:
                log_q = tf.where(mask, self.families[name].log_prob(q, observed), 0.0)
            terms[f"log_q/{name}"] = expectation(weights, log_q)
            terms[f"observed/{name}"] = tf.cast(mask, tf.float32)
            any_observed = any_observed | mask
        for node in self.latent_graph.classifier_nodes:
            probs = per_node[node.name][0].probs_parameter()                    # (B, K) | (E, B, K)
            if probs.shape.rank > 2:   # q(node | enumerated parents): marginalise the rows
                probs = tf.reduce_sum(weights[..., None] * probs, axis=0)
            terms[f"probs/{node.name}"] = probs
        terms["elbo"] = objectives.elbo(terms["reconstruction"],
                                        [terms[f"kl/{n.name}"] for n in self.latent_graph])
        terms["labelled"] = tf.cast(any_observed, tf.float32)
        terms["entropy"] = self._unlabelled_entropy(per_node, weights)
        if cfg.consistency_weight and training:
            terms["consistency"] = tf.add_n([
                _weighted(node, tfd.kl_divergence(objectives.held_fixed(per_node[node.name][0]),
                                                  answers[node.name]["consistency"]))
                for node in self.held_still])
        if cfg.augment_weight and training:
            terms["augment"] = tf.add_n([
                _weighted(node, objectives.augmentation_divergence(
                    targets[node.name], answers[node.name]["augment"], cfg.augment_threshold,
                    cfg.augment_alignment, cfg.augment_temperature))
                for node in self.held_still])
        if cfg.mixup_weight and training:
            terms["mixup"] = tf.add_n([
                _weighted(node, objectives.mixup_divergence(
                    per_node[node.name][0], mixup_targets[node.name], answers[node.name]["mixup"]))
                for node in self.held_still if node in self.latent_graph.classifier_nodes])
        return terms

    def _mixup_targets(self, target, node_terms):
        """The MixUp term's targets for a classifier node: the label's one-hot where observed,
        else `target` (q(node | x), or the teacher's with objective.augment_teacher), aligned with
        objective.augment_alignment as the augmentation term aligns it. (B, K)"""
        _, _, observed, mask = node_terms
        probs = target.probs_parameter()
        if self.objective_config.augment_alignment:
            probs = objectives.aligned_probabilities(probs)
        return probs if observed is None else tf.where(mask[:, None], observed, probs)

    def _unlabelled_entropy(self, per_node, weights):
        """sum over labelled categorical nodes of H(q(node | x, ...)) where the node is unobserved. (B,)"""
        total = 0.0
        for node in self.latent_graph.classifier_nodes:
            q, _, observed, mask = per_node[node.name]
            entropy = q.entropy()
            if observed is not None:
                entropy = tf.where(mask, 0.0, entropy)
            total += expectation(weights, entropy)
        return total

    def alphas(self) -> dict[str, float]:
        """The supervised weight of every labelled node (its own `alpha`, else objective.alpha)."""
        return {n.name: self.objective_config.alpha if n.alpha is None else n.alpha
                for n in self.latent_graph.labelled_nodes}

    # ---------------------------------------------------------- train / test

    @property
    def metrics(self):
        return list(self.trackers.values())

    def _update_trackers(self, terms, loss, labels):
        t = self.trackers
        labels = self._label_dict(labels)
        t["loss"].update_state(loss)
        for name in ("elbo", "reconstruction", *(f"kl/{n.name}" for n in self.latent_graph)):
            t[name].update_state(terms[name])
        for node in self.latent_graph.labelled_nodes:
            t[f"log_q/{node.name}"].update_state(terms[f"log_q/{node.name}"],
                                                 sample_weight=terms[f"observed/{node.name}"])
        for i, node in enumerate(self.latent_graph.classifier_nodes):
            if node.name not in labels:
                continue
            y = tf.cast(labels[node.name], tf.int32)
            correct = tf.cast(tf.equal(tf.argmax(terms[f"probs/{node.name}"], -1, output_type=tf.int32), y),
                              tf.float32)
            t["accuracy" if i == 0 else f"accuracy/{node.name}"].update_state(
                correct, sample_weight=tf.cast(y >= 0, tf.float32))
        t["labelled_fraction"].update_state(terms["labelled"])
        t["entropy"].update_state(terms["entropy"], sample_weight=1.0 - terms["labelled"])
        for name in ("consistency", "augment", "mixup"):
            if name in terms:
                t[name].update_state(terms[name])
        return {name: m.result() for name, m in t.items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 first reduces a minibatch across replicas to build the model symbolically, which
        # fails under MultiWorkerMirroredStrategy (keras-team/keras#20585). A model whose layers
        # and optimizer are built (compile_model builds both) has nothing left to build.
        if self.optimizer is not None and self.optimizer.built and all(
                layer.built for layer in self._flatten_layers()):
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        x, labels = data
        branch = self._labelled_batch_test(labels)
        if branch is None:
            terms, loss_per_example, grads = self._loss_and_gradients(x, labels)
        else:
            # Each branch takes its own gradient, so the cond passes on the gradients alone. A cond
            # around the loss only would hand the backward pass every intermediate of both branches
            # (the untaken one's as zeros: the K-fold decoder's activations on a labelled minibatch).
            terms, loss_per_example, grads = tf.cond(
                branch,
                lambda: self._loss_and_gradients(x, labels, self._labelled_batch_estimators, zeros=True),
                lambda: self._loss_and_gradients(x, labels, zeros=True))
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        logs = self._update_trackers(terms, loss_per_example, labels)
        return _reducible({_training_name(k): v for k, v in logs.items()})

    def _loss_and_gradients(self, x, labels, estimators=None, zeros=False):
        """The step's per-example terms, its per-example loss, and the loss's gradient with
        respect to every trainable variable: None for one the loss does not read, or with `zeros`
        a zero (tf.cond's branches must return the same structure)."""
        cfg = self.objective_config
        with tf.GradientTape() as tape:
            terms = self.training_terms(x, labels, estimators)
            beta = objectives.linear_ramp(self.optimizer.iterations, cfg.kl_warmup_steps)
            augment_ramp = objectives.linear_ramp(self.optimizer.iterations, cfg.augment_warmup_steps)
            loss_per_example = objectives.per_example_loss(
                terms, self.alphas(), beta, cfg.entropy_weight, cfg.consistency_weight, cfg.augment_weight,
                cfg.mixup_weight, augment_ramp)   # (B,)
            # Sum over the global batch so gradients do not depend on the replica count.
            global_batch = tf.cast(tf.shape(x)[0], tf.float32) * \
                tf.distribute.get_strategy().num_replicas_in_sync
            loss = tf.reduce_sum(loss_per_example) / global_batch
        unconnected = tf.UnconnectedGradients.ZERO if zeros else tf.UnconnectedGradients.NONE
        grads = tape.gradient(loss, self.trainable_variables, unconnected_gradients=unconnected)
        return terms, loss_per_example, grads

    def test_step(self, data):
        """Held-out metrics: the unlabelled bound on log p(x) and the accuracy of q(y|x) against the labels."""
        x, labels = data
        terms = self.objective_terms(x, None, training=False)
        return _reducible(self._update_trackers(terms, -terms["elbo"], labels))


def _reducible(logs: dict) -> dict:
    """The step's logged figures as Keras can reduce them across replicas. Under
    MultiWorkerMirroredStrategy Keras 3 averages each along axis 0, which a scalar lacks (the
    step fails); there each becomes a vector of one, which that mean turns back into a scalar.
    The figures are metric results, the same on every replica."""
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}


def _weighted(node, term):
    """A node's consistency term times its own `consistency` weight (None: 1)."""
    return term if node.consistency in (None, 1.0) else node.consistency * term
