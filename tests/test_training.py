"""A few training steps for every estimator x supervision mode, and the train step's compilation."""

import dataclasses

import numpy as np
import pytest

from tfstructvae.config import Config, DataConfig, ModelConfig, ObjectiveConfig, TrainConfig
from tfstructvae.data import labelled_split, training_pipeline
from tfstructvae.model import metric_names
from tfstructvae.train import build_model, compile_model


def small_config(estimator, mode, **objective):
    return Config(data=DataConfig(batch_size=32, supervision_mode=mode, supervision_rate=0.5,
                                  labelled_share=0.25, labels_per_class=5),
                  model=ModelConfig(style_dim=4, hidden_units=(64,)),
                  objective=ObjectiveConfig(estimator=estimator, **objective),
                  train=TrainConfig(epochs=2, steps_per_epoch=4, jit_compile=True)).validate()


def fit_small(cfg, mnist, n=2000):
    split = labelled_split(mnist.y_train[:n], cfg.data.labels_per_class, 10, 0)
    x, y = mnist.x_train[:n], mnist.y_train[:n]
    ds, _ = training_pipeline(x[split.unlabelled], x[split.labelled], y[split.labelled], cfg.data)
    model = compile_model(build_model(cfg, (28, 28, 1)), cfg, cfg.train.steps_per_epoch)
    traces = []
    step = model.train_step

    def counted_train_step(data):       # Python runs only while tf.function traces
        traces.append(1)
        return step(data)

    model.train_step = counted_train_step
    history = model.fit(ds, epochs=cfg.train.epochs, steps_per_epoch=cfg.train.steps_per_epoch, verbose=0)
    model.traces = len(traces)
    return model, history.history


@pytest.mark.parametrize("estimator", ["plugin", "enumerate"])
@pytest.mark.parametrize("mode", ["rate", "share"])
def test_estimator_and_mode_train(mnist, estimator, mode):
    model, history = fit_small(small_config(estimator, mode), mnist)
    assert set(metric_names(model.latent_graph, training=True)) <= set(history)
    for name in ("loss", "elbo", "reconstruction", "kl/z", "kl/y", "log_q/y"):
        assert np.all(np.isfinite(history[name])), name
    assert history["kl/z"][-1] >= 0 and history["kl/y"][-1] >= 0
    assert 0 < history["labelled_fraction"][-1] < 1
    # XLA stays on and the step is traced once for the whole run (no retracing).
    assert model.jit_compile is True
    assert model.traces == 1


def test_regularisers_train(mnist):
    _, history = fit_small(small_config("plugin", "share", entropy_weight=1.0, consistency_weight=1.0,
                                        kl_warmup_steps=5), mnist)
    assert history["consistency"][-1] > 0 and np.isfinite(history["loss"][-1])


def test_loss_falls_and_accuracy_rises(mnist):
    cfg = small_config("plugin", "rate").override(**{"train.steps_per_epoch": 40, "train.epochs": 3})
    model, history = fit_small(cfg, mnist, n=5000)
    assert history["loss"][-1] < history["loss"][0]
    probs = model.classify(mnist.x_test[:1000].astype("float32") / 255.0).numpy()
    assert (probs.argmax(-1) == mnist.y_test[:1000]).mean() > 0.4     # chance is 0.1


@pytest.mark.parametrize("estimator", ["plugin", "enumerate"])
def test_mirrored_strategy_on_two_logical_cpus(estimator):
    import os
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(__file__), "scripts", "mirrored_two_cpus.py")
    result = subprocess.run([sys.executable, script, estimator], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("replicas")][-1]
    assert line.startswith("replicas 2 loss")
    losses = [float(v) for v in line.split("loss [")[1].split("]")[0].split(",")]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert "steps per call 1" in result.stdout                 # train.steps_per_execution=5 falls back to 1


