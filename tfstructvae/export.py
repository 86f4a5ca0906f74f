"""SavedModel export with explicit signatures, and a reload check.

The SavedModel needs only TensorFlow to serve (`tf.saved_model.load`); it holds
plain TF ops, no TFP or Keras objects. Signatures (batch dimension free):

    classify(images f32 [B,H,W,C])             -> probabilities [B,K]
    encode(images)                             -> probabilities [B,K], <node>_mean, <node>_scale [B,D]
    encode_given_class(images, classes i32 [B]) -> the same, with q(z | x, y=classes)
    decode(classes i32 [B], <node> f32 [B,D] | i32 [B]) -> pixel_probabilities [B,H,W,C]
    reconstruct(images)                        -> pixel_probabilities [B,H,W,C], probabilities [B,K]

`images` are float32 pixels in [0, 1]; a batch outside that range is refused.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # model.export() calls this module: no import at run time
    from tfstructvae.model import StructuredVAE


class ServingModule(tf.Module):
    """The serving functions of a StructuredVAE, with fixed dtypes and a free batch dimension.

    The first labelled categorical node is `classes` / `probabilities`; every other node `n`
    is `n` in decode (int32 [B] for a categorical node, float32 [B, D] otherwise) and
    `n_probabilities`, or `n_mean` and `n_scale`, in encode.
    """

    def __init__(self, model: StructuredVAE):
        super().__init__(name="tfstructvae")
        if model.label_node is None:
            raise ValueError("export needs a graph with a labelled categorical node (the class)")
        self.model = model
        self.label = model.label_node.name
        self.others = [n for n in model.latent_graph if n.name != self.label]
        self.continuous = model.latent_graph.continuous
        image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
        self.classify = tf.function(self._classify, input_signature=[image_spec])
        self.encode = tf.function(self._encode, input_signature=[image_spec])
        self.reconstruct = tf.function(self._reconstruct, input_signature=[image_spec])
        self.encode_given_class = tf.function(
            self._encode_given_class,
            input_signature=[image_spec, tf.TensorSpec([None], tf.int32, name="classes")])
        decode_specs = [tf.TensorSpec([None], tf.int32, name="classes")] + [
            tf.TensorSpec([None], tf.int32, name=n.name) if n.family == "categorical"
            else tf.TensorSpec([None, n.size], tf.float32, name=n.name) for n in self.others]
        self.decode = tf.function(self._decode, input_signature=decode_specs)

    def _checked(self, images):
        tf.debugging.assert_greater_equal(images, 0.0, message="images must be float32 pixels in [0, 1]")
        tf.debugging.assert_less_equal(images, 1.0, message="images must be float32 pixels in [0, 1]")
        return images

    def _classify(self, images):
        return {"probabilities": self.model.classify(self._checked(images))}

    def _encode(self, images, classes=None):
        q = self.model.encode(self._checked(images), y=classes)
        out = {"probabilities": q[self.label].probs_parameter()}
        for node in self.others:
            if node.family == "normal":
                out[f"{node.name}_mean"] = q[node.name].mean()
                out[f"{node.name}_scale"] = q[node.name].stddev()
            else:
                out[f"{node.name}_probabilities"] = self.model.families[node.name].mean_value(q[node.name])
        return out

    def _encode_given_class(self, images, classes):
        return self._encode(images, self._checked_classes(classes, self.model.num_classes))

    def _checked_classes(self, classes, size):
        tf.debugging.assert_less(classes, size, message=f"classes must lie in [0, {size})")
        tf.debugging.assert_non_negative(classes, message="classes must be >= 0")
        return classes

    def _decode(self, classes, *values):
        classes = self._checked_classes(classes, self.model.num_classes)
        values = [self._checked_classes(v, n.size) if n.family == "categorical" else v
                  for n, v in zip(self.others, values)]
        return {"pixel_probabilities": self.model.decode(classes, *values).mean()}

    def _reconstruct(self, images):
        q = self.model.encode(self._checked(images))
        probs = q[self.label].probs_parameter()
        classes = tf.argmax(probs, -1, output_type=tf.int32)
        point = {n.name: (q[n.name].mean() if n.family == "normal"
                          else self.model.families[n.name].point_value(q[n.name])) for n in self.others}
        return {"pixel_probabilities": self.model.decode(classes, *point.values()).mean(), "probabilities": probs}


def export_saved_model(model: StructuredVAE, out_dir: str, config_json: str | None = None,
                       check: bool = True) -> dict:
    """Write a SavedModel to out_dir; return the reload check's maximum absolute differences."""
    module = ServingModule(model)
    signatures = {name: getattr(module, name).get_concrete_function()
                  for name in ("classify", "encode", "encode_given_class", "decode", "reconstruct")}
    tf.saved_model.save(module, out_dir, signatures=signatures)
    if config_json is not None:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            f.write(config_json)
    return reload_check(module, out_dir) if check else {}


def reload_check(module: ServingModule, out_dir: str, atol: float = 1e-5) -> dict:
    """Load the SavedModel back and compare every signature with the in-process module."""
    loaded = tf.saved_model.load(out_dir)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(4, *module.model.image_shape)), tf.float32)
    classes = tf.constant([0, 1, 2, 3], tf.int32) % module.model.num_classes
    latents = {n.name: (tf.constant(np.arange(4) % n.size, tf.int32) if n.family == "categorical"
                        else tf.constant(rng.standard_normal((4, n.size)) if n.family == "normal"
                                         else rng.integers(0, 2, (4, n.size)), tf.float32))
               for n in module.others}
    calls = {"classify": ((images,), {"images": images}),
             "encode": ((images,), {"images": images}),
             "reconstruct": ((images,), {"images": images}),
             "encode_given_class": ((images, classes), {"images": images, "classes": classes}),
             "decode": ((classes, *latents.values()), {"classes": classes, **latents})}
    diffs = {}
    for name, (args, kwargs) in calls.items():
        expected, got = getattr(module, name)(*args), loaded.signatures[name](**kwargs)
        for key, value in expected.items():
            diff = float(np.max(np.abs(value.numpy() - got[key].numpy())))
            diffs[f"{name}/{key}"] = diff
            if diff > atol:
                raise AssertionError(f"reloaded SavedModel's {name}/{key} differs by {diff} (> {atol})")
    return diffs


def describe(out_dir: str) -> str:
    """Human-readable list of a SavedModel's signatures."""
    loaded = tf.saved_model.load(out_dir)
    lines = []
    for name, fn in loaded.signatures.items():
        ins = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in fn.structured_input_signature[1].items())
        outs = ", ".join(f"{k}: {v.dtype.name}{list(v.shape)}" for k, v in fn.structured_outputs.items())
        lines.append(f"{name}({ins}) -> {outs}")
    return "\n".join(sorted(lines))

