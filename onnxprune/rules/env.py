"""The environment op rules work in while channels are propagated through the graph."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import Dim, const_value, shape_of
from ..ir.quant import dequantized_weight, per_channel_params
from .atoms import AtomTable, Claim, GatePoint


class Env:
    """Tracked channel axes per tensor, plus the claims, gates and freezes rules record."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.opset = int(graph.opset)
        self.atoms = AtomTable()
        self.slots: dict[str, dict[int, np.ndarray]] = {}
        self.claims: list[Claim] = []
        self.gates: list[GatePoint] = []
        # (DequantizeLinear, data axis) -> the nodes that claimed its weight's slices
        self.through: dict[tuple[str, int], set[str]] = {}
        # channels folded into a symbolic axis, fastest-varying ([b, H, s, d] -> [H*b, s, d]):
        # tensor -> {axis: atoms}; readers that carry them on record themselves in fold_readers,
        # any other reader freezes them (analysis.channels)
        self.folds: dict[str, dict[int, np.ndarray]] = {}
        self.fold_readers: set[tuple[str, str]] = set()  # (node, tensor)
        # tensors of per-channel values computed from constants (rules/constant_chain.py):
        # (tensor, axis, atoms), each reader checked after propagation
        self.chains: list[tuple[gs.Tensor, int, np.ndarray]] = []

    # -- reading the graph -------------------------------------------------------------
    def shape(self, tensor: gs.Tensor | None) -> list[Dim] | None:
        return None if tensor is None else shape_of(tensor)

    def rank(self, tensor: gs.Tensor) -> int | None:
        s = self.shape(tensor)
        return None if s is None else len(s)

    def is_output(self, tensor: gs.Tensor) -> bool:
        return any(o is tensor for o in self.graph.outputs)

    def used(self, tensor: gs.Tensor) -> bool:
        """Read by a node or a graph output."""
        return bool(tensor.outputs) or self.is_output(tensor)

    def const(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        return const_value(tensor)

    def dim(self, tensor: gs.Tensor, axis: int) -> Dim:
        s = self.shape(tensor)
        if s is None or not -len(s) <= axis < len(s):
            return None
        return s[axis]

    # -- tracked channels --------------------------------------------------------------
    def tracked(self, tensor: gs.Tensor | None) -> dict[int, np.ndarray]:
        if tensor is None:
            return {}
        return self.slots.get(tensor.name, {})

    def get(self, tensor: gs.Tensor | None, axis: int) -> np.ndarray | None:
        return self.tracked(tensor).get(axis)

    def set(self, tensor: gs.Tensor, axis: int, atoms: np.ndarray) -> None:
        atoms = np.asarray(atoms, dtype=np.int64)
        slot = self.slots.setdefault(tensor.name, {})
        if axis in slot:
            # A second producer mapping onto the same slot joins the two (e.g. shared outputs).
            self.atoms.union(slot[axis], atoms)
            return
        slot[axis] = atoms

    def fresh(self, n: int) -> np.ndarray:
        return self.atoms.fresh(n)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        self.atoms.union(a, b)

    def freeze(self, atoms: np.ndarray, reason: str) -> None:
        self.atoms.freeze(atoms, reason)

    def link(self, kept: np.ndarray, needs: np.ndarray) -> None:
        self.atoms.link(kept, needs)

    def freeze_tensor(self, tensor: gs.Tensor | None, reason: str) -> None:
        for atoms in self.tracked(tensor).values():
            self.freeze(atoms, reason)

    def freeze_inputs(self, node: gs.Node, reason: str) -> None:
        for t in node.inputs:
            self.freeze_tensor(t, reason)

    # -- parameters and gates -------------------------------------------------------------
    def claim(self, node: gs.Node, param: gs.Tensor, axis: int, atoms: np.ndarray) -> None:
        """Declare that slice i of ``param`` on ``axis`` belongs to ``atoms[i]``."""
        self.claims.append(Claim(node.name, param.name, axis, np.asarray(atoms, dtype=np.int64)))

    def claim_weight(self, node: gs.Node, weight: gs.Tensor, axis: int, atoms: np.ndarray
                     ) -> None:
        """``claim`` for a weight that may be quantized (``ir.quant``): then the slices are
        its integer data's, and its scales and zero points go along when they run on ``axis``
        (per-tensor ones stay). A weight whose scales cannot be sliced freezes the atoms."""
        if isinstance(weight, gs.Constant):
            self.claim(node, weight, axis, atoms)
            return
        dq, data = dequantized_weight(weight)
        extra = per_channel_params(dq, axis, len(data.shape), len(atoms))
        if extra is None:
            self.freeze(atoms, f"{node.op} {node.name}: the scales of quantized weight "
                               f"{data.name} cannot be sliced on axis {axis}")
            return
        self.claim(dq, data, axis, atoms)
        for t in extra:
            self.claim(dq, t, 0, atoms)
        self.through.setdefault((dq.name, axis), set()).add(node.name)

    def gate(self, node: gs.Node, input_index: int, axis: int, atoms: np.ndarray | None = None,
             batched: bool = True, kind: str = "mul") -> None:
        """The oracle multiplies this input's channels on ``axis`` by their gates (``atoms``:
        given for weights, else the input's tracked channels). ``kind="stats"``: the node
        instead weights its statistics over ``axis`` by the gates (normalizations)."""
        atoms = self.get(node.inputs[input_index], axis) if atoms is None else atoms
        if atoms is not None:
            self.gates.append(GatePoint(node.name, input_index, axis, atoms, batched, kind))

    def pass_through(self, node: gs.Node, src: int = 0, dst: int = 0) -> None:
        """Output ``dst`` carries the tracked channels of input ``src`` on the same axes."""
        for axis, atoms in self.tracked(node.inputs[src]).items():
            self.set(node.outputs[dst], axis, atoms)
