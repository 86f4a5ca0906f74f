"""Declarative latent graphs for the recognition model q.

A graph lists named latent nodes in the order q samples them; each node names
its parents in q (besides the observation x, which every node sees):

    q(nodes | x) = prod_n q(n | x, parents(n))
    p(x, nodes)  = prod_n p(n) * p(x | all nodes)         p(n) fixed priors

The running example (Siddharth et al. 2016) is

    LatentGraph(Categorical("digit", 10, labelled=True),
                Normal("style", 2, parents=("digit",)))

i.e. q(y|x) q(z|x,y) with p(y) = Cat(1/K), p(z) = N(0, I). At most one
categorical node can be observed (labelled); it is the one the unlabelled
estimators (`plugin`, `enumerate`) marginalise.
"""

from __future__ import annotations

from dataclasses import dataclass


class GraphError(ValueError):
    """A latent graph that cannot be built."""


@dataclass(frozen=True)
class Categorical:
    """A discrete node with `size` values; q is OneHotCategorical(logits), p uniform."""
    name: str
    size: int
    parents: tuple[str, ...] = ()
    labelled: bool = False


@dataclass(frozen=True)
class Normal:
    """A continuous node of dimension `size`; q is a diagonal Normal, p = N(0, I)."""
    name: str
    size: int
    parents: tuple[str, ...] = ()
    labelled: bool = False


Node = Categorical | Normal


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
            if not isinstance(node, (Categorical, Normal)):
                raise GraphError(f"graph nodes must be Categorical or Normal, got {node!r}")
            if node.name in seen:
                raise GraphError(f"duplicate node name {node.name!r}")
            if node.size < 1 or (isinstance(node, Categorical) and node.size < 2):
                raise GraphError(f"node {node.name!r} has impossible size {node.size}")
            for parent in node.parents:
                if parent not in seen:
                    raise GraphError(
                        f"node {node.name!r} names parent {parent!r}, which is not an earlier node "
                        f"(nodes so far: {sorted(seen)}); list parents before children")
            if node.labelled and not isinstance(node, Categorical):
                raise GraphError(f"only Categorical nodes can be labelled; {node.name!r} is Normal")
            seen.add(node.name)
        if len(self.labelled_nodes) > 1:
            raise GraphError("at most one node can be labelled, got "
                             f"{[n.name for n in self.labelled_nodes]}")
        unlabelled_discrete = [n.name for n in self.nodes
                               if isinstance(n, Categorical) and not n.labelled]
        if unlabelled_discrete:
            raise GraphError(f"categorical nodes must be labelled (observable); {unlabelled_discrete} "
                             "are not: make them Normal or label them")

    @property
    def labelled_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.labelled]

    @property
    def label(self) -> Categorical:
        """The observable categorical node (the class `y`)."""
        if not self.labelled_nodes:
            raise GraphError("this graph has no labelled node")
        return self.labelled_nodes[0]

    @property
    def continuous(self) -> list[Normal]:
        return [n for n in self.nodes if isinstance(n, Normal)]

    def __iter__(self):
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"LatentGraph{self.nodes!r}"


def digit_style_graph(num_classes: int, style_dim: int) -> LatentGraph:
    """q(y|x) q(z|x,y): the paper's MNIST/SVHN graph."""
    return LatentGraph(Categorical("y", num_classes, labelled=True),
                       Normal("z", style_dim, parents=("y",)))
