"""Distribution families of latent nodes: one module each, one interface.

A family says, for a node of its kind: how many network outputs parameterise it
(`param_size`), which distribution those outputs define (`distribution`, used for
q and for a conditional prior), its fixed prior, how a label becomes a value and
a mask (`observation`), what the plug-in estimator feeds the networks
(`mean_value`), what children see in `encode` (`point_value`), and, for
discrete families, a reparameterised relaxed sample with its KL estimate.
Adding a family touches only its own module and the table below.
"""

from tfstructvae.families.bernoulli import BernoulliFamily
from tfstructvae.families.categorical import CategoricalFamily
from tfstructvae.families.normal import NormalFamily

FAMILIES = {f.name: f for f in (CategoricalFamily, NormalFamily, BernoulliFamily)}


def family_of(node):
    """The family object for a node spec of graph.py."""
    return FAMILIES[node.family]


__all__ = ["BernoulliFamily", "CategoricalFamily", "FAMILIES", "NormalFamily", "family_of"]
