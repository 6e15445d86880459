"""Conv and ConvTranspose, any ``group`` (depthwise included).

With ``group == 1`` a conv mixes its input channels (a gate point) and creates new output
channels. Depthwise-like groups (one input or one output channel per group) map input block
j to output block j, so a whole group is one unit that follows its input channels. Wider
groups (ResNeXt) lose the same number of channels in every group: the j-th input channel of
every group is one unit, and so is the j-th output channel; ``group`` does not change.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..ir.graph import input_or_none, prod, shape_of, static_dims, weight_shape
from ..ir.quant import is_weight
from .base import OpRule, Rewriter, freeze_all
from .env import Env
from .layers import ConvLayer, ConvTransposeLayer, Layer


class _ConvBase(OpRule):
    transposed = False
    no_macs = None

    def macs(self, node: gs.Node) -> int:
        """Each output position (Conv) or input position (ConvTranspose) takes one weight
        slice: ``Cin/group x kernel`` (or ``Cout/group x kernel``) multiply-accumulates."""
        w = weight_shape(node.inputs[1])
        if w is None:
            return 0
        dims = static_dims(shape_of(node.inputs[0] if self.transposed else node.outputs[0]))
        return 0 if dims is None else prod(dims) * w[1] * prod(w[2:])

    def data_rank(self, node: onnx.NodeProto, ranks: dict[str, int]) -> int | None:
        return ranks.get(node.input[1]) if len(node.input) > 1 else None  # the weight's

    def scale_outputs(self, node: gs.Node, scale: np.ndarray) -> np.ndarray | None:
        """Conv: output channels on the weight's first axis, any group. ConvTranspose: each
        group's block [Cin/group, Cout/group, k...] holds its output channels second."""
        if len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
            return None
        w = np.asarray(node.inputs[1].values, np.float64)
        if not self.transposed:
            return w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        g = int(node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        blocks = w.reshape((g, cin // g, cout_g) + w.shape[2:])
        return (blocks * scale.reshape((g, 1, cout_g) + (1,) * (w.ndim - 2))).reshape(w.shape)

    def propagate(self, node: gs.Node, env: Env) -> None:
        x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
        b = input_or_none(node, 2)
        if not is_weight(w) or (b is not None and not is_weight(b)):
            freeze_all(node, env, "weight or bias is not a constant")
            return
        wshape = weight_shape(w)
        groups = int(node.attrs.get("group", 1))
        # Axes of the weight that hold input and output channels.
        in_ax, out_ax = (0, 1) if self.transposed else (1, 0)
        n_out = wshape[out_ax] * (groups if self.transposed else 1)
        n_in = wshape[in_ax] * (1 if self.transposed else groups)
        for ax in env.tracked(x):
            if ax != 1:
                env.freeze(env.get(x, ax), f"{node.op} {node.name}: mixes spatial axis {ax}")
        xin = env.get(x, 1)
        if groups == 1:
            if xin is not None:
                env.claim_weight(node, w, in_ax, xin)
                env.gate(node, 0, 1)
            out = env.fresh(n_out)
            env.claim_weight(node, w, out_ax, out)
        elif n_in // groups > 1 and n_out // groups > 1:
            per_in, per_out = n_in // groups, n_out // groups
            if xin is not None:  # column j of every group is one unit
                grid = np.asarray(xin).reshape(groups, per_in)
                for row in grid[1:]:
                    env.union(grid[0], row)
                env.claim_weight(node, w, in_ax if not self.transposed else 0,
                                 grid[0] if not self.transposed else xin)
                env.gate(node, 0, 1)
            cols = env.fresh(per_out)
            out = np.tile(cols, groups)
            env.claim_weight(node, w, out_ax if not self.transposed else 1,
                             out if not self.transposed else cols)
        else:
            per_in, per_out = n_in // groups, n_out // groups
            if xin is None:
                out = env.fresh(n_out)
                env.freeze(out, f"{node.op} {node.name}: grouped conv whose input channels are not prunable")
            else:
                reps = env.atoms.union_blocks(xin, per_in)
                out = np.repeat(reps, per_out)
                # Regular conv: weight axis 0 is output channels; transposed: axis 0 is input.
                env.claim_weight(node, w, 0, out if not self.transposed else xin)
        if b is not None:
            env.claim_weight(node, b, 0, out)
        env.set(y, 1, out)

    def rewrite(self, node: gs.Node, rw: Rewriter) -> None:
        groups = int(node.attrs.get("group", 1))
        w = weight_shape(node.inputs[1])
        if groups == 1 or w is None:
            return
        per_in = w[1] if not self.transposed else w[0] // groups
        per_out = w[0] // groups if not self.transposed else w[1]
        if per_in > 1 and per_out > 1:  # width-pruned groups keep their count
            return
        keep = rw.keep(node.outputs[0], 1)
        if keep is not None:
            per_out = keep.size // groups
            node.attrs["group"] = int(keep.sum()) // per_out


class Conv(_ConvBase):
    """Weight [Cout, Cin/group, k...]."""

    ops = ("Conv",)
    no_layer = None
    view = ConvLayer

    def layer(self, node: gs.Node) -> Layer | None:
        """One group and a constant weight: a matrix product on the patch matrix (groups
        mix channels only within a group, which no single matrix of the layer says)."""
        ok = (len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant)
              and int(node.attrs.get("group", 1)) == 1)
        return self.view(node) if ok else None


class ConvTranspose(_ConvBase):
    """Weight [Cin, Cout/group, k...]."""

    ops = ("ConvTranspose",)
    transposed = True
    no_layer = None
    view = ConvTransposeLayer
    layer = Conv.layer

    def propagate(self, node: gs.Node, env: Env) -> None:
        shape = node.attrs.get("output_shape")
        rank = env.rank(node.inputs[0])
        if shape is not None and rank is not None and len(shape) > rank - 2:
            freeze_all(node, env, "output_shape names channels")
            return
        super().propagate(node, env)
