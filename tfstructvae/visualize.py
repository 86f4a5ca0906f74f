"""What the structured latent looks like: analogies, style grids, TensorBoard images.

- analogies (paper Fig. 3a): infer the style z of each source image (the mean of
  q(z|x,y) at the inferred y), hold it fixed and decode every class y.
- style grid (Fig. 3b): for a 2-d style, decode a grid of z spaced by the prior's
  quantiles, one panel per class.

Every function works on a `Codec`: a trained StructuredVAE or a loaded SavedModel,
so figures can be drawn from either.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf


class Codec:
    """encode(images) -> (class probabilities, style mean); decode(classes, style) -> pixel means."""

    def __init__(self, source):
        if isinstance(source, str):
            source = _load(source)
        self.source = source
        if hasattr(source, "signatures"):            # a SavedModel exported by tfstructvae
            enc, dec = source.signatures["encode"], source.signatures["decode"]
            self.style_name = [k for k in dec.structured_input_signature[1] if k != "classes"][0]
            self.image_shape = tuple(enc.structured_input_signature[1]["images"].shape[1:])
            self.num_classes = int(enc.structured_outputs["probabilities"].shape[-1])
            self.style_dim = int(dec.structured_input_signature[1][self.style_name].shape[-1])
            self._enc, self._dec = enc, dec
            self._enc_at = source.signatures["encode_given_class"]
        else:                                        # a StructuredVAE
            styles = source.latent_graph.continuous
            if len(styles) != 1:
                raise ValueError("analogies need exactly one continuous (style) node")
            self.style_name, self.style_dim = styles[0].name, styles[0].size
            self.image_shape, self.num_classes = source.image_shape, source.num_classes

    def encode(self, images):
        images = tf.convert_to_tensor(images, tf.float32)
        if hasattr(self, "_enc"):
            out = self._enc(images=images)
            return out["probabilities"].numpy(), out[f"{self.style_name}_mean"].numpy()
        q = self.source.encode(images)
        return (q[self.source.label_node.name].probs_parameter().numpy(), q[self.style_name].mean().numpy())

    def style_at(self, images, classes):
        """Mean of q(z | x, y=classes): the style read at a given class, not the inferred one."""
        images = tf.convert_to_tensor(images, tf.float32)
        classes = tf.convert_to_tensor(classes, tf.int32)
        if hasattr(self, "_enc_at"):
            return self._enc_at(images=images, classes=classes)[f"{self.style_name}_mean"].numpy()
        return self.source.encode(images, y=classes)[self.style_name].mean().numpy()

    def decode(self, classes, style):
        classes = tf.convert_to_tensor(classes, tf.int32)
        style = tf.convert_to_tensor(style, tf.float32)
        if hasattr(self, "_dec"):
            return self._dec(classes=classes, **{self.style_name: style})["pixel_probabilities"].numpy()
        return self.source.decode(classes, style).mean().numpy()


def _load(path: str):
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return tf.saved_model.load(path)
    from tfstructvae.train import load_run
    return load_run(path)[1]


def analogies(codec: Codec, images: np.ndarray) -> np.ndarray:
    """Decode every class with each source's style. Returns (N, K, H, W, C) pixel means."""
    _, style = codec.encode(images)                                         # (N, D)
    n, k = len(images), codec.num_classes
    classes = np.tile(np.arange(k), n)                                      # (N*K,)
    out = codec.decode(classes, np.repeat(style, k, axis=0))                # (N*K, H, W, C)
    return out.reshape(n, k, *codec.image_shape)


def style_grid(codec: Codec, steps: int = 8, quantile_range=(0.05, 0.95)) -> np.ndarray:
    """For a 2-d style: decode z on a steps x steps grid of prior quantiles, per class.

    Returns (K, steps, steps, H, W, C).
    """
    if codec.style_dim != 2:
        raise ValueError(f"a style grid needs a 2-d style latent, this model's has {codec.style_dim} dims")
    import tensorflow_probability as tfp
    probs = np.linspace(*quantile_range, steps).astype(np.float32)
    q = tfp.distributions.Normal(0.0, 1.0).quantile(probs).numpy()         # the prior's quantiles

    z = np.stack(np.meshgrid(q, q[::-1]), -1).reshape(-1, 2)                # rows: z2 high->low
    k = codec.num_classes
    out = codec.decode(np.repeat(np.arange(k), len(z)), np.tile(z, (k, 1)))
    return out.reshape(k, steps, steps, *codec.image_shape)


def tile(grid: np.ndarray, gap: int = 1, value: float = 1.0) -> np.ndarray:
    """(R, C, H, W, ch) images in [0, 1] -> one (R*(H+gap)-gap, C*(W+gap)-gap, ch) image."""
    r, c, h, w, ch = grid.shape
    canvas = np.full((r * (h + gap) - gap, c * (w + gap) - gap, ch), value, np.float32)
    for i in range(r):
        for j in range(c):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = grid[i, j]
    return canvas


def analogy_figure(codec: Codec, images: np.ndarray) -> np.ndarray:
    """Source image, a blank column, then one column per class. (rows, cols, ch) in [0, 1]."""
    grid = analogies(codec, images)                                         # (N, K, H, W, C)
    blank = np.ones_like(grid[:, :1])
    return tile(np.concatenate([images[:, None], blank, grid], axis=1))


def style_figure(codec: Codec, steps: int = 8, per_row: int = 5) -> np.ndarray:
    panels = style_grid(codec, steps)                                       # (K, s, s, H, W, C)
    tiles = np.stack([tile(p) for p in panels])                             # (K, h, w, C)
    rows = math.ceil(len(tiles) / per_row)
    pad = rows * per_row - len(tiles)
    tiles = np.concatenate([tiles, np.ones((pad, *tiles.shape[1:]), np.float32)])
    return tile(tiles.reshape(rows, per_row, *tiles.shape[1:]), gap=6)


def save_png(image: np.ndarray, path: str) -> str:
    """Write an (H, W, C) image in [0, 1] as PNG (via TensorFlow, no imaging library)."""
    pixels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(pixels))
    return path


class ImageSummaries(keras.callbacks.Callback):
    """Each epoch, write reconstructions, analogies and (2-d style) the style grid to TensorBoard."""

    def __init__(self, log_dir: str, images: np.ndarray, every: int = 1):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.images = np.asarray(images, np.float32)
        self.every = every

    def figures(self) -> dict[str, np.ndarray]:
        codec = Codec(self.model)
        probs, style = codec.encode(self.images)
        recon = codec.decode(probs.argmax(-1), style)
        figs = {"reconstructions": tile(np.stack([self.images, recon], axis=1)),
                "analogies": analogy_figure(codec, self.images)}
        if codec.style_dim == 2:
            figs["style_grid"] = style_figure(codec)
        return figs

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        with self.writer.as_default():
            for name, image in self.figures().items():
                tf.summary.image(name, image[None], step=epoch)
        self.writer.flush()
