"""A StructuredVAE is a Keras object: .keras files, keras.models.load_model, model.export."""

import numpy as np
import tensorflow as tf

import keras
from tfstructvae import Bernoulli, Categorical, LatentGraph, Normal, StructuredVAE
from tfstructvae.config import ModelConfig, ObjectiveConfig


def small_model():
    graph = LatentGraph(Categorical("y", 4, labelled=True), Bernoulli("thick", 2),
                        Normal("z", 2, parents=("y",), prior_parents=("y",)))
    return StructuredVAE((12, 12, 1), graph, model_config=ModelConfig(hidden_units=(16,)),
                         objective_config=ObjectiveConfig(estimator="enumerate", alpha=7.0), seed=3)


def test_keras_file_round_trips_graph_configuration_and_weights(tmp_path):
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again, StructuredVAE)
    assert again.latent_graph == model.latent_graph and again.objective_config == model.objective_config
    x = np.random.default_rng(0).uniform(size=(5, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(again.classify(x).numpy(), model.classify(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(again.prior_nets["z"].projections[0].kernel.numpy(),
                               model.prior_nets["z"].projections[0].kernel.numpy())


def test_model_export_writes_the_serving_signatures(tmp_path):
    model = small_model()
    diffs = model.export(str(tmp_path / "served"), verbose=False)
    assert max(diffs.values()) < 1e-5
    loaded = tf.saved_model.load(str(tmp_path / "served"))
    assert {"classify", "encode", "encode_given_class", "decode", "reconstruct"} <= set(loaded.signatures)
    x = tf.constant(np.random.default_rng(1).uniform(size=(3, 12, 12, 1)), tf.float32)
    np.testing.assert_allclose(loaded.signatures["classify"](images=x)["probabilities"].numpy(),
                               model.classify(x).numpy(), atol=1e-6)


def test_weight_average_is_polyak_averaging_and_replaces_the_weights_only_when_asked():
    from tfstructvae.train import Adam
    m = 0.5
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(Adam(0.1, use_ema=True, ema_momentum=m), "mse")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(float(model.get_weights()[0][0, 0])))
    x, y = np.ones((4, 1), np.float32), np.full((4, 1), 3.0, np.float32)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[record])
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[record])   # a resumed run: fit again
    assert float(model.get_weights()[0][0, 0]) == seen[-1]       # fit ends on the weights it trained
    assert len(set(seen)) == 5                                    # and the second fit went on from them
    average = seen[0]                                             # Keras starts the average at step 1
    for w in seen[1:]:
        average = m * average + (1 - m) * w
    model.optimizer.average_weights(model.trainable_variables)
    np.testing.assert_allclose(model.get_weights()[0][0, 0], average, rtol=1e-6)


def test_epoch_time_is_logged_without_the_validation(monkeypatch):
    import time
    import types
    from tfstructvae import callbacks
    # The callback's clock jumps 1,000 s during each validation pass: an epoch time under that
    # excludes the validation whatever the machine's load (a real sleep raced busy machines).
    jump = {"s": 0.0}
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + jump["s"]))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    slow_validation = keras.callbacks.LambdaCallback(on_test_end=lambda logs: jump.update(s=jump["s"] + 1000.0))
    x = np.ones((8, 1), np.float32)
    history = model.fit(x, x, epochs=2, batch_size=4, validation_data=(x, x), verbose=0,
                        callbacks=[callbacks.EpochTime(), slow_validation])
    times = history.history["epoch_time_s"]
    assert len(times) == 2 and all(0 < t < 1000.0 for t in times)
    assert jump["s"] == 2000.0                     # both validation passes ran
