"""Objectives against closed forms, and distribution shapes."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfstructvae import objectives
from tfstructvae.config import ConfigError, ModelConfig, ObjectiveConfig
from tfstructvae.families import CategoricalFamily, NormalFamily
from tfstructvae.graph import GraphError
from tfstructvae.model import StructuredVAE

tfd = objectives.tfd

K, D, B = 10, 3, 4


def tiny_model(estimator="plugin", **objective):
    return StructuredVAE((28, 28, 1), model_config=ModelConfig(style_dim=D, hidden_units=(16,)),
                         objective_config=ObjectiveConfig(estimator=estimator, **objective), seed=1)


def images(seed=0, n=B):
    return tf.constant(np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)), tf.float32)


def test_distribution_shapes():
    model = tiny_model()
    x = images()
    q = model.encode(x)
    assert q["y"].batch_shape == (B,) and q["y"].event_shape == (K,)
    assert q["z"].batch_shape == (B,) and q["z"].event_shape == (D,)
    p = model.decode(tf.constant([0, 1, 2, 3]), tf.zeros([B, D]))
    assert p.batch_shape == (B,) and p.event_shape == (28, 28, 1)
    # enumeration: all K classes on a leading axis broadcast against the batch
    q_z_all = model.q_node("z", x, [tf.eye(K)[:, None, :]])
    assert q_z_all.batch_shape == (K, B) and q_z_all.event_shape == (D,)
    assert model.classify(x).shape == (B, K)
    np.testing.assert_allclose(model.classify(x).numpy().sum(-1), 1.0, rtol=1e-5)


def test_pixel_bernoulli_log_density_and_gradient_equal_tfps_for_grey_and_binary_pixels():
    from tfstructvae.families.bernoulli import LogitBernoulli
    rng = np.random.default_rng(0)
    # logits as enumeration decodes them, (K, B, D) against the images' (B, D); large |l| too
    logits = tf.constant(rng.normal(scale=8.0, size=(3, 6, 50)).astype("float32"))
    for x in (rng.uniform(size=(6, 50)), rng.uniform(size=(6, 50)) < 0.5):
        x = tf.constant(x, tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([logits, x])
            ours = LogitBernoulli(logits=logits, dtype=tf.float32).log_prob(x)
            tfps = objectives.tfd.Bernoulli(logits=logits, dtype=tf.float32).log_prob(x)
            weighted = [tf.reduce_sum(v * tf.range(1.0, 51.0) / 50.0) for v in (ours, tfps)]
        assert ours.shape == (3, 6, 50)
        np.testing.assert_allclose(ours.numpy(), tfps.numpy(), rtol=1e-5, atol=1e-5)
        for wrt in (logits, x):   # d/dl = x - sigmoid(l); d/dx = l, summed over the K decodings
            np.testing.assert_allclose(tape.gradient(weighted[0], wrt).numpy(), tape.gradient(weighted[1], wrt).numpy(),
                                       rtol=1e-5, atol=1e-5)
        sigmoid = 1.0 / (1.0 + np.exp(-logits.numpy()))
        np.testing.assert_allclose(tape.gradient(weighted[0], logits).numpy(),
                                   (x.numpy() - sigmoid) * np.arange(1, 51) / 50.0, atol=1e-6)


def test_normal_kl_matches_closed_form():
    model = tiny_model()
    q = model.q_node("z", images(), [tf.one_hot([0, 3, 5, 9], K)])
    mu, sigma = q.distribution.loc.numpy(), q.distribution.scale.numpy()
    by_hand = 0.5 * np.sum(mu ** 2 + sigma ** 2 - 1.0 - 2.0 * np.log(sigma), axis=-1)
    np.testing.assert_allclose(
        objectives.tfd.kl_divergence(q, NormalFamily.fixed_prior(D)).numpy(), by_hand, rtol=1e-5)
    # the model's kl/z for labelled examples is exactly this KL (no sampling involved)
    terms = model.objective_terms(images(), tf.constant([0, 3, 5, 9]))
    np.testing.assert_allclose(terms["kl/z"].numpy(), by_hand, rtol=1e-5)


def test_categorical_entropy_and_kl_y_by_hand():
    logits = tf.constant([[0.0, 1.0, -2.0, 0.5], [3.0, 3.0, 3.0, 3.0]])
    q = CategoricalFamily.distribution(logits)
    p = tf.nn.softmax(logits).numpy()
    entropy = -np.sum(p * np.log(p), axis=-1)
    np.testing.assert_allclose(q.entropy().numpy(), entropy, rtol=1e-6)
    # KL(q || uniform) = log K - H(q); a labelled example pays -log p(y) = log K.
    prior = CategoricalFamily.fixed_prior(4)
    np.testing.assert_allclose(CategoricalFamily.kl(q, prior, None).numpy(), math.log(4) - entropy,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(-prior.log_prob(tf.one_hot([2], 4)).numpy(), [math.log(4)], rtol=1e-6)


def test_m2_terms_identical_to_the_implementation_before_the_graph_restructuring():
    """tests/data/m2_reference.npz: the terms of the single-label M2 code (commit f8356f4) for fixed
    weights, noise and a half-labelled batch, with both estimators and the consistency term."""
    ref = np.load(os.path.join(os.path.dirname(__file__), "data", "m2_reference.npz"))
    renamed = {"kl_z": "kl/z", "kl_y": "kl/y", "log_q_label": "log_q/y", "entropy_unlabelled": "entropy"}
    for estimator in ("plugin", "enumerate"):
        model = StructuredVAE((28, 28, 1), model_config=ModelConfig(style_dim=3, hidden_units=(16,)),
                              objective_config=ObjectiveConfig(estimator=estimator, consistency_weight=1.0), seed=5)
        model.set_weights([ref[f"{estimator}/w{i}"] for i in range(int(ref[f"{estimator}/n_weights"]))])
        model.seed_generator.state.assign(ref[f"{estimator}/seed_state"])
        terms = model.objective_terms(tf.constant(ref["x"]), tf.constant(ref["y"]), training=True)
        for old in ("reconstruction", "kl_z", "kl_y", "elbo", "log_q_label", "entropy_unlabelled", "consistency"):
            np.testing.assert_allclose(terms[renamed.get(old, old)].numpy(), ref[f"{estimator}/{old}"],
                                       rtol=1e-6, atol=1e-6, err_msg=f"{estimator} {old}")


def test_enumerate_equals_explicit_sum_over_classes():
    """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)), with L computed class by class."""
    model = tiny_model("enumerate")
    x = images(3)
    state = model.seed_generator.state.numpy()

    model.seed_generator.state.assign(state)   # same z noise in every call below
    unlabelled = model.objective_terms(x, -tf.ones([B], tf.int32))
    q = model.classify(x).numpy()                                   # (B, K)
    per_class = []
    for k in range(K):                                              # explicit Python sum over y
        model.seed_generator.state.assign(state)
        per_class.append(model.objective_terms(x, tf.fill([B], k))["elbo"].numpy())
    labelled_elbo = np.stack(per_class, axis=1)                     # (B, K): L(x, k)
    entropy = -np.sum(q * np.log(q), axis=-1)
    np.testing.assert_allclose(unlabelled["elbo"].numpy(), np.sum(q * labelled_elbo, -1) + entropy,
                               rtol=1e-4)


def test_enumerate_top_k_is_the_bound_of_q_truncated_to_its_k_likeliest_classes(monkeypatch):
    """With enumeration_top_k = k: U(x) = sum_{y in top_k} q~(y) L(x, y) + H(q~), q~ = q renormalised
    over each example's k likeliest classes; a labelled example is read at its label alone."""
    # z at its mean: the rows of an enumeration draw their own noise, so L(x, y) computed class by
    # class would otherwise see other noise than the row that holds y
    monkeypatch.setattr(NormalFamily, "sample", staticmethod(lambda q, seed: q.distribution.loc))
    top_k = 3
    model = tiny_model("enumerate", enumeration_top_k=top_k)
    assert model.estimators["y"].rows.shape == (top_k, 1, top_k)
    x = images(3)
    terms = model.objective_terms(x, tf.constant([-1, 4, -1, -1]))
    q = model.classify(x).numpy()
    labelled_elbo = np.stack([model.objective_terms(x, tf.fill([B], k))["elbo"].numpy()
                              for k in range(K)], axis=1)           # (B, K): L(x, k)
    top = np.argsort(-q, axis=-1)[:, :top_k]
    q_top = np.take_along_axis(q, top, -1)
    q_top /= q_top.sum(-1, keepdims=True)
    expected = (np.sum(q_top * np.take_along_axis(labelled_elbo, top, -1), -1)
                - np.sum(q_top * np.log(q_top), -1))
    expected[1] = labelled_elbo[1, 4]
    np.testing.assert_allclose(terms["elbo"].numpy(), expected, rtol=1e-5)
    # the exact sum over all classes is another number: the truncation drops the others' share
    exact = np.sum(q * labelled_elbo, -1) - np.sum(q * np.log(q), -1)
    assert np.all(np.abs(exact - expected)[[0, 2, 3]] > 1e-3)


