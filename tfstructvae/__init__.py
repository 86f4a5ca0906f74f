"""tfstructvae: structured graphical-model encoders for semi-supervised VAEs (TF2 / Keras 3 / TFP)."""

from tfstructvae.startup import import_tensorflow_quietly as _import_tensorflow_quietly

_import_tensorflow_quietly()

from tfstructvae.config import Config, ConfigError, get_preset, PRESETS  # noqa: E402
from tfstructvae.graph import Bernoulli, Categorical, LatentGraph, Normal, digit_style_graph  # noqa: E402
from tfstructvae.model import StructuredVAE  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Bernoulli", "Categorical", "Config", "ConfigError", "LatentGraph", "Normal", "PRESETS",
           "StructuredVAE", "digit_style_graph", "get_preset"]
