"""Declarative latent graphs for the recognition model q and the prior p.

A graph lists named latent nodes in the order q samples them. Each node names
its parents in q (besides the observation x, which every node sees) and,
optionally, its parents in p:

    q(nodes | x) = prod_n q(n | x, parents(n))
    p(x, nodes)  = prod_n p(n | prior_parents(n)) * p(x | all nodes)

A node is *free* (never observed) or *labelled* (supervised: observed on the
examples that carry a value for it, and then pinned in q and p). The families:

    Categorical(name, K)   q = OneHotCategorical(logits), p = Cat(1/K)       labels: int, -1 = missing
    Normal(name, D)        q = diagonal Normal,           p = N(0, I)        labels: float (B, D), NaN = missing
    Bernoulli(name, D)     q = D independent Bernoulli,   p = Bernoulli(0.5) labels: int (B, D) in {0, 1}, -1 = missing

A node with `prior_parents` gets a conditional prior whose parameters are a
learned linear function of those nodes (e.g. a mean style per digit).

Discrete nodes choose how the unlabelled objective handles them (`estimator`):
`enumerate` (the exact sum over values; several enumerated nodes share one
product space), `plugin` (the probability vector is fed to the networks) or
`relaxed` (a Concrete / Gumbel-softmax sample). Normal nodes are always sampled
by reparameterisation. `None` takes the objective's default where it applies to
the family, else the family's own default.

The running example (Siddharth et al. 2016) is

    LatentGraph(Categorical("y", 10, labelled=True),
                Normal("z", 2, parents=("y",)))

i.e. q(y|x) q(z|x,y) with p(y) = Cat(1/K), p(z) = N(0, I). An auxiliary latent in the
encoder (Maaloe et al. 2016) is one more Normal node that the classifier reads:

    LatentGraph(Normal("a", 16),
                Categorical("y", 10, labelled=True, parents=("a",)),
                Normal("z", 16, parents=("a", "y")))

q(a|x) q(y|x,a) q(z|x,a,y), with p(a) = N(0, I) and a read by p(x|a,y,z) (the skip form, SDGM);
with `Normal("a", 16, auxiliary=True)` the decoder p(x|y,z) does not read a and its prior is
p(a|x,y,z), a learned network (ADGM). q(y|x,a) still reads x alone through a (`reads_x_alone`),
so the consistency terms hold it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


NETWORKS = ("mlp", "conv")     # how a node's q reads the image (networks.x_body)


class GraphError(ValueError):
    """A latent graph that cannot be built."""


@dataclass(frozen=True)
class _Node:
    name: str
    size: int
    parents: tuple[str, ...] = ()          # parents in q (x is always a parent)
    labelled: bool = False                 # supervised: observed where an example carries a value
    estimator: str | None = None           # discrete nodes: enumerate | plugin | relaxed (None: default)
    alpha: float | None = None             # weight of log q(node = value) per labelled example (None: objective.alpha)
    # This node's share of the consistency and augmentation terms (a factor on its KL there);
    # None: 1 where objective.consistency_nodes holds the node, else not held. A value > 0 holds
    # a labelled node that depends on x alone whatever consistency_nodes says; 0 never holds it.
    consistency: float | None = None
    prior_parents: tuple[str, ...] = ()    # parents in p (conditional prior); () = fixed prior
    # How q(node | x, ...) reads the image: "mlp" or "conv" (networks.x_body); None: the model's
    # classifier_network for labelled categorical nodes without parents, its network for the others.
    network: str | None = None

    family: ClassVar[str] = ""
    estimators: ClassVar[tuple[str, ...]] = ()
    default_estimator: ClassVar[str] = ""
    min_size: ClassVar[int] = 1

    def __post_init__(self):
        # Accept lists (from JSON) for the tuple fields so that specs compare equal after a round trip.
        object.__setattr__(self, "parents", tuple(self.parents))
        object.__setattr__(self, "prior_parents", tuple(self.prior_parents))

    @property
    def discrete(self) -> bool:
        return self.family != "normal"

    def to_config(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(family=self.family, parents=list(self.parents), prior_parents=list(self.prior_parents))
        return d


@dataclass(frozen=True)
class Categorical(_Node):
    """A discrete node with `size` values."""
    family: ClassVar[str] = "categorical"
    estimators: ClassVar[tuple[str, ...]] = ("enumerate", "plugin", "relaxed")
    default_estimator: ClassVar[str] = "plugin"
    min_size: ClassVar[int] = 2


@dataclass(frozen=True)
class Normal(_Node):
    """A continuous node of dimension `size`.

    `scale_floor` (None: `model.scale_floor`) bounds q's scale from below. A labelled node wants
    one on the scale of its labels' noise: log q(value | x) grows without bound as the scale
    shrinks, and a supervised term that can buy nats by shrinking it makes one badly predicted
    label cost millions (docs/results.md, the first morpho run)."""
    family: ClassVar[str] = "normal"
    estimators: ClassVar[tuple[str, ...]] = ("sample",)
    default_estimator: ClassVar[str] = "sample"
    scale_floor: float | None = None
    # An auxiliary latent (Maaloe et al. 2016's ADGM): p(x | ...) does not read it, and its prior
    # p(node | x, every non-auxiliary node) is a learned network, so q may use it (as the parent
    # of a classifier, q(y | x, a)) while the generative model only has to explain it.
    auxiliary: bool = False


@dataclass(frozen=True)
class Bernoulli(_Node):
    """`size` binary attributes."""
    family: ClassVar[str] = "bernoulli"
    # Enumerating D binary attributes would take 2^D rows; the relaxed or plug-in estimators scale.
    estimators: ClassVar[tuple[str, ...]] = ("plugin", "relaxed")
    default_estimator: ClassVar[str] = "relaxed"


FAMILIES = {cls.family: cls for cls in (Categorical, Normal, Bernoulli)}
Node = Categorical | Normal | Bernoulli


def node_from_config(spec: dict[str, Any]) -> Node:
    spec = dict(spec)
    family = spec.pop("family", None)
    if family not in FAMILIES:
        raise GraphError(f"node {spec.get('name', '?')!r}: unknown family {family!r}; "
                         f"expected one of {sorted(FAMILIES)}")
    fields = {f.name for f in dataclasses.fields(FAMILIES[family])}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise GraphError(f"node {spec.get('name', '?')!r}: unknown fields {unknown}; expected some of {sorted(fields)}")
    try:
        return FAMILIES[family](**spec)
    except TypeError as e:
        raise GraphError(f"node {spec.get('name', '?')!r}: {e}") from None


class LatentGraph:
    """An ordered, validated collection of latent nodes."""

    def __init__(self, *nodes: Node):
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self._validate()

    def _validate(self) -> None:
        if not self.nodes:
            raise GraphError("a latent graph needs at least one node")
        seen: set[str] = set()
        for node in self.nodes:
            if not isinstance(node, tuple(FAMILIES.values())):
                raise GraphError(f"graph nodes must be Categorical, Normal or Bernoulli, got {node!r}")
            if not isinstance(node.name, str) or not node.name.isidentifier():
                raise GraphError(f"node name {node.name!r} must be a Python identifier")
            if node.name in seen:
                raise GraphError(f"duplicate node name {node.name!r}")
            if not isinstance(node.size, int) or node.size < node.min_size:
                raise GraphError(f"node {node.name!r} has impossible size {node.size} "
                                 f"(a {node.family} node needs size >= {node.min_size})")
            for kind, parents in (("parent", node.parents), ("prior parent", node.prior_parents)):
                for parent in parents:
                    if parent not in seen:
                        raise GraphError(
                            f"node {node.name!r} names {kind} {parent!r}, which is not an earlier node "
                            f"(nodes so far: {sorted(seen)}); list parents before children")
                if len(set(parents)) != len(parents):
                    raise GraphError(f"node {node.name!r} names a {kind} twice: {parents}")
            if node.estimator is not None and node.estimator not in node.estimators:
                raise GraphError(f"node {node.name!r}: estimator {node.estimator!r} does not apply to a "
                                 f"{node.family} node; expected one of {node.estimators}")
            if node.network is not None and node.network not in NETWORKS:
                raise GraphError(f"node {node.name!r}: unknown network {node.network!r}; expected one of {NETWORKS}")
            if getattr(node, "auxiliary", False) and (node.labelled or node.prior_parents):
                raise GraphError(f"node {node.name!r}: an auxiliary node is free and its prior reads x and "
                                 "every other node: drop labelled and prior_parents")
            floor = getattr(node, "scale_floor", None)
            if floor is not None and not floor > 0:
                raise GraphError(f"node {node.name!r}: scale_floor must be > 0, got {floor}")
            if node.alpha is not None and (node.alpha < 0 or not node.labelled):
                raise GraphError(f"node {node.name!r}: alpha={node.alpha} needs a labelled node and alpha >= 0")
            seen.add(node.name)
        if not self.decoded_nodes:
            raise GraphError("every node is auxiliary: p(x | ...) needs at least one node to read")
        for node in self.nodes:
            if node.consistency is not None and (node.consistency < 0 or (
                    node.consistency > 0 and (not node.labelled or not self.reads_x_alone(node.name)))):
                raise GraphError(f"node {node.name!r}: consistency={node.consistency} needs a labelled node "
                                 "that depends on x alone (no parents, or free Normal parents that do) "
                                 "and a weight >= 0")

    # ------------------------------------------------------------ queries

    @property
    def labelled_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.labelled]

    @property
    def classifier_nodes(self) -> list[Categorical]:
        """Labelled categorical nodes: the classifiers q(node | x, ...) that get accuracy and regularisers."""
        return [n for n in self.nodes if n.labelled and isinstance(n, Categorical)]

    @property
    def label(self) -> Categorical:
        """The first labelled categorical node (the class `y` of M2)."""
        if not self.classifier_nodes:
            raise GraphError("this graph has no labelled categorical node")
        return self.classifier_nodes[0]

    @property
    def decoded_nodes(self) -> list[Node]:
        """The nodes p(x | ...) reads: all but the auxiliary ones."""
        return [n for n in self.nodes if not getattr(n, "auxiliary", False)]

    @property
    def auxiliary_nodes(self) -> list[Normal]:
        return [n for n in self.nodes if getattr(n, "auxiliary", False)]

    def reads_x_alone(self, name: str) -> bool:
        """Whether q(name | x, parents) is a function of x and noise alone: the node has no
        parents, or only free (unlabelled) Normal parents that read x alone in turn. An auxiliary
        latent a ~ q(a|x) feeding the classifier q(y|x, a) (Maaloe et al. 2016's ADGM / SDGM) is
        such a parent. The consistency terms, which perturb x, recompute such a node's q with
        those parents drawn again from q(. | perturbed x) (StructuredVAE.q_from_x)."""
        return all(isinstance(self[p], Normal) and not self[p].labelled and self.reads_x_alone(p)
                   for p in self[name].parents)

    @property
    def continuous(self) -> list[Normal]:
        return [n for n in self.nodes if isinstance(n, Normal)]

    def __getitem__(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in this graph (nodes: {[n.name for n in self.nodes]})")

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __eq__(self, other):
        return isinstance(other, LatentGraph) and self.nodes == other.nodes

    def __repr__(self) -> str:
        return f"LatentGraph{self.nodes!r}"

    # ----------------------------------------------------- configuration

    def to_config(self) -> tuple[dict[str, Any], ...]:
        """A JSON-ready description: one dict per node, with its `family`."""
        return tuple(n.to_config() for n in self.nodes)

    @classmethod
    def from_config(cls, specs) -> "LatentGraph":
        return cls(*(node_from_config(s) for s in specs))


def digit_style_graph(num_classes: int, style_dim: int) -> LatentGraph:
    """q(y|x) q(z|x,y): the paper's MNIST/SVHN graph."""
    return LatentGraph(Categorical("y", num_classes, labelled=True),
                       Normal("z", style_dim, parents=("y",)))
