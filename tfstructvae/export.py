"""SavedModel export with explicit signatures, and a reload check.

The SavedModel needs only TensorFlow to serve (`tf.saved_model.load`); it holds
plain TF ops, no TFP or Keras objects. Signatures (batch dimension free):

    classify(images f32 [B,H,W,C])             -> probabilities [B,K]
    encode(images)                             -> probabilities [B,K], <node>_mean, <node>_scale [B,D]
    encode_given_class(images, classes i32 [B]) -> the same, with q(z | x, y=classes)
    decode(classes i32 [B], <node> f32 [B,D])  -> pixel_probabilities [B,H,W,C]
    reconstruct(images)                        -> pixel_probabilities [B,H,W,C], probabilities [B,K]

`images` are float32 pixels in [0, 1]; a batch outside that range is refused.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfstructvae.model import StructuredVAE


class ServingModule(tf.Module):
    def __init__(self, model: StructuredVAE):
        super().__init__(name="tfstructvae")
        self.model = model
        self.continuous = model.latent_graph.continuous
        image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
        self.classify = tf.function(self._classify, input_signature=[image_spec])
        self.encode = tf.function(self._encode, input_signature=[image_spec])
        self.reconstruct = tf.function(self._reconstruct, input_signature=[image_spec])
        self.encode_given_class = tf.function(
            self._encode_given_class,
            input_signature=[image_spec, tf.TensorSpec([None], tf.int32, name="classes")])
        decode_specs = [tf.TensorSpec([None], tf.int32, name="classes")] + [
            tf.TensorSpec([None, n.size], tf.float32, name=n.name) for n in self.continuous]
        self.decode = tf.function(self._decode, input_signature=decode_specs)

    def _checked(self, images):
        tf.debugging.assert_greater_equal(images, 0.0, message="images must be float32 pixels in [0, 1]")
        tf.debugging.assert_less_equal(images, 1.0, message="images must be float32 pixels in [0, 1]")
        return images

    def _classify(self, images):
        return {"probabilities": self.model.classify(self._checked(images))}

    def _encode(self, images, classes=None):
        q = self.model.encode(self._checked(images), y=classes)
        out = {"probabilities": q[self.model.label_node.name].probs_parameter()}
        for node in self.continuous:
            out[f"{node.name}_mean"] = q[node.name].mean()
            out[f"{node.name}_scale"] = q[node.name].stddev()
        return out

    def _encode_given_class(self, images, classes):
        return self._encode(images, self._checked_classes(classes))

    def _checked_classes(self, classes):
        tf.debugging.assert_less(classes, self.model.num_classes,
                                 message=f"classes must lie in [0, {self.model.num_classes})")
        tf.debugging.assert_non_negative(classes, message="classes must be >= 0")
        return classes

    def _decode(self, classes, *latents):
        classes = self._checked_classes(classes)
        return {"pixel_probabilities": self.model.decode(classes, *latents).mean()}

    def _reconstruct(self, images):
        q = self.model.encode(self._checked(images))
        probs = q[self.model.label_node.name].probs_parameter()
        classes = tf.argmax(probs, -1, output_type=tf.int32)
        means = [q[n.name].mean() for n in self.continuous]
        return {"pixel_probabilities": self.model.decode(classes, *means).mean(), "probabilities": probs}


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
    latents = {n.name: tf.constant(rng.standard_normal((4, n.size)), tf.float32) for n in module.continuous}
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

