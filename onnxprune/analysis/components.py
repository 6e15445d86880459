"""Components: a partition of the graph's nodes (encoder/decoder, perception/dynamics/policy...)
found from name scopes, a user map (TOML), or boundary tensors; and the flows between them."""

from __future__ import annotations

import fnmatch
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx_graphsurgeon as gs

from ..errors import UsageError, warn
from .size import is_param

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POLICIES = ("own", "freeze", "couple")
MAX_AUTO_COMPONENTS = 32

# the name prefix of a flow adapter: an identity Gather where a tensor crosses into another
# component (rewrite/flows.py inserts them; they compute nothing)
ADAPTER = "onnxprune_flow"


@dataclass(frozen=True)
class Components:
    """Which component every node belongs to, and how flows between them are treated."""

    names: tuple[str, ...]
    of_node: dict[str, str]
    source: str  # "none" | "scopes" | "map"
    depth: int | None = None
    default_policy: str = "own"
    flow_policy: dict[str, str] = field(default_factory=dict)  # tensor name -> policy

    def policy(self, tensor: str) -> str:
        return self.flow_policy.get(tensor, self.default_policy)


@dataclass(frozen=True)
class Flow:
    """A tensor produced in one component and read in others."""

    tensor: str
    src: str
    dst: tuple[str, ...]
    consumers: tuple[str, ...]  # reading nodes outside ``src``
    policy: str


def single(graph: gs.Graph, name: str = "model") -> Components:
    return Components((name,), {n.name: name for n in graph.nodes}, "none")


# -- name scopes -------------------------------------------------------------------------------
def node_scope(node: gs.Node) -> list[str]:
    """Scope path of a node: torch ``/encoder/encoder.0/Conv`` or TF ``model/encoder/dense/MatMul``;
    for scope-less names (torch's dynamo exporter), the dotted name of its first weight."""
    parts = [p for p in node.name.split("/") if p][:-1]
    if parts:
        return parts
    for t in node.inputs:
        if isinstance(t, gs.Constant) and "." in t.name:
            return t.name.split(".")[:-1]
    return []


def from_scopes(graph: gs.Graph, depth: int | None = None, policy: str = "own") -> Components:
    scopes = {n.name: node_scope(n) for n in graph.nodes}
    scoped = [s for s in scopes.values() if s]
    root = _common_prefix(scoped) if len(scoped) > 1 else []
    trimmed = {k: (s[len(root):] if s[:len(root)] == root else s) for k, s in scopes.items()}
    max_depth = max((len(s) for s in trimmed.values()), default=0)
    if depth is not None and depth < 1:
        raise UsageError(f"scope depth must be >= 1, got {depth}")
    if depth is not None and depth > max_depth:
        warn(f"scope depth {depth} is beyond the model's deepest name scope ({max_depth}); "
             f"using {max_depth}")
        depth = max(max_depth, 1)
    if depth is None:
        depth = 1
        while depth < max_depth and _count(trimmed, depth) < 2:
            depth += 1
        if _count(trimmed, depth) > MAX_AUTO_COMPONENTS:
            depth = 1
    assigned = {k: "/".join(s[:depth]) for k, s in trimmed.items() if s}
    assigned = _dissolve_weightless(graph, assigned)
    if not assigned:
        return single(graph)
    of_node = _fill_unassigned(graph, assigned)
    return Components(_ordered(graph, of_node), of_node, "scopes", depth, policy)


def _dissolve_weightless(graph: gs.Graph, assigned: dict[str, str]) -> dict[str, str]:
    """Scopes without weights (pools, upsampling, activations modules) are plumbing: their
    nodes go with their consumers instead of forming components of their own."""
    weighted = {
        assigned[n.name] for n in graph.nodes
        if n.name in assigned and any(is_param(t) for t in n.inputs)
    }
    return {k: v for k, v in assigned.items() if v in weighted}


def _count(trimmed: dict[str, list[str]], depth: int) -> int:
    return len({tuple(s[:depth]) for s in trimmed.values() if s})


def _common_prefix(paths: list[list[str]]) -> list[str]:
    prefix = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(prefix), len(p)) and prefix[n] == p[n]:
            n += 1
        prefix = prefix[:n]
    # never swallow a whole path: keep at least one level to name components by
    shortest = min(len(p) for p in paths)
    return prefix[: max(0, min(len(prefix), shortest - 1))]