def test_enumerate_top_k_is_validated_and_ignored_where_it_keeps_every_value():
    with pytest.raises(ConfigError, match="enumeration_top_k must be >= 0"):
        ObjectiveConfig(enumeration_top_k=-1).validate()
    assert tiny_model("enumerate", enumeration_top_k=K).estimators["y"].top_k is None
    assert tiny_model("enumerate", enumeration_top_k=0).estimators["y"].rows.shape == (K, 1, K)


def test_plugin_labelled_and_unlabelled_terms():
    model = tiny_model("plugin")
    x = images(4)
    terms = model.objective_terms(x, tf.constant([2, -1, 7, -1]))
    np.testing.assert_allclose(terms["kl/y"].numpy()[[0, 2]], math.log(K), rtol=1e-6)
    np.testing.assert_array_equal(terms["labelled"].numpy(), [1, 0, 1, 0])
    np.testing.assert_array_equal(terms["log_q/y"].numpy()[[1, 3]], 0.0)
    log_q = np.log(model.classify(x).numpy())
    np.testing.assert_allclose(terms["log_q/y"].numpy()[[0, 2]], log_q[[0, 2], [2, 7]], rtol=1e-4)
    for name in ("reconstruction", "kl/z", "kl/y", "elbo"):
        assert terms[name].shape == (B,)
        assert np.all(np.isfinite(terms[name].numpy()))