def test_non_finite_term_stops_training_and_names_it():
    import tensorflow as tf
    from tfstructvae.callbacks import NonFiniteError, StopOnNonFinite
    cfg = small_config("plugin", "rate")
    model = compile_model(build_model(cfg, (28, 28, 1)), cfg, 4)
    x = np.full((8, 28, 28, 1), np.nan, np.float32)
    ds = tf.data.Dataset.from_tensors((x, np.full(8, -1, np.int32))).repeat()
    guard = StopOnNonFinite()
    model.fit(ds, epochs=3, steps_per_epoch=4, callbacks=[guard], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 1            # stopped at the first bad step
    with pytest.raises(NonFiniteError, match=r"step 1 .*objective term 'reconstruction' is nan"):
        guard.raise_if_failed()


@pytest.mark.parametrize("estimator", ["plugin", "enumerate"])
def test_extreme_inputs_give_finite_objective_and_gradients(estimator):
    import tensorflow as tf
    cfg = small_config(estimator, "share", consistency_weight=1.0)
    model = build_model(cfg, (28, 28, 1))
    x = tf.constant(np.stack([np.zeros((28, 28, 1)), np.ones((28, 28, 1))] * 2), tf.float32)
    y = tf.constant([0, -1, 9, -1])
    # huge logits: scale the class head's and decoder head's weights
    for head in (model.q_nets[0].head, model.p_net.head):
        head.kernel.assign(head.kernel * 1e4)
    with tf.GradientTape() as tape:
        terms = model.objective_terms(x, y, training=True)
        from tfstructvae import objectives
        loss = tf.reduce_mean(objectives.per_example_loss(terms, {"y": 50.0}, 1.0, 1.0, 1.0))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    for name in ("reconstruction", "kl/z", "kl/y", "elbo", "log_q/y", "consistency"):
        assert np.all(np.isfinite(terms[name].numpy())), name
    assert all(np.all(np.isfinite(g.numpy())) for g in grads if g is not None)


def test_classifier_options_shape_only_q_y_and_round_trip_through_json():
    from tfstructvae.model import StructuredVAE
    cfg = Config(model=ModelConfig(style_dim=2, hidden_units=(32,), classifier_units=(48, 24),
                                   classifier_network="conv")).validate()
    again = Config.from_dict(__import__("json").loads(cfg.to_json()))
    assert again == cfg and again.model.classifier_units == (48, 24)
    model = StructuredVAE((28, 28, 1), model_config=again.model)
    q_y, q_z = model.q_nets
    assert [d.units for d in [q_y.input_projections[0], *q_y.hidden]] == [48, 24]
    assert [d.units for d in [q_z.input_projections[0], *q_z.hidden]] == [32]
    assert type(model.x_bodies[0]).__name__ == "ConvBody" and type(model.x_bodies[1]).__name__ == "FlattenBody"
    assert model.classify(np.zeros((3, 28, 28, 1), "float32")).shape == (3, 10)
    with pytest.raises(Exception, match="classifier_units must be positive"):
        ModelConfig(classifier_units=(0,)).validate()
    with pytest.raises(Exception, match="unknown classifier_network 'resnet'"):
        ModelConfig(classifier_network="resnet").validate()


def test_classifier_filters_shape_the_conv_body_of_q_y_alone():
    from tfstructvae.model import StructuredVAE
    cfg = Config(model=ModelConfig(style_dim=2, hidden_units=(16,), classifier_network="conv", network="conv",
                                   classifier_filters=(8, 16, 24))).validate()
    again = Config.from_dict(__import__("json").loads(cfg.to_json()))
    assert again == cfg and again.model.classifier_filters == (8, 16, 24)
    model = StructuredVAE((28, 28, 1), model_config=again.model)
    y_body, z_body = model.x_bodies
    assert [c.filters for c in y_body.convs] == [8, 16, 24]
    assert [c.filters for c in z_body.convs] == [32, 64]         # q(z|x,y) keeps the paper's body
    # three stride-2 layers: 28 -> 14 -> 7 -> 4, times 24 filters, into q(y|x)'s first layer
    assert model.q_nets[0].input_projections[0].kernel.shape == (4 * 4 * 24, 16)
    assert model.classify(np.zeros((3, 28, 28, 1), "float32")).shape == (3, 10)
    with pytest.raises(Exception, match="classifier_filters must be positive"):
        ModelConfig(classifier_filters=(32, 0)).validate()
    with pytest.raises(Exception, match="set model.classifier_network=conv"):
        ModelConfig(classifier_filters=(32, 64)).validate()          # an MLP classifier has no conv body
    with pytest.raises(Exception, match="set one or the other"):
        ModelConfig(shared_encoder=True, classifier_filters=(32,)).validate()


@pytest.mark.parametrize("estimator", ["plugin", "enumerate"])
def test_mixed_bfloat16_computes_the_networks_in_bfloat16_and_the_objective_in_float32(estimator):
    import keras
    import tensorflow as tf
    from tfstructvae.model import StructuredVAE
    mixed = Config(model=ModelConfig(style_dim=4, hidden_units=(32,), classifier_network="conv",
                                     dtype_policy="mixed_bfloat16"),
                   objective=ObjectiveConfig(estimator=estimator)).validate()
    again = Config.from_dict(__import__("json").loads(mixed.to_json()))
    assert again == mixed
    policy = keras.config.dtype_policy().name
    model = StructuredVAE((28, 28, 1), model_config=mixed.model, objective_config=mixed.objective)
    assert keras.config.dtype_policy().name == policy            # the global policy is left as it was
    layers = [model.p_net.head, model.q_nets[0].head, model.x_bodies[0].convs[0]]
    assert {layer.compute_dtype for layer in layers} == {"bfloat16"}
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    full = StructuredVAE((28, 28, 1), model_config=dataclasses.replace(mixed.model, dtype_policy="float32"),
                         objective_config=mixed.objective)
    full.set_weights(model.get_weights())
    rng = np.random.default_rng(0)
    x = tf.constant((rng.uniform(size=(16, 28, 28, 1)) < 0.3).astype("float32"))
    y = tf.constant(np.where(np.arange(16) < 4, np.arange(16) % 10, -1), tf.int32)
    with tf.GradientTape() as tape:
        terms = model.objective_terms(x, y, training=True)
        loss = tf.reduce_mean(-terms["elbo"])
    grads = tape.gradient(loss, model.trainable_variables)
    assert terms["elbo"].dtype == tf.float32 and model.classify(x).dtype == tf.float32
    assert all(g is None or (g.dtype == tf.float32 and np.all(np.isfinite(g.numpy()))) for g in grads)
    # bfloat16 keeps 8 bits of mantissa: the bound matches float32's to well under 1%
    ref = full.objective_terms(x, y, training=True)["elbo"]
    np.testing.assert_allclose(terms["elbo"].numpy(), ref.numpy(), rtol=1e-2)
    np.testing.assert_allclose(model.classify(x).numpy(), full.classify(x).numpy(), atol=2e-2)
    with pytest.raises(Exception, match="unknown dtype_policy 'mixed_float16'"):
        ModelConfig(dtype_policy="mixed_float16").validate()


def test_teacher_target_reads_adams_weight_average_not_the_trained_weights(mnist):
    import tensorflow as tf
    cfg = Config(data=DataConfig(batch_size=32, supervision_mode="share", labelled_share=0.25, labels_per_class=5),
                 model=ModelConfig(style_dim=4, hidden_units=(32,), classifier_network="conv",
                                   classifier_filters=(8, 16)),
                 objective=ObjectiveConfig(augment_weight=10.0, augment_flip=True, augment_teacher=True),
                 train=TrainConfig(epochs=1, steps_per_epoch=3, jit_compile=True, ema_momentum=0.9)).validate()
    model, history = fit_small(cfg, mnist)
    assert np.all(np.isfinite(history["loss"])) and history["augment"][-1] > 0
    x = tf.constant(mnist.x_train[:8].astype("float32") / 255.0)
    optimizer = model.optimizer
    body, net = model.x_bodies[0], model.q_nets[0]
    averages = [optimizer._model_variables_moving_average[optimizer._get_variable_index(v)]
                for v in body.trainable_variables + net.trainable_variables]
    for v, a in zip(body.trainable_variables + net.trainable_variables, averages):
        a.assign(v.value)                          # teacher = student: the same q(y|x)
    np.testing.assert_allclose(model.teacher_q("y", x).probs_parameter().numpy(),
                               model.q_node("y", x, []).probs_parameter().numpy(), atol=1e-6)
    net.head.kernel.assign(net.head.kernel.value + 1.0 * np.eye(*net.head.kernel.shape, dtype="float32"))
    student = model.q_node("y", x, []).probs_parameter().numpy()
    teacher = model.teacher_q("y", x).probs_parameter().numpy()
    assert np.abs(student - teacher).max() > 1e-3                 # the trained weights moved, the average did not
    for a in averages:
        a.assign(tf.zeros_like(a))                 # an all-zero average: uniform logits
    np.testing.assert_allclose(model.teacher_q("y", x).probs_parameter().numpy(), 0.1, atol=1e-6)
    with pytest.raises(Exception, match="set train.ema_momentum > 0"):
        Config(objective=ObjectiveConfig(augment_weight=1.0, augment_teacher=True)).validate()


class StepClock:
    """A clock on which a training step takes `ms[True]` ms with XLA and `ms[False]` without,
    plus `load_ms` from step `load_from` on (another process starting on the machine)."""

    def __init__(self, ms, load_from=None, load_ms=0.0):
        self.ms, self.now, self.model, self.ticks = ms, 0.0, None, 0
        self.load_from, self.load_ms = load_from, load_ms

    def __call__(self):
        self.ticks += 1
        if self.ticks % 2 == 0:                      # a step's end: advance by that step's cost
            step = self.ticks // 2                   # 1, 2, ...
            loaded = self.load_from is not None and step >= self.load_from
            self.now += (self.ms[bool(self.model.jit_compile)] + (self.load_ms if loaded else 0.0)) / 1000
        return self.now


# The last case: XLA 12 ms, without 10 ms, and 10 ms more a step from step 6 on. Timed one block
# after the other (steps 3-5 with XLA, 8-10 without) XLA would look faster (12 against 20 ms);
# alternating from step 5, both are timed under the load and the step without XLA wins (20 < 22).
@pytest.mark.parametrize("xla_ms, chosen, load_from, measured", [
    (30.0, False, None, {True: 30.0, False: 20.0}), (10.0, True, None, {True: 10.0, False: 20.0}),
    (12.0, False, 6, {True: 22.0, False: 20.0})])
def test_faster_step_keeps_the_faster_compilation(mnist, xla_ms, chosen, load_from, measured):
    import keras

    from tfstructvae.callbacks import FasterStep
    cfg = small_config("plugin", "share").override(**{"train.jit_compile": "auto"})
    split = labelled_split(mnist.y_train[:2000], 5, 10, 0)
    x, y = mnist.x_train[:2000], mnist.y_train[:2000]
    ds, _ = training_pipeline(x[split.unlabelled], x[split.labelled], y[split.labelled], cfg.data)
    model = compile_model(build_model(cfg, (28, 28, 1)), cfg, 10)
    assert model.jit_compile is True                     # "auto" starts from XLA
    clock = StepClock({True: xla_ms, False: 10.0 if load_from else 20.0}, load_from, 10.0)
    said = []
    chooser = FasterStep(warmup=2, timed=3, clock=clock, log=said.append)
    clock.model = model
    builds = []
    make = model.make_train_function
    model.make_train_function = lambda force=False: (builds.append(force), make(force))[1]
    model.fit(ds, epochs=2, steps_per_epoch=8, callbacks=[chooser, keras.callbacks.History()], verbose=0)
    assert chooser.chosen is chosen and model.jit_compile is chosen
    assert chooser.step_ms == {k: pytest.approx(v) for k, v in measured.items()}
    assert builds.count(True) == 1                       # the step without XLA built once; XLA's reused
    assert model.train_function is chooser._functions[chosen]
    assert len(said) == 1 and ("continues with XLA" if chosen else "continues without XLA") in said[0]
    assert np.isfinite(model.evaluate(ds.take(2), verbose=0, return_dict=True)["loss"])


def test_auto_xla_is_reported_in_metrics_and_refused_when_not_a_choice(tmp_path, mnist_dir):
    import json

    from tfstructvae.config import ConfigError
    from tfstructvae.train import train_and_evaluate
    cfg = small_config("plugin", "share").override(**{
        "data.data_dir": mnist_dir, "data.validation_size": 0, "train.jit_compile": "auto",
        "train.epochs": 1, "train.steps_per_epoch": 50})
    metrics = train_and_evaluate(cfg, str(tmp_path / "run"), verbose=0)
    assert metrics["step_ms_xla"] > 0 and metrics["step_ms_without_xla"] > 0
    assert metrics["xla"] == (metrics["step_ms_xla"] <= metrics["step_ms_without_xla"])
    assert json.load(open(tmp_path / "run" / "config.json"))["train"]["jit_compile"] == "auto"
    with pytest.raises(ConfigError, match="jit_compile must be true, false or 'auto'"):
        cfg.override(**{"train.jit_compile": "sometimes"}).validate()


def test_a_non_finite_term_outside_the_loss_still_stops_training():
    from tfstructvae.callbacks import StopOnNonFinite
    guard = StopOnNonFinite()

    class Model:
        stop_training = False

        class optimizer:
            class iterations:
                @staticmethod
                def numpy():
                    return 7
    guard.set_model(Model())
    guard.on_train_batch_end(0, {"loss": 3.0, "entropy": 0.5, "elbo": -3.0})
    assert guard.message is None and not guard.model.stop_training
    guard.on_train_batch_end(1, {"loss": 3.0, "entropy": float("nan"), "elbo": -3.0})   # weight 0: not in the loss
    assert guard.model.stop_training and "objective term 'entropy' is nan" in guard.message


def test_weight_decay_shrinks_weights_by_learning_rate_times_decay():
    import tensorflow as tf
    from tfstructvae.config import ConfigError
    lr, wd = 0.01, 0.5
    cfg = small_config("plugin", "rate").override(**{"train.learning_rate": lr, "train.weight_decay": wd})
    model = compile_model(build_model(cfg, (28, 28, 1)), cfg, 4)
    var = model.trainable_variables[0]
    before = var.numpy().copy()
    # a zero gradient: Adam's own update is 0, so only the decoupled decay moves the weight
    model.optimizer.apply_gradients([(tf.zeros_like(var), var)])
    np.testing.assert_allclose(var.numpy(), before * (1 - lr * wd), rtol=1e-6, atol=1e-7)
    plain = small_config("plugin", "rate")
    assert compile_model(build_model(plain, (28, 28, 1)), plain, 4).optimizer.weight_decay is None
    with pytest.raises(ConfigError, match="weight_decay must be >= 0"):
        TrainConfig(weight_decay=-1e-4).validate()


def test_gradient_clipping_bounds_each_element_or_the_joint_norm():
    import tensorflow as tf
    from tfstructvae.config import ConfigError
    grads = [tf.constant([3.0, -0.5, -4.0]), tf.constant([0.2])]
    by_value = small_config("plugin", "rate").override(**{"train.clip_value": 1.0})
    opt = compile_model(build_model(by_value, (28, 28, 1)), by_value, 4).optimizer
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in opt._clip_gradients(grads)]),
                               [1.0, -0.5, -1.0, 0.2])
    by_norm = small_config("plugin", "rate").override(**{"train.global_clip_norm": 2.5})
    opt = compile_model(build_model(by_norm, (28, 28, 1)), by_norm, 4).optimizer
    norm = np.sqrt(3.0 ** 2 + 0.5 ** 2 + 4.0 ** 2 + 0.2 ** 2)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in opt._clip_gradients(grads)]),
                               np.array([3.0, -0.5, -4.0, 0.2]) * 2.5 / norm, rtol=1e-6)
    plain = small_config("plugin", "rate")
    opt = compile_model(build_model(plain, (28, 28, 1)), plain, 4).optimizer
    assert opt.clipvalue is None and opt.global_clipnorm is None
    with pytest.raises(ConfigError, match="clip_value must be >= 0"):
        TrainConfig(clip_value=-1.0).validate()


