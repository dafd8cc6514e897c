"""What the frontend hands to the builder: the graph plus metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

from frontend.errors import Location
from frontend.ops import Op, Platform

if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True)
class ResolvedImage:
    """A base image as the builder's resolver found it.

    `ref` is the normalised name (e.g. docker.io/library/busybox:latest),
    `digest` the manifest digest ("sha256:..."), `config` the full image
    config JSON (architecture, os, config, rootfs, history).
    """

    ref: str
    digest: str
    config: Mapping


ImageResolver = Callable[[str, Platform], ResolvedImage]


@dataclass(frozen=True)
class NamedContext:
    """A `--build-context NAME=VALUE`, as the builder found it: either an
    image reference to use instead of NAME (`docker-image://REF`; "scratch"
    is the empty image), or a local directory (`image` empty), read like
    the build context through its own .dockerignore (`excludes`)."""

    name: str
    image: str = ""
    excludes: tuple[str, ...] = ()


# Given a stage name or image reference as written, the named context it
# means, or None. The builder normalises (`alpine:latest` is `alpine`).
NamedContextLookup = Callable[[str], "NamedContext | None"]


@dataclass(frozen=True)
class VertexMeta:
    """Never hashed: how a vertex is shown and where it came from."""

    name: str  # e.g. "[build 2/5] RUN make"
    location: Location | None = None
    stage: str = ""


@dataclass(frozen=True)
class HistoryEntry:
    created_by: str
    empty_layer: bool = False
    comment: str = ""


@dataclass(frozen=True)
class Warning:
    rule: str
    message: str
    location: Location | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}[{self.rule}] {self.message}"


@dataclass(frozen=True)
class StageImage:
    """The image a stage produces, apart from its layers.

    `config` is the complete OCI image config JSON *without* rootfs and
    history (the exporter adds those): architecture, os, variant, config
    {Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes,
    StopSignal, Healthcheck, OnBuild, Shell}. `history` holds the base
    image's entries followed by one per instruction; entries with
    empty_layer=False correspond, in order, to the layers the solver adds
    on top of the base image's layers.
    """

    config: Mapping
    history: tuple[HistoryEntry, ...]
    base: ResolvedImage | None


@dataclass(frozen=True)
class Definition:
    """A frozen networkx DiGraph whose nodes are vertex ids with the node
    attribute "op" (an Op); an edge u -> v means v reads u's result.
    `target` is the vertex id of the target stage's final filesystem."""

    graph: nx.DiGraph
    target: str
    image: StageImage
    metadata: Mapping[str, VertexMeta]
    warnings: tuple[Warning, ...] = ()
    unused_build_args: tuple[str, ...] = ()

    def op(self, vertex_id: str) -> Op:
        return self.graph.nodes[vertex_id]["op"]


def build_graph(ops: list[Op]) -> nx.DiGraph:
    """Freeze a list of ops (any order, duplicates merged) into a graph."""
    # Imported here, not with the module: networkx costs ~0.1 s of CPU to
    # import, and every pybuild command imports the frontend (for its error
    # types) while only a build makes a graph.
    import networkx as nx

    graph = nx.DiGraph()
    for op in ops:
        graph.add_node(op.vertex_id, op=op)
    for op in ops:
        for source in op.inputs:
            graph.add_edge(source, op.vertex_id)
    return nx.freeze(graph)
