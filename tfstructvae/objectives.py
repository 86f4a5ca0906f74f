"""The semi-supervised objective, as pure functions of per-example terms.

Model and recognition network for a latent graph (graph.py), e.g. the paper's
(Kingma et al. 2014 "M2"; Siddharth et al. 2016):

    p(x, y, z) = p(y) p(z) p(x | y, z)        p(y) = Cat(1/K), p(z) = N(0, I)
    q(y, z | x) = q(y | x) q(z | x, y)

The ELBO of an example sums one reconstruction term and one KL term per node,

    ELBO(x) = E_q[log p(x | nodes)] - sum_n kl_n
    kl_n    = KL(q(n | x, parents) || p(n | prior parents))   where n is not observed
            = -log p(n = value | prior parents)               where it is (pinned in q and p)

with the expectation over the enumerated nodes taken exactly and the others
sampled (estimators.py). For the paper's graph this is, for a labelled (x, y),

    L(x, y) = E_q(z|x,y)[log p(x|y,z)] - KL(q(z|x,y) || p(z)) + log p(y)

and for an unlabelled x, with the class marginalised under q(y|x),

    enumerate:  U(x) = sum_y q(y|x) [E log p(x|y,z) - KL_z(y)] - KL(q(y|x) || p(y))
    plugin:     U(x) =  E log p(x|ybar,z) - KL(q(z|x,ybar) || p(z)) - KL(q(y|x) || p(y)),
                ybar = q(y|x)'s probability vector fed to the networks
    relaxed:    ybar a Concrete sample at temperature T; its KL estimated at the sample

Every term is per example, shape (B,), named `reconstruction`, `kl/<node>`,
`log_q/<node>` (the supervised term of a labelled node), `entropy`, `consistency`,
`augment`, `mixup`.

The training loss per example (minimised) is

    loss_i = -(reconstruction_i - beta * sum_n kl_n,i)
             - sum_n alpha_n * [n observed on i] * log q(n = value_i | x_i, parents)   supervised
             + entropy_weight * sum_c [c unobserved on i] * H(q(c | x_i))             optional
             + consistency_weight * sum_c KL(q(c|x_i) || q(c|x_i + r_adv))            optional
             + augment_weight * sum_c KL(q(c|x_i) || q(c|t(x_i)))                     optional
             + mixup_weight * sum_c KL(mix of targets || q(c | mix of images))          optional

(c: the labelled categorical nodes that depend on x alone; with `consistency_nodes = "labelled"`
every labelled node that depends on x alone, e.g. a measured Normal factor whose value a shift
does not change) and a step minimises the mean of loss_i over
the minibatch (sum / global batch under tf.distribute). So `alpha_n` (a node's
`alpha`, else `objective.alpha`) is a weight *per labelled example*, in nats on
the same scale as one example's ELBO: a minibatch of B examples in which node n
is observed on all adds alpha_n * mean log q(n | x); in `share` mode with n_l
labelled of B it adds alpha_n * (n_l / B) * mean_labelled log q(n | x). beta ramps
0 -> 1 over `kl_warmup_steps` (1 throughout when 0), and the augmentation and MixUp weights
likewise over `augment_warmup_steps`.

The two optional terms are not in the paper (the `mnist-paper` preset leaves
them off). Entropy minimisation (Grandvalet & Bengio 2005) counters the
+H(q(y|x)) inside U(x) that otherwise rewards an undecided classifier on
unlabelled data. The consistency term is virtual adversarial training (Miyato
et al. 2018): the KL between q(y|x) and q(y|x + r) for the perturbation r of
L2 norm `epsilon` that changes q(y|x) most, found by one power iteration. The
augmentation term asks the same of a random transformation t: a shift of up to
`augment_shift` pixels each way, where the data allow it (clothes, faces; not
digits) a horizontal flip, and optionally a cutout square (Laine & Aila 2017;
Xie et al. 2020). With `augment_threshold` > 0 it becomes FixMatch's confident
pseudo-label instead of the KL (Sohn et al. 2020; `augmentation_kl`); with
`augment_alignment` its target is first aligned to the uniform class prior
(`aligned_probabilities`), with `augment_temperature` < 1 sharpened
(`sharpened_probabilities`). The MixUp term (`mixup_kl`) asks q(y|x) at a convex mix of two images
for the same mix of their targets (labels where known).
"""

from __future__ import annotations


import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfstructvae.distribution import global_batch_noise, noise_algorithm

tfd = tfp.distributions
# The floor under probabilities about to be logged or divided by.
_TINY = float(np.finfo(np.float32).tiny)