def test_weight_average_ramps_its_momentum_with_the_step():
    import keras
    import tensorflow as tf
    from tfstructvae.config import ConfigError
    from tfstructvae.train import Adam
    finals = {}
    for ramp in (True, False):
        w = keras.Variable(np.zeros(3, np.float32))
        opt = Adam(0.1, use_ema=True, ema_momentum=0.95, ema_ramp=ramp)
        opt.build([w])
        expected = np.zeros(3)
        for t in range(40):
            opt.apply_gradients([(tf.constant([1.0, -1.0, 0.5]), w)])
            # Keras's constant momentum starts the average at the weights (momentum 0 at step 0)
            m = min(0.95, (1 + t) / (10 + t)) if ramp else (0.95 if t else 0.0)
            expected = m * expected + (1 - m) * w.numpy()
        finals[ramp] = opt._model_variables_moving_average[0].numpy()
        np.testing.assert_allclose(finals[ramp], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(finals[True] - finals[False]).max() > 0.05        # the ramp is not Keras's constant
    assert Adam.from_config(Adam(0.1, use_ema=True, ema_ramp=True).get_config()).ema_ramp
    with pytest.raises(ConfigError, match="ema_ramp"):
        small_config("plugin", "rate").override(**{"train.ema_ramp": True}).validate()


def test_mixup_term_trains_in_one_compiled_step(mnist):
    model, history = fit_small(small_config("plugin", "share", mixup_weight=5.0, augment_labelled=True), mnist)
    assert history["mixup"][-1] > 0 and np.isfinite(history["loss"]).all()
    assert model.traces == 1


def test_augment_warmup_ramps_inside_the_compiled_step(mnist):
    # The ramp reads the optimizer's step counter inside the step: no retrace as it grows.
    cfg = small_config("plugin", "share", augment_weight=5.0, mixup_weight=5.0, augment_labelled=True,
                       augment_warmup_steps=6)
    model, history = fit_small(cfg, mnist)
    assert model.traces == 1 and np.isfinite(history["loss"]).all() and history["mixup"][-1] > 0
    # A MixUp weight of 1e4 dominates the loss (its KL is of order 0.1 to 1 nats, the ELBO a few
    # hundred) unless the ramp holds it at 0: then the loss is the loss without the term.
    heavy = dict(mixup_weight=1e4, augment_labelled=True)
    loss = {warmup: fit_small(small_config("plugin", "share", augment_warmup_steps=warmup, **heavy),
                              mnist)[1]["loss"][-1]
            for warmup in (0, 10**9)}
    without = fit_small(small_config("plugin", "share", augment_labelled=True), mnist)[1]["loss"][-1]
    assert loss[10**9] == pytest.approx(without, rel=0.1)
    assert loss[0] > without + 500


@pytest.mark.parametrize("jit", [False, True])
def test_adam_takes_keras_adams_steps(jit):
    """train.Adam's fused update against Adam written out (and Keras's own Adam), with and without
    decoupled weight decay, eager and under XLA."""
    import keras
    import tensorflow as tf
    from tfstructvae.train import Adam
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(5)]
    for decay in (None, 0.01):
        weights = {}
        for cls in (Adam, keras.optimizers.Adam):
            w = keras.Variable(w0)
            opt = cls(0.05, weight_decay=decay)
            opt.build([w])
            step = tf.function(lambda g: opt.apply_gradients([(g, w)]), jit_compile=jit)
            for g in grads:
                step(tf.constant(g))
            weights[cls] = w.numpy()
        expected, m, v = w0.astype(np.float64), 0.0, 0.0
        for t, g in enumerate(grads, start=1):
            expected = expected - 0.05 * (decay or 0.0) * expected
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g ** 2
            expected = expected - 0.05 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
        np.testing.assert_allclose(weights[Adam], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[Adam], weights[keras.optimizers.Adam], rtol=1e-5, atol=1e-6)  # float32 rounding