def test_loss_weights_and_warmup():
    terms = {k: tf.constant(v, tf.float32) for k, v in {
        "reconstruction": [-100.0, -90.0], "kl/z": [5.0, 4.0], "kl/y": [2.0, 1.0], "kl/c": [1.0, 0.0],
        "log_q/y": [-0.5, 0.0], "log_q/c": [-2.0, -1.0], "entropy": [0.0, 1.5], "consistency": [0.1, 0.2]}.items()}
    loss = objectives.per_example_loss(terms, {"y": 10.0, "c": 1.0}, beta=0.5, entropy_weight=2.0,
                                       consistency_weight=3.0).numpy()
    np.testing.assert_allclose(loss, [100 + 0.5 * 8 + 5.0 + 2.0 + 0.3, 90 + 0.5 * 5 + 1.0 + 3.0 + 0.6], rtol=1e-6)
    assert float(objectives.linear_ramp(50, 100)) == pytest.approx(0.5)
    assert float(objectives.linear_ramp(500, 100)) == 1.0
    assert float(objectives.linear_ramp(0, 0)) == 1.0


def test_augment_ramp_scales_the_augmentation_and_mixup_terms_only():
    terms = {k: tf.constant(v, tf.float32) for k, v in {
        "reconstruction": [-100.0, -90.0], "kl/z": [5.0, 4.0], "log_q/y": [-0.5, 0.0], "entropy": [0.0, 1.5],
        "consistency": [0.1, 0.2], "augment": [0.4, 0.8], "mixup": [1.0, 3.0]}.items()}
    weights = dict(entropy_weight=2.0, consistency_weight=3.0, augment_weight=5.0, mixup_weight=7.0)
    base = objectives.per_example_loss(terms, {"y": 10.0}, **dict(weights, augment_weight=0.0, mixup_weight=0.0))
    for ramp in (0.0, 0.25, 1.0):
        loss = objectives.per_example_loss(terms, {"y": 10.0}, **weights, augment_ramp=tf.constant(ramp))
        np.testing.assert_allclose(loss, base + ramp * (5.0 * np.array([0.4, 0.8]) + 7.0 * np.array([1.0, 3.0])),
                                   rtol=1e-6)
    with pytest.raises(ConfigError, match="augment_warmup_steps"):
        ObjectiveConfig(augment_warmup_steps=-1).validate()


def test_virtual_adversarial_kl_is_nonnegative_and_grows_with_epsilon():
    model = tiny_model(consistency_weight=1.0)
    x = images(5, 8)
    q_fn = lambda xp: model.q_node("y", xp, [])  # noqa: E731
    q = q_fn(x)
    seed = tf.constant([1, 2], tf.int32)
    small = objectives.virtual_adversarial_kl(q_fn, x, q, seed, epsilon=0.1).numpy()
    large = objectives.virtual_adversarial_kl(q_fn, x, q, seed, epsilon=5.0).numpy()
    assert small.shape == (8,) and np.all(small >= -1e-6)
    assert large.mean() > small.mean()


def test_wrong_image_shape_and_dtype_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"shape \(batch, 28, 28, 1\)"):
        model.classify(tf.zeros([2, 32, 32, 3]))
    with pytest.raises(TypeError, match="float32"):
        model.classify(tf.zeros([2, 28, 28, 1], tf.uint8))


def test_random_shift_and_flip_moves_each_image_by_its_own_offset():
    x = np.zeros((64, 9, 9, 1), np.float32)
    x[:, 4, 2, 0] = 1.0                                             # one bright pixel, left of centre
    seed = tf.constant([5, 6], tf.int32)
    np.testing.assert_array_equal(objectives.random_shift_and_flip(x, seed, 0, False).numpy(), x)
    moved = objectives.random_shift_and_flip(x, seed, 2, False).numpy()
    rows, cols = np.nonzero(moved[..., 0].reshape(64, -1))[1] // 9, np.nonzero(moved[..., 0].reshape(64, -1))[1] % 9
    assert moved.sum() == 64 and set(rows - 4) <= set(range(-2, 3)) and set(cols - 2) <= set(range(-2, 3))
    assert len(set(zip(rows, cols))) > 10                           # offsets differ from image to image
    flipped = objectives.random_shift_and_flip(x, seed, 0, True).numpy()
    where = np.argmax(flipped[:, 4, :, 0], axis=1)
    assert set(where) == {2, 6} and 10 < (where == 6).sum() < 54     # mirrored about half the time


def test_rotate_and_scale_moves_a_pixel_where_the_rotation_and_magnification_send_it():
    x = np.zeros((4, 9, 9, 1), np.float32)
    x[:3, 4, 7, 0] = 1.0                                            # three pixels right of the centre (4, 4)
    x[3, 4, 5, 0] = 1.0                                             # one pixel right of it
    out = objectives.rotate_and_scale(x, tf.constant([0.0, np.pi / 2, np.pi, 0.0]),
                                      tf.constant([1.0, 1.0, 1.0, 2.0])).numpy()[..., 0]
    np.testing.assert_allclose(out[0], x[0, ..., 0], atol=1e-6)    # the identity
    assert out[1, 7, 4] == pytest.approx(1.0, abs=1e-5) and out[1].sum() == pytest.approx(1.0, abs=1e-5)  # below
    assert out[2, 4, 1] == pytest.approx(1.0, abs=1e-5)                                                   # left
    # magnified twice: column 6 (2 pixels out) reads the pixel, columns 5 and 7 read half of it
    np.testing.assert_allclose(out[3, 4, 4:9], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-5)
    np.testing.assert_allclose(out[3, 3], out[3, 5], atol=1e-6)                     # and rows alike
    np.testing.assert_allclose(out[3, 3, 4:9], [0.0, 0.25, 0.5, 0.25, 0.0], atol=1e-5)
    assert out[3].sum() == pytest.approx(4.0, abs=1e-4)            # a magnified pixel covers four