def elbo(reconstruction, kls, beta=1.0):
    """reconstruction - beta * sum of the nodes' KL terms, per example."""
    return reconstruction - beta * tf.add_n(list(kls))


def held_fixed(q: tfd.Distribution) -> tfd.Distribution:
    """q with its parameters cut from the gradient: the target of a consistency term."""
    return tf.nest.map_structure(tf.stop_gradient, q, expand_composites=True)


def virtual_adversarial_kl(q_fn, x, q, seed, epsilon, xi=10.0):
    """KL(q(.|x) || q(.|x + r_adv)) with ||r_adv||_2 = epsilon (one power iteration). (B,)

    `q_fn` maps images to a node's posterior (any family TFP has a KL for); `q` is that
    posterior at x (already computed), held fixed as the target. The power iteration probes at
    radius `xi`: the paper's 1e-6 leaves the probe's KL below float32 resolution once
    q(y|x) is confident, and on MNIST with 100 labels xi = 10 reached 6.8%
    validation error where 1e-6 reached 15.9% (classifier alone, 1500 steps).
    """
    r_adv = adversarial_perturbation(q_fn, x, q, seed, epsilon, xi)
    return tfd.kl_divergence(held_fixed(q), q_fn(x + r_adv))


def adversarial_perturbation(q_fn, x, q, seed, epsilon, xi=10.0):
    """r_adv of `virtual_adversarial_kl`: the direction in which q(.|x) changes most, found by one
    power iteration from a random direction (probed at radius `xi`), scaled to norm `epsilon`.
    Held fixed (no gradient). Same shape as x."""
    target = held_fixed(q)
    reduce_axes = list(range(1, len(x.shape)))

    def unit(v):
        return v / (tf.sqrt(tf.reduce_sum(tf.square(v), axis=reduce_axes, keepdims=True)) + 1e-12)

    d = unit(global_batch_noise(lambda shape, alg: tf.random.stateless_normal(shape, seed=seed, alg=alg), tf.shape(x),
                                static_shape=x.shape))
    with tf.GradientTape() as tape:
        tape.watch(d)
        kl = tf.reduce_sum(tfd.kl_divergence(target, q_fn(x + xi * d)))
    return epsilon * unit(tf.stop_gradient(tape.gradient(kl, d)))


def random_rotation_and_scale(x, seed, degrees: float, scale: float):
    """Each image rotated about its centre by its own angle in [-degrees, degrees] and scaled by
    its own factor in [1 - scale, 1 + scale], bilinear, zero fill. (B, H, W, C) -> same

    Written with gathers rather than Keras's `affine_transform`: TensorFlow's projective
    transform op has no XLA kernel, and the train step must compile."""
    u = global_batch_noise(lambda shape, alg: tf.random.stateless_uniform(shape, seed, -1.0, 1.0, alg=alg),
                           tf.stack([tf.shape(x)[0], 2]), static_shape=[None, 2])
    return rotate_and_scale(x, u[:, 0] * (degrees * np.pi / 180.0), 1.0 + u[:, 1] * scale)


def rotate_and_scale(x, angle, factor):
    """Each image i rotated about its centre by angle[i] (radians, clockwise as displayed, row 0
    at the top) and magnified by factor[i], bilinear, zero fill. (B, H, W, C), (B,), (B,) -> (B, H, W, C)"""
    x = tf.convert_to_tensor(x)
    h, w = x.shape[1], x.shape[2]
    angle, factor = tf.reshape(angle, [-1, 1]), tf.reshape(factor, [-1, 1])                  # (B, 1)
    cos, sin = tf.cos(angle) / factor, tf.sin(angle) / factor
    dy, dx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    dy, dx = tf.constant(dy.reshape(1, -1), tf.float32), tf.constant(dx.reshape(1, -1), tf.float32)   # (1, HW)
    # each output pixel reads the source point the inverse map sends it to
    return sample_bilinear(x, (h - 1) / 2 + cos * dy - sin * dx, (w - 1) / 2 + sin * dy + cos * dx)


def sample_bilinear(x, src_y, src_x):
    """Output pixel p of image i reads x[i] at the real point (src_y[i, p], src_x[i, p]), bilinear,
    zero outside the image; pixels in row-major order. (B, H, W, C), (B, HW), (B, HW) -> (B, H, W, C)"""
    b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    y0, x0 = tf.floor(src_y), tf.floor(src_x)
    wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]                                         # (B, HW, 1)
    # one zero pixel around the image: every neighbour outside it reads a zero
    padded = tf.reshape(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [b, (h + 2) * (w + 2), x.shape[-1]])

    def at(row, col):
        row = tf.cast(tf.clip_by_value(row, -1.0, float(h)), tf.int32) + 1
        col = tf.cast(tf.clip_by_value(col, -1.0, float(w)), tf.int32) + 1
        return tf.gather(padded, row * (w + 2) + col, axis=1, batch_dims=1)                          # (B, HW, C)

    out = ((1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1))
           + wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)))
    return tf.reshape(out, [b, h, w, x.shape[-1]])


