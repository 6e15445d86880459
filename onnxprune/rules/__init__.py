"""The op-rule registry: every supported op type, registered explicitly in this one place."""

from __future__ import annotations

from .base import FreezeRule, OpRule, Rewriter
from .concat import Concat, Split
from .conv import Conv, ConvTranspose
from .einsum import Einsum
from .elementwise import Broadcast, Unary
from .expand import Expand
from .gather import Gather
from .layers import Layer
from .linear import Gemm, MatMul
from .nbits import MatMulNBits
from .norm import (
    BatchNormalization,
    GroupNormalization,
    InstanceNormalization,
    LayerNormalization,
    Softmax,
)
from .pool import ArgReduce, GlobalMean, Pool, Reduce
from .quant import QOperator, QuantizeDequantize
from .recurrent import Recurrent
from .reshape import Flatten, Reshape, Squeeze, Transpose, Unsqueeze
from .resize import Resize
from .shape import Shape
from .slicing import Pad, Slice

__all__ = ["OpRule", "Rewriter", "RuleRegistry", "default_registry", "layer_of", "rule_of"]


class RuleRegistry:
    """Op type (default ONNX domain) -> rule; ops of other domains by (domain, op), where a
    rule says its domain (onnxruntime's MatMulNBits); any other op has no rule."""

    def __init__(self, rules: list[OpRule] = ()):
        self._rules: dict[str, OpRule] = {}
        self._other: dict[tuple[str, str], OpRule] = {}
        self._freeze = FreezeRule()
        for rule in rules:
            self.add(rule)

    def add(self, rule: OpRule) -> None:
        for op in rule.ops:
            table, key = (self._rules, op) if not rule.domain else (self._other,
                                                                   (rule.domain, op))
            if key in table:
                raise ValueError(f"two rules for op {op}")
            table[key] = rule

    def lookup(self, op: str, domain: str = "") -> OpRule:
        if domain not in ("", "ai.onnx"):
            return self._other.get((domain, op), self._freeze)
        return self._rules.get(op, self._freeze)

    def supported(self) -> list[str]:
        return sorted(self._rules) + sorted(f"{d}.{op}" for d, op in self._other)

    def rules(self) -> list[OpRule]:
        """Every rule once, in registration order."""
        every = [*self._rules.values(), *self._other.values()]
        return list({id(r): r for r in every}.values())


def default_registry() -> RuleRegistry:
    return RuleRegistry([
        Conv(), ConvTranspose(), Gemm(), MatMul(), MatMulNBits(), Einsum(),
        Unary(), Broadcast(),
        BatchNormalization(), InstanceNormalization(), GroupNormalization(),
        LayerNormalization(), Softmax(),
        Pool(), GlobalMean(), Reduce(), ArgReduce(), Recurrent(),
        Reshape(), Flatten(), Transpose(), Squeeze(), Unsqueeze(),
        Concat(), Split(), Slice(), Gather(), Pad(), Resize(), Shape(), Expand(),
        QuantizeDequantize(), QOperator(),
    ])


_DEFAULT: RuleRegistry | None = None


def rule_of(node) -> OpRule:
    """The default registry's rule of ``node``."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = default_registry()
    return _DEFAULT.lookup(node.op, node.domain or "")


def layer_of(node) -> Layer | None:
    """``node`` as a matrix product with a constant weight (``rules/layers.py``), as its
    rule sees it; None where it is not one."""
    return rule_of(node).layer(node)
