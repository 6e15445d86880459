"""The channel-dependency analysis: run every node's op rule, then solve atoms into groups."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_graphsurgeon as gs
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import warn
from ..rules import RuleRegistry, default_registry
from ..rules.constant_chain import unfollowed
from ..rules.env import Env
from .cache import cache_pairs, join_cache, open_cache
from .model import ChannelAnalysis, Gate, Group, Member, ParamSlice
from .size import node_macs


def analyze_channels(
    graph: gs.Graph,
    registry: RuleRegistry | None = None,
    exclude: Iterable[str] = (),
    freeze: Mapping[str, str] | None = None,
    component_of: Mapping[str, str] | None = None,
    kv_cache: bool = False,
) -> ChannelAnalysis:
    """Find the coupled channel groups of ``graph`` (which is not modified).

    ``freeze`` maps tensor names to a reason their channels must stay; ``component_of`` maps
    node names to components, to label each group with the component(s) it lives in;
    ``kv_cache`` lets heads leave a decoder's paired cache inputs and outputs (analysis.cache).
    """
    registry = registry or default_registry()
    env = Env(graph)
    pairs = cache_pairs(graph) if kv_cache else []
    open_cache(env, graph, pairs)
    for node in graph.nodes:
        registry.lookup(node.op, node.domain or "").propagate(node, env)
    join_cache(env, graph, pairs)
    _freeze_stray_folds(graph, env)
    unfollowed(env, env.chains)
    tensors = graph.tensors()
    for name, reason in (freeze or {}).items():
        if name in tensors:
            env.freeze_tensor(tensors[name], reason)
    _freeze_boundaries(graph, env, {(p.present, p.axis) for p in pairs})
    _freeze_inconsistent(graph, env)
    _freeze_excluded(graph, env, list(exclude))
    param_atoms = _join_shared_params(graph, env)
    labels, frozen, reasons = env.atoms.solve()
    return _build(graph, env, labels, frozen, reasons, param_atoms, component_of or {})


def _freeze_boundaries(graph: gs.Graph, env: Env, open_axes: set[tuple[str, int]]) -> None:
    for t in graph.outputs:
        for axis, atoms in env.tracked(t).items():
            if (t.name, axis) not in open_axes:
                env.freeze(atoms, f"reaches graph output {t.name}")
    for node in graph.nodes:
        for sub in node.subgraphs():
            for name in _outer_refs(sub):
                if name in env.slots:
                    env.freeze_tensor(graph.tensors()[name], f"used inside subgraph of {node.name}")


def _freeze_stray_folds(graph: gs.Graph, env: Env) -> None:
    """Channels folded into a symbolic axis are carried only by readers that said so (a
    Transpose, the Reshape that unfolds them); any other reader, or a graph output, keeps them."""
    tensors = graph.tensors()
    outputs = {t.name for t in graph.outputs}
    for name, axes in env.folds.items():
        t = tensors.get(name)
        stray = [n.name or n.op for n in (t.outputs if t is not None else [])
                 if (n.name, name) not in env.fold_readers]
        if stray or name in outputs:
            where = f"read by {stray[0]}" if stray else "a graph output"
            for atoms in axes.values():
                env.freeze(atoms, f"channels folded into a symbolic axis of {name} are {where}")


def _freeze_inconsistent(graph: gs.Graph, env: Env) -> None:
    """A safety net: a channel map whose length disagrees with the tensor's shape is frozen."""
    tensors = graph.tensors()
    for name, axes in env.slots.items():
        shape = env.shape(tensors[name]) if name in tensors else None
        for axis, atoms in axes.items():
            dim = shape[axis] if shape is not None and axis < len(shape) else None
            if isinstance(dim, int) and dim != len(atoms):
                env.freeze(atoms, f"tensor {name}: channel map of axis {axis} disagrees with its shape")


def _outer_refs(sub: gs.Graph) -> set[str]:
    produced = {o.name for n in sub.nodes for o in n.outputs} | {t.name for t in sub.inputs}
    refs = {t.name for n in sub.nodes for t in n.inputs if t.name and t.name not in produced}
    for n in sub.nodes:
        for inner in n.subgraphs():
            refs |= _outer_refs(inner)
    return refs


