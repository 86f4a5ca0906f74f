"""Network bodies: the deterministic maps inside each factor of q and p.

Each factor's network takes several inputs (x and the node's parents in q; all
latents in p). Its first layer is a sum of one linear projection per input,

    h1 = act( W_x x + W_y y + W_z z + b )

which equals a Dense layer on the concatenation [x, y, z], but lets inputs of
shape (B, d) broadcast against enumerated ones of shape (K, B, d): the
`enumerate` estimator then projects x once, not K times, and its extra cost is
only the per-class part of the work (chiefly the decoder).
"""

from __future__ import annotations

import keras


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


def mlp(hidden_units, output_dim, n_inputs, batch_norm=False, name=None) -> SummedInputMLP:
    return SummedInputMLP(hidden_units, output_dim, n_inputs, batch_norm=batch_norm, name=name)