def _fill_unassigned(graph: gs.Graph, assigned: dict[str, str]) -> dict[str, str]:
    """Nodes without a component join their consumer's (shape plumbing goes with its
    consumer), else their producer's, else 'other'."""
    of_node = dict(assigned)
    for node in reversed(graph.nodes):
        if node.name in of_node:
            continue
        for out in node.outputs:
            comp = next((of_node[c.name] for c in out.outputs if c.name in of_node), None)
            if comp:
                of_node[node.name] = comp
                break
    for node in graph.nodes:
        if node.name in of_node:
            continue
        comp = next((of_node[t.inputs[0].name] for t in node.inputs
                     if t.inputs and t.inputs[0].name in of_node), None)
        of_node[node.name] = comp or "other"
    return of_node


def _ordered(graph: gs.Graph, of_node: dict[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(of_node[n.name] for n in graph.nodes))


# -- user map ------------------------------------------------------------------------------------
def from_map(graph: gs.Graph, path: str | Path) -> Components:
    """A TOML map::

        default_policy = "own"          # own | freeze | couple
        boundaries = ["z"]              # optional: split the graph at these tensors
        [components.encoder]
        nodes = ["/encoder/*"]          # node-name globs
        [flows]
        "z" = "couple"                  # per-tensor policy
    """
    try:
        spec = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--components {path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--components {path}: not valid TOML ({err})") from None
    policy = spec.get("default_policy", "own")
    flows = {str(k): str(v) for k, v in spec.get("flows", {}).items()}
    for value in [policy, *flows.values()]:
        if value not in POLICIES:
            raise UsageError(f"{path}: flow policy {value!r} is not one of {', '.join(POLICIES)}")
    assigned: dict[str, str] = {}
    for name, entry in spec.get("components", {}).items():
        globs = entry if isinstance(entry, list) else entry.get("nodes", [])
        for node in graph.nodes:
            if any(fnmatch.fnmatchcase(node.name, g) for g in globs):
                if node.name in assigned and assigned[node.name] != name:
                    raise UsageError(
                        f"{path}: node {node.name} matches components {assigned[node.name]} "
                        f"and {name}; make the globs disjoint"
                    )
                assigned[node.name] = name
    boundaries = set(spec.get("boundaries", []))
    known = {t for t in graph.tensors()}
    missing = sorted(boundaries - known)
    if missing:
        raise UsageError(f"{path}: boundary tensor(s) not in the graph: {', '.join(missing)}")
    if boundaries:
        assigned = _split_at(graph, boundaries, assigned)
    if not assigned:
        raise UsageError(f"{path}: no node matched any component")
    of_node = _fill_unassigned(graph, assigned)
    return Components(_ordered(graph, of_node), of_node, "map", None, policy, flows)


def _split_at(graph: gs.Graph, boundaries: set[str], assigned: dict[str, str]) -> dict[str, str]:
    """Regions of nodes connected without crossing a boundary tensor; each region takes the
    name most of its named nodes have, else ``partK``."""
    parent = {n.name: n.name for n in graph.nodes}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for tensor in graph.tensors().values():
        if tensor.name in boundaries or isinstance(tensor, gs.Constant):
            continue
        users = [n.name for n in list(tensor.inputs) + list(tensor.outputs)]
        for other in users[1:]:
            parent[find(other)] = find(users[0])
    regions: dict[str, list[str]] = {}
    for node in graph.nodes:
        regions.setdefault(find(node.name), []).append(node.name)
    out = dict(assigned)
    k = 0
    for members in regions.values():
        names = Counter(assigned[m] for m in members if m in assigned)
        if names:
            label = names.most_common(1)[0][0]
        else:
            label, k = f"part{k}", k + 1
        for m in members:
            out.setdefault(m, label)
    return out


def find_components(graph: gs.Graph, spec: str = "auto", depth: int | None = None,
                    policy: str = "own") -> Components:
    """``spec``: 'auto' (name scopes), 'none' (one component) or a TOML map's path."""
    if policy not in POLICIES:
        raise UsageError(f"--flow-policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if spec == "none":
        return Components(*_single_fields(graph), default_policy=policy)
    if spec == "auto":
        return from_scopes(graph, depth, policy)
    return from_map(graph, spec)


def _single_fields(graph: gs.Graph):
    s = single(graph)
    return s.names, s.of_node, s.source


def find_flows(graph: gs.Graph, components: Components) -> list[Flow]:
    flows = []
    for node in graph.nodes:
        src = components.of_node[node.name]
        for t in node.outputs:
            readers = [c for c in t.outputs if components.of_node.get(c.name, src) != src]
            if readers:
                dst = tuple(dict.fromkeys(components.of_node[c.name] for c in readers))
                flows.append(Flow(t.name, src, dst, tuple(c.name for c in readers),
                                  components.policy(t.name)))
    return flows