def test_random_rotation_draws_an_angle_per_image_within_its_range():
    x = np.zeros((64, 21, 21, 1), np.float32)
    x[:, 10, 20, 0] = 1.0                                           # ten pixels right of the centre
    out = objectives.random_shift_and_flip(x, tf.constant([3, 4], tf.int32), 0, False, rotation=30.0).numpy()[..., 0]
    rows, cols = np.indices((21, 21))
    mass = out.sum(axis=(1, 2))
    angle = np.degrees(np.arctan2((out * (rows - 10)).sum(axis=(1, 2)) / mass,
                                  (out * (cols - 10)).sum(axis=(1, 2)) / mass))
    assert np.abs(angle).max() <= 30.5 and np.abs(angle).max() > 20 and np.ptp(angle) > 30   # spread, bounded
    assert (angle > 0).any() and (angle < 0).any()
    np.testing.assert_allclose(mass, 1.0, atol=0.1)                 # bilinear keeps about a pixel's mass
    scaled = objectives.random_shift_and_flip(x * 0 + 1, tf.constant([3, 4], tf.int32), 0, False,
                                              scale=0.5).numpy()[..., 0]
    assert (scaled[:, 10, 10] == pytest.approx(1.0)) and (scaled.sum(axis=(1, 2)) < 21 * 21 - 1).any()   # shrunk: zero fill


def test_cutout_zeroes_one_square_per_image_clipped_at_the_border():
    x = np.ones((200, 10, 10, 1), np.float32)
    out = objectives.random_shift_and_flip(x, tf.constant([1, 2], tf.int32), 0, False, cutout=4).numpy()
    holes = out[..., 0] == 0
    assert holes.any(axis=(1, 2)).all() and (holes.sum(axis=(1, 2)) <= 16).all()
    assert (holes.sum(axis=(1, 2)) == 16).mean() > 0.3 and (holes.sum(axis=(1, 2)) < 16).any()  # some clipped
    for hole in holes[:20]:                                     # one axis-aligned square (or its clipped part)
        r, c = np.nonzero(hole)
        assert hole[r.min():r.max() + 1, c.min():c.max() + 1].all() and np.ptp(r) < 4 and np.ptp(c) < 4


def test_fixmatch_term_is_the_cross_entropy_of_confident_pseudo_labels():
    logits = tf.constant([[4.0, 0.0, 0.0], [0.2, 0.0, 0.1]])          # confident (0.96) and not (0.37)
    x = tf.zeros([2, 4, 4, 1])
    student = tf.constant([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    q_fn, teacher = (lambda xp: tfd.Categorical(logits=student)), tfd.Categorical(logits=logits)
    term = objectives.augmentation_kl(q_fn, x, teacher, tf.constant([0, 1]), 0, False,
                                      threshold=0.95).numpy()
    log_q = tf.nn.log_softmax(student).numpy()
    np.testing.assert_allclose(term, [-log_q[0, 0], 0.0], rtol=1e-6)  # hard label 0 on the confident row only
    kl = objectives.augmentation_kl(q_fn, x, teacher, tf.constant([0, 1]), 0, False).numpy()
    p = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(kl, (p * (np.log(p) - log_q)).sum(-1), rtol=1e-5)


def test_aligned_probabilities_divide_by_the_minibatch_class_shares():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.2, 0.8]], np.float32)   # class 0: mean 0.5875
    aligned = objectives.aligned_probabilities(tf.constant(probs)).numpy()
    by_hand = probs / probs.mean(0)
    np.testing.assert_allclose(aligned, by_hand / by_hand.sum(-1, keepdims=True), rtol=1e-6)
    assert aligned[1].argmax() == 1            # 0.55 / 0.5875 < 0.45 / 0.4125: the over-predicted class loses
    balanced = np.array([[0.9, 0.1], [0.1, 0.9]], np.float32)   # shares already equal: unchanged
    np.testing.assert_allclose(objectives.aligned_probabilities(tf.constant(balanced)).numpy(), balanced, rtol=1e-6)


def test_augmentation_term_with_alignment_takes_the_aligned_hard_label():
    x = tf.zeros([3, 4, 4, 1])
    logits = tf.math.log(tf.constant([[0.97, 0.03], [0.96, 0.04], [0.9, 0.1]]))   # class 0 over-predicted
    student = tf.constant([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]])
    log_q = tf.nn.log_softmax(student).numpy()
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).mean(0)
    p /= p.sum(-1, keepdims=True)
    expected = [-log_q[i, p[i].argmax()] if p[i].max() >= 0.5 else 0.0 for i in range(3)]
    assert p[2].argmax() == 1                                                          # the least sure row flips
    for kind in (tfd.Categorical, tfd.OneHotCategorical):          # the package's nodes are one-hot
        q_fn, teacher = (lambda xp: kind(logits=student, dtype=tf.float32)), kind(logits=logits, dtype=tf.float32)
        plain = objectives.augmentation_kl(q_fn, x, teacher, tf.constant([0, 1]), 0, False, threshold=0.5).numpy()
        np.testing.assert_allclose(plain, -log_q[:, 0], rtol=1e-6)                   # every row says 0
        aligned = objectives.augmentation_kl(q_fn, x, teacher, tf.constant([0, 1]), 0, False, threshold=0.5,
                                             align=True).numpy()
        np.testing.assert_allclose(aligned, expected, rtol=1e-6)