def gaussian_smoothed(field, sigma: float):
    """Each channel of `field` convolved with a normalised Gaussian of standard deviation `sigma`
    pixels (truncated at 3 sigma, zero padding), separably. (B, H, W, C) -> same"""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = field.shape[-1]
    down = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, channels, 1])              # (K, 1, C, 1)
    across = tf.reshape(down, [1, -1, channels, 1])                                   # (1, K, C, 1)
    field = tf.nn.depthwise_conv2d(field, down, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(field, across, [1, 1, 1, 1], "SAME")


def elastic_distortion(x, seed, alpha: float, sigma: float = 4.0):
    """Simard et al. (2003)'s elastic distortion: every pixel moved by its own displacement, drawn
    uniform in [-1, 1] per pixel and axis, smoothed by a Gaussian of `sigma` pixels and scaled by
    `alpha` (their MNIST setting: alpha 34, sigma 4, about a pixel and a half), bilinear, zero
    fill: a stroke bends the way handwriting varies, which a shift or a rotation does not reach.
    (B, H, W, C) -> same"""
    x = tf.convert_to_tensor(x)
    h, w = x.shape[1], x.shape[2]
    noise = global_batch_noise(lambda shape, alg: tf.random.stateless_uniform(shape, seed, -1.0, 1.0, alg=alg),
                               tf.stack([tf.shape(x)[0], h, w, 2]), static_shape=[None, h, w, 2])
    move = alpha * tf.reshape(gaussian_smoothed(noise, sigma), [-1, h * w, 2])        # (B, HW, 2)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols = tf.constant(rows.reshape(1, -1), tf.float32), tf.constant(cols.reshape(1, -1), tf.float32)
    return sample_bilinear(x, rows + move[..., 0], cols + move[..., 1])


def random_shift_and_flip(x, seed, max_shift: int, flip: bool, cutout: int = 0, rotation: float = 0.0,
                          scale: float = 0.0, elastic: float = 0.0, elastic_sigma: float = 4.0):
    """Each image shifted by its own offset in [-max_shift, max_shift]^2 (zero fill), with `flip`
    mirrored left-right with probability 1/2, and with `cutout` a `cutout` x `cutout` square at a
    random centre set to 0 (DeVries & Taylor 2017; clipped at the border). With `rotation` (degrees)
    or `scale` each is first rotated and scaled by its own draw (`random_rotation_and_scale`), and
    before that, with `elastic`, distorted (`elastic_distortion`, alpha = `elastic`).
    (B, H, W, C) -> same"""
    x = tf.convert_to_tensor(x)
    static = x.shape
    b, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    if elastic:
        x = elastic_distortion(x, tf.random.experimental.stateless_split(seed, 5)[4], elastic, elastic_sigma)
    if rotation or scale:
        x = random_rotation_and_scale(x, tf.random.experimental.stateless_split(seed, 4)[3], rotation, scale)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if max_shift:
        offsets = global_batch_noise(lambda shape, alg: tf.random.stateless_uniform(
            shape, seeds[0], 0, 2 * max_shift + 1, dtype=tf.int32, alg=alg), [b, 2], static_shape=[None, 2])
        padded = tf.pad(x, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
        rows = offsets[:, :1] + tf.range(h)[None]                                   # (B, H)
        cols = offsets[:, 1:] + tf.range(w)[None]                                   # (B, W)
        x = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    if flip:
        mirror = global_batch_noise(lambda shape, alg: tf.random.stateless_uniform(shape, seeds[1], alg=alg), [b],
                                    static_shape=[None]) < 0.5
        x = tf.where(mirror[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if cutout:
        hole_seed = tf.random.experimental.stateless_split(seed, 3)[2]
        corner = global_batch_noise(lambda shape, alg: tf.random.stateless_uniform(shape, hole_seed, 0, 1, alg=alg), [b, 2],
                                    static_shape=[None, 2]) \
            * tf.constant([h, w], tf.float32)
        corner = tf.cast(corner, tf.int32) - cutout // 2                             # (B, 2) top-left
        in_rows = (tf.range(h)[None] >= corner[:, :1]) & (tf.range(h)[None] < corner[:, :1] + cutout)
        in_cols = (tf.range(w)[None] >= corner[:, 1:]) & (tf.range(w)[None] < corner[:, 1:] + cutout)
        hole = in_rows[:, :, None, None] & in_cols[:, None, :, None]                 # (B, H, W, 1)
        x = tf.where(hole, tf.zeros_like(x), x)
    return tf.ensure_shape(x, [None, *static[1:]])    # the gathers above lose the channel count


def aligned_probabilities(probs):
    """Distribution alignment (Berthelot et al. 2020, ReMixMatch): each row of q(y|x) scaled by
    p(y) / mean_batch q(y|x) and renormalised, with p(y) uniform. (B, K) -> (B, K)

    Pseudo-labels drift: a class that q(y|x) over-predicts teaches itself on more images each step
    and absorbs its neighbours (on Fashion-MNIST with 10 labels per class one draw ends with bags
    read as coats). Dividing by the classes' predicted shares counters it. The minibatch's mean
    stands in for ReMixMatch's running average over 128 minibatches: no state to carry, checkpoint
    or synchronise across replicas (under tf.distribute each replica aligns to its own rows)."""
    # A class no row predicts (its probabilities underflowed) stays 0 instead of 0 / 0.
    aligned = probs / tf.maximum(tf.reduce_mean(probs, axis=0, keepdims=True), _TINY)
    return aligned / tf.reduce_sum(aligned, axis=-1, keepdims=True)


def sharpened_probabilities(probs, temperature: float):
    """MixMatch's sharpening (Berthelot et al. 2019): each row q^(1/T) renormalised. (B, K) -> (B, K)

    T < 1 moves the soft target toward its argmax without the hard label's all-or-nothing: a
    confident row is nearly one-hot, an undecided one stays spread. Computed as a softmax of
    log q / T, which holds for probabilities that underflow."""
    return tf.nn.softmax(tf.math.log(tf.maximum(probs, _TINY)) / temperature, axis=-1)


def _categorical_from_probs(like, probs):
    """A categorical of `like`'s kind with these probabilities, built from logits floored at
    log(tiny): a probability that underflowed to 0 (a confident q(y|x), or a class the minibatch
    never predicts) would give -inf logits, and TFP's categorical KL then returns NaN."""
    return type(like)(logits=tf.math.log(tf.maximum(probs, _TINY)), dtype=like.dtype)


def augmentation_kl(q_fn, x, q, seed, max_shift: int = 2, flip: bool = False, cutout: int = 0,
                    threshold: float = 0.0, align: bool = False, temperature: float = 1.0,
                    rotation: float = 0.0, scale: float = 0.0, elastic: float = 0.0, elastic_sigma: float = 4.0):
    """Consistency of a node's posterior under a random transformation t, q(.|x) held fixed. (B,)

    threshold = 0 (or a node that is not categorical): KL(q(.|x) || q(.|t(x))). threshold > 0 on
    a categorical node: FixMatch's pseudo-label (Sohn et al. 2020), -log q(y = argmax q(y|x) | t(x))
    on the examples where max q(y|x) >= threshold, else 0: only confident predictions teach, and
    they teach a hard class, so q(y|x)'s own mistakes at low confidence are not copied onto the
    transformed image. `align` (categorical nodes, either form): the target is
    `aligned_probabilities` of q(.|x). `temperature` < 1 (categorical nodes, the KL form): the
    target is then `sharpened_probabilities` (the hard label needs no sharpening).
    """
    transformed = q_fn(random_shift_and_flip(x, seed, max_shift, flip, cutout, rotation, scale, elastic, elastic_sigma))
    return augmentation_divergence(q, transformed, threshold, align, temperature)


def augmentation_divergence(q, transformed, threshold: float = 0.0, align: bool = False, temperature: float = 1.0):
    """`augmentation_kl`'s term between q(.|x) (held fixed) and q(.|t(x)) already computed. (B,)"""
    target = held_fixed(q)
    # The package's categorical nodes are OneHotCategorical (families/categorical.py); either kind
    # of categorical gets the aligned target and the hard label.
    categorical = isinstance(target, (tfd.Categorical, tfd.OneHotCategorical))
    if align and categorical:
        target = _categorical_from_probs(target, aligned_probabilities(target.probs_parameter()))
    if temperature != 1.0 and categorical and not threshold:
        target = _categorical_from_probs(target, sharpened_probabilities(target.probs_parameter(), temperature))
    if not threshold or not categorical:
        return tfd.kl_divergence(target, transformed)
    probs = target.probs_parameter()
    confident = tf.cast(tf.reduce_max(probs, -1) >= threshold, tf.float32)
    hard = tf.argmax(probs, -1, output_type=tf.int32)
    log_q = tf.gather(tf.nn.log_softmax(transformed.logits_parameter()), hard, axis=-1, batch_dims=1)
    return -confident * log_q


def mixup_kl(q_fn, x, like, target_probs, seed, concentration: float):
    """Interpolation consistency (MixUp, Zhang et al. 2018; ICT, Verma et al. 2019; MixMatch,
    Berthelot et al. 2019): each image mixed with another of the minibatch,
    x~_i = lam_i x_i + (1 - lam_i) x_pi(i), lam_i ~ Beta(concentration, concentration), asks
    q(y | x~_i) for the same mix of the two targets. (B,)

        KL(lam_i t_i + (1 - lam_i) t_pi(i) || q(y | x~_i))

    `target_probs` (B, K): the targets t, held fixed (the caller's: a label's one-hot where the
    node is observed, so labelled and unlabelled images mix as in MixMatch, else q(y|x)); `like`:
    a categorical of the node's kind; pi a random permutation of the minibatch's rows (under
    tf.distribute, of the replica's own rows). Between two images the classifier is asked to
    change its mind linearly, a smoothness the shift and cutout of `augmentation_kl` cannot ask
    for: on few labels, where a classifier is otherwise overconfident between classes, this is
    the part of MixMatch whose removal cost most in its ablation (Berthelot et al. 2019, Table 4)."""
    mixed, target = mixup_pairs(x, target_probs, seed, concentration)
    return mixup_divergence(like, target, q_fn(mixed))


def mixup_pairs(x, target_probs, seed, concentration: float):
    """`mixup_kl`'s mixed images x~ (B, H, W, C) and their mixed targets (B, K), held fixed."""
    x = tf.convert_to_tensor(x)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    rows = tf.shape(x)[0]
    partner = tf.argsort(tf.random.stateless_uniform([rows], seeds[0], alg=noise_algorithm()))   # pi
    lam = tfd.Beta(concentration, concentration).sample(rows, seed=seeds[1])                 # (B,)
    mixed = lam[:, None, None, None] * x + (1.0 - lam[:, None, None, None]) * tf.gather(x, partner)
    target_probs = tf.stop_gradient(target_probs)
    return mixed, lam[:, None] * target_probs + (1.0 - lam[:, None]) * tf.gather(target_probs, partner)


def mixup_divergence(like, target, mixed_q):
    """KL(mixed target || q(y | x~)) for `mixup_pairs`' target and q on its mixed images. (B,)"""
    return tfd.kl_divergence(_categorical_from_probs(like, target), mixed_q)


def per_example_loss(terms: dict, alphas: dict, beta=1.0, entropy_weight=0.0, consistency_weight=0.0,
                     augment_weight=0.0, mixup_weight=0.0, augment_ramp=1.0):
    """The minimised loss per example from the terms above (see module docstring). (B,)

    `alphas`: {labelled node: weight of its log q term}. `augment_ramp` (a scalar, may be a
    tensor) scales the augmentation and MixUp weights: their warm-up.
    """
    kls = [v for k, v in terms.items() if k.startswith("kl/")]
    loss = -elbo(terms["reconstruction"], kls, beta)
    for name, alpha in alphas.items():
        loss -= alpha * terms[f"log_q/{name}"]
    if entropy_weight:
        loss += entropy_weight * terms["entropy"]
    if consistency_weight:
        loss += consistency_weight * terms["consistency"]
    if augment_weight:
        loss += augment_ramp * augment_weight * terms["augment"]
    if mixup_weight:
        loss += augment_ramp * mixup_weight * terms["mixup"]
    return loss


def scale_gradient(t, weight: float):
    """t in the forward pass; its gradient times `weight` in the backward pass."""
    if weight == 1.0:
        return t
    return weight * t + (1.0 - weight) * tf.stop_gradient(t)


def linear_ramp(step, warmup_steps: int):
    """min(1, step / warmup_steps), a weight ramped from 0 to 1 (the KL's beta over
    `kl_warmup_steps`, the augmentation and MixUp weights' over `augment_warmup_steps`); 1 when
    warm-up is off."""
    if warmup_steps <= 0:
        return tf.constant(1.0)
    return tf.minimum(1.0, tf.cast(step, tf.float32) / float(warmup_steps))


def annealed_temperature(step, start: float, end: float, steps: int):
    """T = start * (end / start) ** min(1, step / steps): exponential annealing from start to end."""
    progress = tf.minimum(1.0, tf.cast(step, tf.float32) / float(steps))
    return start * tf.pow(end / start, progress)