def _freeze_excluded(graph: gs.Graph, env: Env, patterns: list[str]) -> None:
    if not patterns:
        return
    matched: set[str] = set()
    for node in graph.nodes:
        hits = [p for p in patterns if fnmatch.fnmatchcase(node.name, p)]
        matched.update(hits)
        if hits:
            reason = f"node {node.name} is excluded"
            for t in list(node.inputs) + list(node.outputs):
                env.freeze_tensor(t, reason)
            for c in env.claims:
                if c.node == node.name:
                    env.freeze(c.atoms, reason)
    for p in patterns:
        if p not in matched:
            warn(f"exclude {p!r} matches no node name (names look like {graph.nodes[0].name!r}"
                 "); nothing was excluded by it")


def _join_shared_params(graph: gs.Graph, env: Env) -> dict[tuple[str, int], np.ndarray]:
    """Claims on one parameter axis are joined (shared weights); unclaimed users freeze."""
    by_key: dict[tuple[str, int], np.ndarray] = {}
    claimers: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for c in env.claims:
        key = (c.param, c.axis)
        if key in by_key:
            env.union(by_key[key], c.atoms)
        else:
            by_key[key] = c.atoms
        claimers[c.param].add((c.node, c.axis))
    tensors = graph.tensors()
    out_names = {t.name for t in graph.outputs}
    for (param, axis), atoms in by_key.items():
        tensor = tensors[param]
        users = {n.name for n in tensor.outputs}
        claimed_by = {node for node, ax in claimers[param] if ax == axis}
        if users - claimed_by or param in out_names:
            env.freeze(atoms, f"parameter {param} is also used where it cannot be sliced")
    # a quantized weight: every reader of its DequantizeLinear must have claimed the slices
    nodes = {n.name: n for n in graph.nodes}
    for (dq, axis), readers in env.through.items():
        node = nodes[dq]
        out = node.outputs[0]
        if {n.name for n in out.outputs} - readers or out.name in out_names:
            env.freeze(by_key[(node.inputs[0].name, axis)],
                       f"quantized weight {node.inputs[0].name} is also used where it cannot "
                       "be sliced")
    return by_key


def _build(graph, env: Env, labels, frozen, reasons, param_atoms, component_of) -> ChannelAnalysis:
    slots = {(t, ax): labels[a] for t, axes in env.slots.items() for ax, a in axes.items()}
    params = {key: labels[a] for key, a in param_atoms.items()}
    n_units = int(labels.max()) + 1 if labels.size else 0
    pairs = _unit_links(env, labels)
    _pin_linked(pairs, frozen, reasons)

    # A unit's signature: every slot and parameter axis it appears on. Equal signature = one group.
    keys = list(slots) + [("param", k) for k in params]
    pairs_u, pairs_k = [], []
    for i, key in enumerate(keys):
        units = slots[key] if i < len(slots) else params[key[1]]
        u = np.unique(units)
        pairs_u.append(u)
        pairs_k.append(np.full(u.size, i))
    unit_group = np.full(n_units, -1, dtype=np.int64)
    if not keys:
        return ChannelAnalysis(n_units, unit_group, frozen, tuple(reasons), slots, params, (), ())
    all_u, all_k = np.concatenate(pairs_u), np.concatenate(pairs_k)
    order = np.lexsort((all_k, all_u))
    all_u, all_k = all_u[order], all_k[order]
    starts = [0, *(np.flatnonzero(np.diff(all_u)) + 1).tolist(), all_u.size] if all_u.size else [0]
    units_list, keys_list = all_u.tolist(), all_k.tolist()
    signature_of: dict[tuple, list[int]] = {}
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        if keys_list[lo] >= len(slots):
            continue  # only on parameters (a frozen leftover): not a channel of any tensor
        signature_of.setdefault(tuple(keys_list[lo:hi]), []).append(units_list[lo])

    macs = {n.name: node_macs(n) for n in graph.nodes}
    tensors = graph.tensors()
    groups = []
    # Groups in graph order: by the first tensor they appear on.
    for gid, (sig, units) in enumerate(sorted(signature_of.items(), key=lambda kv: kv[0])):
        first_units, first_pos = np.unique(slots[keys[sig[0]]], return_index=True)
        pos = dict(zip(first_units.tolist(), first_pos.tolist(), strict=True))
        units = np.array(sorted(units, key=pos.__getitem__), dtype=np.int64)
        unit_group[units] = gid
        groups.append(
            _make_group(gid, units, sig, keys, slots, params, frozen, reasons, macs, tensors,
                        component_of)
        )
    gates = tuple(
        Gate(g.node, g.input_index, g.axis, labels[g.atoms], g.batched, g.kind) for g in env.gates
    )
    folds = {(t, ax): labels[a] for t, axes in env.folds.items() for ax, a in axes.items()}
    return ChannelAnalysis(
        n_units, unit_group, frozen, tuple(reasons), slots, params, gates, tuple(groups), macs,
        pairs, folds,
    )


