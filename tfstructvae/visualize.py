"""What the structured latent looks like: analogies, style grids, TensorBoard images.

- analogies (paper Fig. 3a): infer the style z of each source image (the mean of
  q(z|x,y) at the inferred y), hold it fixed and decode every class y.
- style grid (Fig. 3b): for a 2-d style, decode a grid of z spaced by the prior's
  quantiles, one panel per class.

Every function works on a `Codec`: a trained StructuredVAE or a loaded SavedModel,
so figures can be drawn from either. For a model with more nodes, a Codec varies one
categorical node (`node`, default the class) and reads one continuous node as the
style (`style`); every other node is held at the value inferred for the source image
(analogies) or at its prior mean (style grids).
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf


class Codec:
    """encode(images) -> (class probabilities, style mean); decode(classes, style) -> pixel means."""

    def __init__(self, source, node: str | None = None, style: str | None = None):
        if isinstance(source, str):
            source = _load(source)
        self.source = source
        self.held_names = []
        if hasattr(source, "signatures"):            # a SavedModel exported by tfstructvae
            enc, dec = source.signatures["encode"], source.signatures["decode"]
            self.style_name = style or [k for k in dec.structured_input_signature[1] if k != "classes"][0]
            self.image_shape = tuple(enc.structured_input_signature[1]["images"].shape[1:])
            self.num_classes = int(enc.structured_outputs["probabilities"].shape[-1])
            self.style_dim = int(dec.structured_input_signature[1][self.style_name].shape[-1])
            self._enc, self._dec = enc, dec
            self._enc_at = source.signatures["encode_given_class"]
            return
        graph = source.latent_graph                  # a StructuredVAE
        varied = graph[node] if node else source.label_node
        if varied is None or varied.family != "categorical":
            raise ValueError(f"analogies vary a categorical node; got {node or 'none (no labelled class)'}")
        if style is None:
            free = [n for n in graph.continuous if not n.labelled]
            children = [n for n in free if varied.name in n.parents]
            if len(free) == 1 or children:
                style = (free if len(free) == 1 else children)[-1].name
            else:
                raise ValueError(f"choose the style node (style=...): continuous nodes {[n.name for n in free]}")
        self.node, self.style_name = varied.name, style
        self.style_dim = graph[style].size
        self.image_shape, self.num_classes = source.image_shape, varied.size
        self.held_names = [n.name for n in graph if n.name not in (self.node, self.style_name)]

    def encode_all(self, images):
        """(class probabilities (N, K), style mean (N, D), {held node: inferred value (N, size)})."""
        images = tf.convert_to_tensor(images, tf.float32)
        if hasattr(self, "_enc"):
            out = self._enc(images=images)
            return out["probabilities"].numpy(), out[f"{self.style_name}_mean"].numpy(), {}
        q = self.source.encode(images)
        held = {n: self.source.point_value(n, q[n]).numpy() for n in self.held_names}
        return q[self.node].probs_parameter().numpy(), q[self.style_name].mean().numpy(), held

    def encode(self, images):
        return self.encode_all(images)[:2]

    def style_at(self, images, classes):
        """Mean of q(z | x, y=classes): the style read at a given class, not the inferred one."""
        images = tf.convert_to_tensor(images, tf.float32)
        classes = tf.convert_to_tensor(classes, tf.int32)
        if hasattr(self, "_enc_at"):
            return self._enc_at(images=images, classes=classes)[f"{self.style_name}_mean"].numpy()
        return self.source.encode(images, values={self.node: classes})[self.style_name].mean().numpy()

    def decode(self, classes, style, held=None):
        classes = tf.convert_to_tensor(classes, tf.int32)
        style = tf.convert_to_tensor(style, tf.float32)
        if hasattr(self, "_dec"):
            return self._dec(classes=classes, **{self.style_name: style})["pixel_probabilities"].numpy()
        if held is None:                              # no source image: hold the others at their prior mean
            graph = self.source.latent_graph
            held = {n: np.broadcast_to(self.source.families[n].fixed_prior(graph[n].size).mean().numpy(),
                                       (len(style), graph[n].size)) for n in self.held_names}
        values = {self.node: classes, self.style_name: style, **held}
        return self.source.decode(**values).mean().numpy()


def _load(path: str):
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return tf.saved_model.load(path)
    from tfstructvae.rundir import load_run
    return load_run(path)[1]


def analogies(codec: Codec, images: np.ndarray) -> np.ndarray:
    """Decode every class with each source's style. Returns (N, K, H, W, C) pixel means."""
    _, style, held = codec.encode_all(images)                               # (N, D), {node: (N, size)}
    n, k = len(images), codec.num_classes
    classes = np.tile(np.arange(k), n)                                      # (N*K,)
    held = {name: np.repeat(v, k, axis=0) for name, v in held.items()} if held else None
    out = codec.decode(classes, np.repeat(style, k, axis=0), held)          # (N*K, H, W, C)
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
        probs, style, held = codec.encode_all(self.images)
        recon = codec.decode(probs.argmax(-1), style, held or None)
        figs = {"reconstructions": tile(np.stack([self.images, recon], axis=1)),
                "analogies": analogy_figure(codec, self.images)}
        if codec.style_dim == 2:
            figs["style_grid"] = style_figure(codec)
        return figs

    def on_epoch_end(self, epoch, logs=None):
        if not self.every or (epoch + 1) % self.every:
            return
        try:
            figures = self.figures()
        except ValueError as e:     # a graph these figures cannot show: say so once, keep training
            print(f"ImageSummaries: no figures for this graph ({e})")
            self.every = 0
            return
        with self.writer.as_default():
            for name, image in figures.items():
                tf.summary.image(name, image[None], step=epoch)
        self.writer.flush()