def test_sharpened_target_is_q_to_the_one_over_t_and_enters_the_kl():
    probs = np.array([[0.6, 0.3, 0.1], [1.0, 0.0, 0.0]], np.float32)   # a row that underflowed to one-hot
    sharp = objectives.sharpened_probabilities(tf.constant(probs), 0.5).numpy()
    by_hand = probs ** 2 / (probs ** 2).sum(-1, keepdims=True)          # MixMatch's Sharpen(p, T = 0.5)
    np.testing.assert_allclose(sharp, by_hand, rtol=1e-6)
    np.testing.assert_allclose(objectives.sharpened_probabilities(tf.constant(probs), 1.0).numpy(), probs,
                               rtol=1e-6, atol=1e-7)
    # Through the augmentation term (KL form; t the identity): KL(sharpened teacher || student).
    x = tf.zeros([2, 4, 4, 1])
    student_logits = tf.constant([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
    log_student = tf.nn.log_softmax(student_logits).numpy()
    teacher = tfd.OneHotCategorical(probs=probs, dtype=tf.float32)
    q_fn = lambda xp: tfd.OneHotCategorical(logits=student_logits, dtype=tf.float32)
    kl = objectives.augmentation_kl(q_fn, x, teacher, tf.constant([0, 1]), 0, False, temperature=0.5).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.nansum(np.where(by_hand > 0, by_hand * (np.log(by_hand) - log_student), 0.0), -1)
    np.testing.assert_allclose(kl, expected, rtol=1e-5)
    teacher_from_logits = tfd.OneHotCategorical(logits=tf.math.log(probs[:1]), dtype=tf.float32)
    plain = objectives.augmentation_kl(lambda xp: tfd.OneHotCategorical(logits=student_logits[:1], dtype=tf.float32),
                                       x[:1], teacher_from_logits, tf.constant([0, 1]), 0, False).numpy()
    assert kl[0] > plain[0]           # the sharper target is further from the uniform student
    # A q(y|x) so sure that its other probabilities underflow to 0, aligned too: finite, not NaN.
    sure = tfd.OneHotCategorical(logits=tf.constant([[200.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dtype=tf.float32)
    for kw in ({"align": True}, {"align": True, "temperature": 0.5}, {"temperature": 0.5}):
        term = objectives.augmentation_kl(q_fn, x, sure, tf.constant([0, 1]), 0, False, **kw).numpy()
        assert np.isfinite(term).all(), kw
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="augment_temperature"):
            ObjectiveConfig(augment_temperature=bad).validate()


def test_augmentation_term_of_a_normal_node_is_its_closed_form_kl_and_ignores_the_threshold():
    x = tf.zeros([2, 4, 4, 1])
    teacher = tfd.Independent(tfd.Normal([[0.0], [1.0]], [[1.0], [0.5]]), 1)
    student = tfd.Independent(tfd.Normal([[0.5], [1.0]], [[1.0], [1.0]]), 1)
    for threshold in (0.0, 0.95):       # FixMatch's hard label is for categorical nodes only
        kl = objectives.augmentation_kl(lambda xp: student, x, teacher, tf.constant([0, 1]), 1, False,
                                        threshold=threshold).numpy()
        # KL(N(m1, s1) || N(m2, s2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2
        np.testing.assert_allclose(kl, [0.125, math.log(2) + 0.25 / 2 - 0.5], rtol=1e-5)


def test_consistency_nodes_labelled_holds_a_measured_normal_factor_still():
    graph = ({"family": "categorical", "name": "y", "size": 10, "labelled": True},
             {"family": "normal", "name": "slant", "size": 1, "labelled": True},
             {"family": "normal", "name": "z", "size": 2, "parents": ["y", "slant"]})
    x = images(3, 6)
    labels = {"y": tf.constant([0, 1, -1, -1, -1, -1]), "slant": tf.constant([[0.5]] + [[np.nan]] * 5)}
    for term in ("consistency", "augment"):
        terms = {}
        for nodes in ("classifiers", "labelled"):
            keras.utils.set_random_seed(1)                  # the same initial weights for both
            model = StructuredVAE((28, 28, 1), model_config=ModelConfig(hidden_units=(16,), graph=graph),
                                  objective_config=ObjectiveConfig(**{f"{term}_weight": 1.0},
                                                                   consistency_nodes=nodes), seed=1)
            with tf.GradientTape() as tape:
                terms[nodes] = model.objective_terms(x, labels, training=True)[term]
                penalty = tf.reduce_sum(terms[nodes])
            slant_head = model.q_nets[model.node_index["slant"]].trainable_variables
            grads = tape.gradient(penalty, slant_head)
            if nodes == "classifiers":
                assert all(g is None for g in grads)            # the slant head is not regularised
            else:
                assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
        # same initialisation and seeds (y's draw comes first): the slant node's own KL is added on top
        extra = (terms["labelled"] - terms["classifiers"]).numpy()
        assert extra.shape == (6,) and (extra > 0).all(), term
    with pytest.raises(ConfigError, match="consistency_nodes"):
        ObjectiveConfig(consistency_nodes="all").validate()


def test_gaussian_smoothing_spreads_an_impulse_into_a_normalised_gaussian():
    field = np.zeros((1, 31, 31, 2), np.float32)
    field[0, 15, 15, 0] = 1.0
    out = objectives.gaussian_smoothed(tf.constant(field), 2.0).numpy()
    rows, cols = np.indices((31, 31)) - 15
    expected = np.exp(-0.5 * (rows ** 2 + cols ** 2) / 4.0)
    expected[np.maximum(abs(rows), abs(cols)) > 6] = 0.0           # truncated at 3 sigma per axis
    np.testing.assert_allclose(out[0, ..., 0], expected / expected.sum(), atol=1e-6)
    assert out[..., 1].max() == 0.0                                 # channels smoothed apart
    flat = objectives.gaussian_smoothed(tf.ones((1, 31, 31, 1)), 2.0).numpy()[0, 6:25, 6:25, 0]
    np.testing.assert_allclose(flat, 1.0, atol=1e-5)                # a constant stays (away from the border)


def test_sample_bilinear_reads_a_whole_pixel_shift_exactly():
    x = np.random.default_rng(0).uniform(size=(2, 7, 7, 3)).astype(np.float32)
    rows, cols = np.indices((7, 7))
    src_y = np.stack([rows - 1, rows]).reshape(2, -1).astype(np.float32)        # image 0 moved down a row
    src_x = np.stack([cols, cols + 2]).reshape(2, -1).astype(np.float32)        # image 1 two columns left
    out = objectives.sample_bilinear(tf.constant(x), tf.constant(src_y), tf.constant(src_x)).numpy()
    np.testing.assert_allclose(out[0, 1:], x[0, :-1], atol=1e-6)
    np.testing.assert_allclose(out[0, 0], 0.0)                                   # zero fill
    np.testing.assert_allclose(out[1, :, :-2], x[1, :, 2:], atol=1e-6)
    np.testing.assert_allclose(out[1, :, -2:], 0.0)


def test_elastic_distortion_bends_each_image_its_own_way_by_about_the_set_amount():
    x = np.zeros((32, 28, 28, 1), np.float32)
    x[:, 6:22, 13:15, 0] = 1.0                                      # a vertical stroke
    seed = tf.constant([5, 6], tf.int32)
    np.testing.assert_allclose(objectives.elastic_distortion(x, seed, 0.0).numpy(), x, atol=1e-6)   # alpha 0: identity
    bent = objectives.elastic_distortion(x, seed, 34.0, 4.0).numpy()
    assert bent.shape == x.shape and np.isfinite(bent).all()
    # the stroke bends, stretched here and squeezed there, but is not erased; every image differs
    mass = bent.sum(axis=(1, 2, 3))
    assert mass.mean() == pytest.approx(x[0].sum(), rel=0.1) and (mass > x[0].sum() / 2).all()
    assert len({np.round(b.sum(), 3) for b in bent}) > 16 and not np.allclose(bent[0], bent[1])
    # Simard's setting moves a pixel about a pixel and a half: the stroke's centre column moves,
    # but by a few pixels at most
    cols = np.arange(28)
    centre = (bent[..., 0].sum(axis=1) * cols).sum(axis=1) / bent[..., 0].sum(axis=(1, 2))
    assert np.abs(centre - 13.5).max() < 4 and np.abs(centre - 13.5).mean() > 0.1
    same = objectives.elastic_distortion(x, seed, 34.0, 4.0).numpy()
    np.testing.assert_allclose(bent, same)                          # stateless: the seed decides


@pytest.mark.parametrize("transform, bad", [
    ({"augment_rotation": 20.0, "augment_scale": 0.1},
     [{"augment_scale": 1.0}, {"augment_scale": -0.1}, {"augment_rotation": -5.0}, {"augment_rotation": 190.0}]),
    ({"augment_shift": 0, "augment_elastic": 34.0}, [{"augment_elastic": -1.0}, {"augment_elastic_sigma": 0.0}]),
], ids=["rotation and scale", "elastic"])
def test_geometric_augmentation_compiles_with_xla_and_is_validated(transform, bad):
    model = tiny_model(augment_weight=1.0, **transform)
    x = tf.random.uniform([6, 28, 28, 1], seed=1)
    labels = tf.constant([0, 1, -1, -1, -1, -1])
    step = tf.function(lambda x: model.objective_terms(x, labels, training=True)["augment"], jit_compile=True)
    term = step(x).numpy()
    assert term.shape == (6,) and np.isfinite(term).all() and (term > 0).all()       # t(x) moved q(y|x)
    for fields in bad:
        with pytest.raises(ConfigError, match=next(iter(fields))):
            ObjectiveConfig(**fields).validate()


def test_fixmatch_term_trains_through_the_model():
    x = tf.random.uniform([6, 28, 28, 1], seed=1)
    for align in (False, True):
        model = tiny_model(augment_weight=1.0, augment_cutout=3, augment_threshold=0.5, augment_alignment=align)
        terms = model.objective_terms(x, tf.constant([0, 1, -1, -1, -1, -1]), training=True)
        assert terms["augment"].shape == (6,) and np.isfinite(terms["augment"].numpy()).all()
    # The model's q(y|x) is a OneHotCategorical, and there too the threshold must give FixMatch's
    # hard label, not the KL (it silently gave the KL until the pseudo-label took both kinds). With
    # t the identity (no shift, flip or cutout) the KL is 0 and the hard label's term is
    # -log max_y q(y|x) on every row (max q >= 1/K passes a threshold of 0.05).
    model = tiny_model(augment_weight=1.0, augment_shift=0, augment_threshold=0.05)
    q = model.encode(x)["y"]
    assert isinstance(q, tfd.OneHotCategorical)
    terms = model.objective_terms(x, tf.constant([0, 1, -1, -1, -1, -1]), training=True)
    np.testing.assert_allclose(terms["augment"].numpy(), -np.log(q.probs_parameter().numpy().max(-1)), rtol=1e-4)
    assert (terms["augment"].numpy() > 0.01).all()
    with pytest.raises(ConfigError, match="augment_threshold"):
        ObjectiveConfig(augment_threshold=1.0).validate()


def test_cluster_error_matches_clusters_to_classes_one_to_one():
    from tfstructvae.train import cluster_error
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    assert cluster_error(np.array([2, 2, 0, 0, 1, 1, 1]), labels, 3) == 0.0          # a relabelling
    assert cluster_error(np.array([1, 1, 1, 1, 0, 0, 2]), labels, 3) == pytest.approx(3 / 7)


def test_a_node_weight_scales_its_share_of_the_consistency_terms():
    base = ({"family": "categorical", "name": "y", "size": 10, "labelled": True},
            {"family": "normal", "name": "slant", "size": 1, "labelled": True},
            {"family": "normal", "name": "z", "size": 2, "parents": ["y", "slant"]})
    x = images(4, 6)
    labels = {"y": tf.constant([0, 1, -1, -1, -1, -1]), "slant": tf.constant([[0.5]] + [[np.nan]] * 5)}

    def augment(graph, nodes="classifiers"):
        keras.utils.set_random_seed(1)                      # the same initial weights every time
        model = StructuredVAE((28, 28, 1), model_config=ModelConfig(hidden_units=(16,), graph=graph),
                              objective_config=ObjectiveConfig(augment_weight=1.0, consistency_nodes=nodes), seed=1)
        return model.objective_terms(x, labels, training=True)["augment"].numpy()

    y_only = augment(base)
    full_slant = augment(base, "labelled") - y_only
    tenth = augment((base[0], {**base[1], "consistency": 0.1}, base[2])) - y_only   # held at 0.1 though
    np.testing.assert_allclose(tenth, 0.1 * full_slant, rtol=1e-4, atol=1e-6)      # "classifiers" only
    np.testing.assert_allclose(augment((base[0], {**base[1], "consistency": 0.0}, base[2]), "labelled"),
                               y_only, rtol=1e-6)                                  # 0: not held
    with pytest.raises(GraphError, match="consistency regularisers need a labelled node"):
        augment(({**base[0], "consistency": 0.0}, *base[1:]))                     # nothing left to hold
    with pytest.raises(ConfigError, match=r"node 'z': consistency=1.0 needs a labelled node"):
        augment((*base[:2], {**base[2], "consistency": 1.0}))


def test_augment_labelled_reads_the_supervised_term_on_a_transformed_copy():
    x = images(5, 6)
    y = tf.constant([0, 1, 2, -1, -1, -1])

    def log_q(training=True, **objective):
        keras.utils.set_random_seed(1)                      # the same initial weights every time
        return tiny_model(**objective).objective_terms(x, y, training=training)["log_q/y"].numpy()

    plain = log_q()
    # the identity transformation changes nothing; a shifted, mirrored copy changes the labelled rows only
    np.testing.assert_allclose(log_q(augment_labelled=True, augment_shift=0), plain, rtol=1e-6)
    moved = log_q(augment_labelled=True, augment_shift=3, augment_flip=True)
    assert (np.abs(moved[:3] - plain[:3]) > 1e-6).all() and (moved[3:] == 0).all()
    np.testing.assert_allclose(log_q(False, augment_labelled=True, augment_shift=3), log_q(False), rtol=1e-6)


def test_augment_labelled_geometry_rotates_the_labelled_copy_and_is_refused_where_it_cannot_apply():
    x = images(5, 6)
    y = tf.constant([0, 1, 2, -1, -1, -1])

    def log_q(**objective):
        keras.utils.set_random_seed(1)
        return tiny_model(**objective).objective_terms(x, y, training=True)["log_q/y"].numpy()

    # the same seeds: without the flag the rotation reaches the augmentation term only, with it
    # the labelled rows read a rotated copy too; unlabelled rows stay 0
    shifted = log_q(augment_labelled=True, augment_shift=0, augment_rotation=40.0)
    rotated = log_q(augment_labelled=True, augment_shift=0, augment_rotation=40.0, augment_labelled_geometry=True)
    np.testing.assert_allclose(shifted, log_q(), rtol=1e-6)
    assert (np.abs(rotated[:3] - shifted[:3]) > 1e-6).all() and (rotated[3:] == 0).all()
    with pytest.raises(ConfigError, match="augment_labelled_geometry rotates, scales or bends"):
        ObjectiveConfig(augment_labelled_geometry=True, augment_rotation=15.0).validate()
    with pytest.raises(ConfigError, match="augment_labelled_geometry rotates, scales or bends"):
        ObjectiveConfig(augment_labelled_geometry=True, augment_labelled=True).validate()
    graph = ({"family": "categorical", "name": "y", "size": K, "labelled": True},
             {"family": "normal", "name": "slant", "size": 1, "labelled": True},
             {"family": "normal", "name": "z", "size": D, "parents": ["y", "slant"]})
    with pytest.raises(GraphError, match=r"changes the measured factors \['slant'\]"):
        StructuredVAE((28, 28, 1), model_config=ModelConfig(hidden_units=(16,), graph=graph),
                      objective_config=ObjectiveConfig(augment_labelled=True, augment_scale=0.1,
                                                       augment_labelled_geometry=True), seed=1)


def test_noise_is_drawn_with_threefry_under_xla_and_philox_elsewhere():
    from tfstructvae.distribution import noise_algorithm
    seen = {}

    @tf.function(jit_compile=True)
    def compiled():
        seen["xla"] = noise_algorithm()
        return tf.random.stateless_normal([3], [1, 2], alg=seen["xla"])

    @tf.function
    def traced():
        seen["graph"] = noise_algorithm()
        return tf.random.stateless_normal([3], [1, 2], alg=seen["graph"])

    compiled(), traced()
    assert seen == {"xla": "threefry", "graph": "philox"} and noise_algorithm() == "philox"


def test_augment_labelled_reads_a_measured_factor_on_the_transformed_copy_too():
    graph = ({"family": "categorical", "name": "y", "size": K, "labelled": True},
             {"family": "normal", "name": "slant", "size": 1, "labelled": True},
             {"family": "normal", "name": "z", "size": D, "parents": ["y", "slant"]})
    x = images(5, 6)
    labels = {"y": tf.constant([0, 1, 2, -1, -1, -1]),
              "slant": tf.constant([[0.5], [np.nan], [-1.0], [0.2], [np.nan], [np.nan]], tf.float32)}

    def log_q(**objective):
        keras.utils.set_random_seed(1)
        model = StructuredVAE((28, 28, 1), model_config=ModelConfig(hidden_units=(16,), graph=graph),
                              objective_config=ObjectiveConfig(**objective), seed=1)
        terms = model.objective_terms(x, labels, training=True)
        return terms["log_q/y"].numpy(), terms["log_q/slant"].numpy()

    plain_y, plain_slant = log_q()
    moved_y, moved_slant = log_q(augment_labelled=True, augment_shift=3)
    observed = np.array([True, False, True, True, False, False])
    assert (np.abs(moved_slant[observed] - plain_slant[observed]) > 1e-6).all()
    assert (moved_slant[~observed] == 0).all() and (np.abs(moved_y[:3] - plain_y[:3]) > 1e-6).all()
    same_y, same_slant = log_q(augment_labelled=True, augment_shift=0)
    np.testing.assert_allclose(same_slant, plain_slant, rtol=1e-5)


def test_mixup_term_mixes_pairs_of_images_and_their_targets_by_the_same_beta_draw():
    n = 64
    x = tf.reshape(tf.eye(n), [n, n, 1, 1])                  # image i lights pixel i alone
    targets = tf.nn.softmax(tf.random.stateless_normal([n, 3], [3, 4]))
    weights = tf.random.stateless_normal([n, 3], [5, 6])
    seen = []

    def q_fn(xp):                                           # a fixed linear classifier; records its input
        seen.append(xp)
        return tfd.OneHotCategorical(logits=tf.reshape(xp, [n, n]) @ weights, dtype=tf.float32)

    like = tfd.OneHotCategorical(logits=tf.zeros([n, 3]), dtype=tf.float32)
    term = objectives.mixup_kl(q_fn, x, like, targets, tf.constant([7, 8]), 0.75).numpy()
    mixed = tf.reshape(seen[0], [n, n]).numpy()
    lam = np.diag(mixed)                                   # the weight of the row's own image
    partner = np.where(np.isclose(lam, 1.0), np.arange(n), (mixed - np.diag(lam)).argmax(-1))
    assert sorted(partner) == list(range(n))                # a permutation of the minibatch
    np.testing.assert_allclose(mixed.sum(-1), 1.0, rtol=1e-5)   # a convex mix of two images
    assert (lam >= 0).all() and (lam <= 1).all() and lam.std() > 0.1   # a draw per row, Beta(0.75, 0.75): spread
    t = targets.numpy()
    mix = lam[:, None] * t + (1 - lam[:, None]) * t[partner]
    log_q = tf.nn.log_softmax(mixed @ weights.numpy()).numpy()
    np.testing.assert_allclose(term, (mix * (np.log(mix) - log_q)).sum(-1), rtol=1e-4, atol=1e-6)


def test_mixup_term_takes_labels_where_known_and_compiles_with_xla():
    model = tiny_model(mixup_weight=1.0, augment_alignment=True)
    x = tf.random.uniform([6, 28, 28, 1], seed=1)
    labels = tf.constant([0, 1, -1, -1, -1, -1])
    q = model.encode(x)["y"]
    targets = model._mixup_targets(q, (q, None, *model.families["y"].observation(labels, K))).numpy()
    np.testing.assert_allclose(targets[:2], np.eye(K)[[0, 1]])          # the labelled rows: their labels
    aligned = objectives.aligned_probabilities(model.classify(x)).numpy()
    np.testing.assert_allclose(targets[2:], aligned[2:], rtol=1e-5)     # the others: aligned q(y|x)
    step = tf.function(lambda x: model.objective_terms(x, labels, training=True)["mixup"], jit_compile=True)
    term = step(x).numpy()
    assert term.shape == (6,) and np.isfinite(term).all() and (term >= 0).all() and term.max() > 0
    assert "mixup" not in model.objective_terms(x, labels, training=False)   # a training term only
    for bad, match in (({"mixup_weight": -1.0}, "mixup_weight"), ({"mixup_concentration": 0.0}, "concentration")):
        with pytest.raises(ConfigError, match=match):
            ObjectiveConfig(**bad).validate()
    from tfstructvae.graph import GraphError
    measured_only = ({"family": "normal", "name": "slant", "size": 1, "labelled": True},
                     {"family": "normal", "name": "z", "size": 2, "parents": ["slant"]})
    with pytest.raises(GraphError, match="mixup_weight mixes the targets of a labelled categorical"):
        StructuredVAE((28, 28, 1), model_config=ModelConfig(hidden_units=(16,), graph=measured_only),
                      objective_config=ObjectiveConfig(mixup_weight=1.0, consistency_nodes="labelled"))