def _unit_links(env: Env, labels: np.ndarray) -> np.ndarray:
    kept_if, needs = env.atoms.links()
    if not kept_if.size:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.stack([labels[kept_if], labels[needs]], axis=1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)


def _pin_linked(pairs: np.ndarray, frozen: np.ndarray, reasons: list) -> None:
    """Cut only where every side agrees: units linked (copies and sources) to a frozen unit
    are frozen too."""
    if not pairs.size or not frozen.any():
        return
    n = frozen.size
    adj = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(adj, directed=False)
    for comp in np.unique(label[frozen]):
        members = np.flatnonzero(label == comp)
        source = members[frozen[members]][0]
        for u in members[~frozen[members]]:
            frozen[u] = True
            reasons[u] = f"linked to frozen channels ({reasons[source]})"


def _make_group(gid, units, sig, keys, slots, params, frozen, reasons, macs, tensors,
                component_of) -> Group:
    unit_set = np.zeros(len(frozen), dtype=bool)
    unit_set[units] = True
    members, pslices = [], []
    n_params = 0
    node_fraction: dict[str, float] = {}
    layers: dict[str, None] = {}
    for k in sig:
        key = keys[k]
        if key[0] != "param":
            arr = slots[key]
            members.append(Member(key[0], key[1], int(unit_set[arr].sum()), int(arr.size)))
            continue
        pname, axis = key[1]
        arr = params[key[1]]
        count = int(unit_set[arr].sum())
        shape = tensors[pname].values.shape
        per_slice = int(np.prod(shape)) // shape[axis] if shape[axis] else 0
        n_params += count * per_slice
        pslices.append(ParamSlice(pname, axis, count, int(arr.size)))
        for user in _readers(tensors[pname]):
            layers.setdefault(user.name, None)
            f = count / arr.size
            node_fraction[user.name] = 1 - (1 - node_fraction.get(user.name, 0.0)) * (1 - f)
    group_macs = int(sum(macs.get(n, 0) * f for n, f in node_fraction.items()))
    n_frozen = int(frozen[units].sum())
    reason = next((reasons[u] for u in units if frozen[u]), None)
    return Group(
        id=gid, units=units, members=tuple(members), params=tuple(pslices),
        frozen=n_frozen == units.size, reason=reason, frozen_units=n_frozen,
        n_params=n_params, macs=group_macs, layers=tuple(layers),
        component=_component(layers, members, tensors, component_of),
    )


def _readers(param: gs.Tensor) -> list[gs.Node]:
    """The layers reading a parameter: through the DequantizeLinear of a quantized one."""
    out = []
    for user in param.outputs:
        if user.op == "DequantizeLinear" and user.inputs[0] is not param:
            continue  # a scale or zero point: its weight's entry names the layers
        out.extend(user.outputs[0].outputs if user.op == "DequantizeLinear" else [user])
    return out


def _component(layers, members, tensors, component_of) -> str | None:
    """The component(s) a group lives in: of the layers it slices, else of its tensors."""
    if not component_of:
        return None
    names = [component_of[n] for n in layers if n in component_of]
    if not names:
        for m in members:
            t = tensors.get(m.tensor)
            if t is not None and t.inputs and t.inputs[0].name in component_of:
                names.append(component_of[t.inputs[0].name])
    names = sorted(set(names))
    return "+".join(names) if names else None
