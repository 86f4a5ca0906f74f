"""Network bodies: the deterministic maps inside each factor of q and p.

Each factor of q reads the image through a body (`FlattenBody` for the MLP of the
MNIST experiments, `ConvBody` for the paper's conv 32 -> 64 encoder), then a
`SummedInputMLP` head; p(x | ...) is a `SummedInputMLP` (MLP) or a
`DeconvDecoder` (mirrored transposed convolutions).

Each factor's network takes several inputs (x and the node's parents in q; all
latents in p). Its first layer is a sum of one linear projection per input,

    h1 = act( W_x x + W_y y + W_z z + b )

which equals a Dense layer on the concatenation [x, y, z], but lets inputs of
shape (B, d) broadcast against enumerated ones of shape (K, B, d): the
`enumerate` estimator then projects x once, not K times, and its extra cost is
only the per-class part of the work (chiefly the decoder).
"""

from __future__ import annotations

import contextlib
import math

import keras


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers created inside compute in the Keras dtype policy `name` (e.g. "mixed_bfloat16":
    bfloat16 products, float32 weights); the global policy is restored on leaving."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


class SummedInputMLP(keras.layers.Layer):
    """MLP whose first layer sums a projection per input; output is a linear head.

    Inputs: a list of tensors with the same last-axis layout per position and
    leading shapes that broadcast, e.g. [(B, 784), (K, 1, 10)] -> (K, B, units).
    """

    def __init__(self, hidden_units, output_dim, n_inputs, batch_norm=False,
                 activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.output_dim = output_dim
        self.n_inputs = n_inputs
        self.batch_norm = batch_norm
        first = self.hidden_units[0]
        self.input_projections = [
            keras.layers.Dense(first, use_bias=(i == 0), name=f"in{i}") for i in range(n_inputs)]
        self.hidden = [keras.layers.Dense(u, name=f"hidden{j}")
                       for j, u in enumerate(self.hidden_units[1:], start=1)]
        self.norms = ([keras.layers.BatchNormalization(name=f"bn{j}")
                       for j in range(len(self.hidden_units))] if batch_norm else [])
        self.activation = keras.activations.get(activation)
        self.head = keras.layers.Dense(output_dim, name="head")

    def call(self, inputs, training=False):
        if len(inputs) != self.n_inputs:
            raise ValueError(f"{self.name} expects {self.n_inputs} inputs, got {len(inputs)}")
        h = self.input_projections[0](inputs[0])
        for proj, t in zip(self.input_projections[1:], inputs[1:]):
            h = h + proj(t)                      # broadcasts (B, H) with (K, B, H)
        layers = [None] + self.hidden
        for j, dense in enumerate(layers):
            if dense is not None:
                h = dense(h)
            if self.batch_norm:
                h = self.norms[j](h, training=training)
            h = self.activation(h)
        return self.head(h)


class SummedLinear(keras.layers.Layer):
    """h = sum_i W_i v_i + b: a linear map of several inputs that broadcast against each other.

    The conditional priors' parameters: on a one-hot parent it is a learned value per class.
    """

    def __init__(self, output_dim, n_inputs, **kwargs):
        super().__init__(**kwargs)
        self.projections = [keras.layers.Dense(output_dim, use_bias=(i == 0), name=f"in{i}")
                            for i in range(n_inputs)]

    def call(self, inputs):
        h = self.projections[0](inputs[0])
        for proj, t in zip(self.projections[1:], inputs[1:]):
            h = h + proj(t)
        return h


class DenseTrunk(keras.layers.Layer):
    """The hidden layers of an MLP without a head: h = act(... act(W_1 x + b_1) ...). (B, d) -> (B, units[-1])

    The shared encoder trunk (`model.shared_encoder`): every node's parameters are a linear map
    of h(x) and the node's parents.
    """

    def __init__(self, hidden_units, batch_norm=False, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(u, name=f"hidden{j}") for j, u in enumerate(hidden_units)]
        self.norms = ([keras.layers.BatchNormalization(name=f"bn{j}") for j in range(len(hidden_units))]
                      if batch_norm else [])
        self.activation = keras.activations.get(activation)

    def call(self, x, training=False):
        for j, dense in enumerate(self.hidden):
            x = dense(x)
            if self.norms:
                x = self.norms[j](x, training=training)
            x = self.activation(x)
        return x


def mlp(hidden_units, output_dim, n_inputs, batch_norm=False, activation="relu", name=None) -> SummedInputMLP:
    return SummedInputMLP(hidden_units, output_dim, n_inputs, batch_norm=batch_norm, activation=activation,
                          name=name)


def x_body(kind: str, batch_norm=False, name=None, filters=None) -> keras.layers.Layer:
    """How a factor of q sees the image: "mlp" (pixels as a vector) or "conv" (ConvBody with
    `filters`, None: the paper's 32 -> 64)."""
    if kind == "mlp":
        return FlattenBody(name=name)
    if kind == "conv":
        return ConvBody(filters=tuple(filters or (32, 64)), batch_norm=batch_norm, name=name)
    raise ValueError(f"unknown network {kind!r}; expected 'mlp' or 'conv'")


class FlattenBody(keras.layers.Layer):
    """x -> its pixels as a vector: the MLP's view of an image. (B, H, W, C) -> (B, H*W*C)"""

    def call(self, x):
        return keras.ops.reshape(x, (-1, math.prod(x.shape[1:])))


class ConvBody(keras.layers.Layer):
    """The paper's convolutional encoder: conv 32 -> conv 64 (stride 2 each), flattened.

    (B, H, W, C) -> (B, ceil(H/2^L) * ceil(W/2^L) * filters[-1]) for L = len(filters), any image size.
    """

    def __init__(self, filters=(32, 64), kernel_size=4, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.convs = [keras.layers.Conv2D(f, kernel_size, strides=2, padding="same", name=f"conv{i}")
                      for i, f in enumerate(filters)]
        self.norms = [keras.layers.BatchNormalization(name=f"bn{i}") for i in range(len(filters))] \
            if batch_norm else []
        self.flatten = keras.layers.Flatten()

    def call(self, x, training=False):
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x, training=training)
            x = keras.activations.relu(x)
        return self.flatten(x)


class DeconvDecoder(keras.layers.Layer):
    """The mirrored decoder: summed-input MLP -> (H/4, W/4, 64) -> deconv 32 -> deconv C.

    Inputs broadcast as in SummedInputMLP; leading axes (B,) or (K, B) are kept.
    Output: per-pixel parameters (..., H, W, C * params_per_pixel).
    """

    def __init__(self, hidden_units, image_shape, n_inputs, params_per_pixel=1, filters=(64, 32),
                 kernel_size=4, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        h, w, c = image_shape
        self.seed_shape = (-(-h // 4), -(-w // 4), filters[0])
        self.image_shape = tuple(image_shape)
        self.mlp = SummedInputMLP(hidden_units, math.prod(self.seed_shape), n_inputs, batch_norm=batch_norm,
                                  name="mlp")
        self.deconvs = [keras.layers.Conv2DTranspose(filters[1], kernel_size, strides=2, padding="same",
                                                     activation="relu", name="deconv0"),
                        keras.layers.Conv2DTranspose(c * params_per_pixel, kernel_size, strides=2,
                                                     padding="same", name="deconv1")]

    def call(self, inputs, training=False):
        seed = keras.activations.relu(self.mlp(inputs, training=training))         # (..., h*w*64)
        lead = keras.ops.shape(seed)[:-1]
        h = keras.ops.reshape(seed, (-1, *self.seed_shape))                        # (N, h/4, w/4, 64)
        for deconv in self.deconvs:
            h = deconv(h)
        h = h[:, : self.image_shape[0], : self.image_shape[1]]                     # crop odd sizes (28 -> 28)
        return keras.ops.reshape(h, (*lead, *h.shape[1:]))

