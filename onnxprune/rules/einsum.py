"""Einsum: every subscript letter is one axis shared by the operands (and the output) that
carry it. Letters kept in the output join their operands' channels (broadcast size-1 axes
apart); contracted letters join theirs and are gated (the sum mixes them); a letter only
constant operands carry creates output channels owned by those constants (a linear layer
written as ``bld,df->blf``). Repeated letters within an operand (diagonals) freeze."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir.graph import prod, shape_of, static_dims
from .base import OpRule, freeze_all
from .env import Env

ELLIPSIS_LETTERS = "0123456789"  # stand-ins for the axes an ellipsis covers


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str] | None:
    """Operand subscripts and output subscripts with ellipses expanded (one character per
    axis); None when the equation does not fit the ranks."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        return None
    width = 0
    for term, rank in zip(terms, ranks, strict=True):
        explicit = len(term.replace("...", ""))
        if "..." in term:
            width = max(width, rank - explicit)
        elif explicit != rank:
            return None
    if width > len(ELLIPSIS_LETTERS):
        return None
    out_terms = []
    for term, rank in zip(terms, ranks, strict=True):
        n = rank - len(term.replace("...", ""))
        out_terms.append(term.replace("...", ELLIPSIS_LETTERS[width - n:width]))
    if arrow:
        out = rhs.replace("...", ELLIPSIS_LETTERS[:width])
    else:  # implicit output: the ellipsis, then letters used once, alphabetically
        letters = "".join(out_terms)
        once = sorted(c for c in set(letters) if letters.count(c) == 1 and c.isalpha())
        out = ELLIPSIS_LETTERS[:width] + "".join(once)
    return out_terms, out


class Einsum(OpRule):
    ops = ("Einsum",)
    no_macs = None

    def macs(self, node: gs.Node) -> int:
        """The product of every subscript's size: each output element sums over the
        contracted letters (symbolic sizes count as 1)."""
        shapes = [static_dims(shape_of(t)) for t in node.inputs]
        if any(s is None for s in shapes):
            return 0
        parsed = parse(str(node.attrs.get("equation", "")), [len(s) for s in shapes])
        if parsed is None or len(node.inputs) < 2:
            return 0  # one operand: a transpose or a reduction, not multiply-accumulates
        size: dict[str, int] = {}
        for term, shape in zip(parsed[0], shapes, strict=True):
            for letter, d in zip(term, shape, strict=True):
                size[letter] = max(size.get(letter, 1), d)
        return prod(size.values())

    def propagate(self, node: gs.Node, env: Env) -> None:
        ops, y = list(node.inputs), node.outputs[0]
        ranks = [env.rank(t) for t in ops]
        parsed = None if None in ranks else parse(str(node.attrs.get("equation", "")), ranks)
        if parsed is None:
            freeze_all(node, env, "equation or operand ranks unknown")
            return
        terms, out = parsed
        if any(len(set(t)) != len(t) for t in terms) or len(set(out)) != len(out):
            freeze_all(node, env, "repeated subscripts (a diagonal)")
            return
        for letter in sorted(set("".join(terms))):
            places = [(t, term.index(letter)) for t, term in zip(ops, terms, strict=True)
                      if letter in term]
            self._letter(node, env, letter, places, out.find(letter), y)

    @staticmethod
    def _letter(node: gs.Node, env: Env, letter: str, places, oax: int, y: gs.Tensor) -> None:
        tracked = [(t, ax, env.get(t, ax)) for t, ax in places if env.get(t, ax) is not None]
        consts = [(t, ax) for t, ax in places if isinstance(t, gs.Constant)]
        if not tracked:
            sizes = {int(t.values.shape[ax]) for t, ax in consts}
            free = [(t, ax) for t, ax in places if not isinstance(t, gs.Constant)]
            if oax >= 0 and consts and len(sizes) == 1 and sizes != {1} and all(
                    env.dim(t, ax) == 1 for t, ax in free):
                out = env.fresh(sizes.pop())  # new features, owned by the weights
                for t, ax in consts:
                    env.claim(node, t, ax, out)
                env.set(y, oax, out)
            return
        base = max((atoms for _, _, atoms in tracked), key=len)
        why = None
        if any(len(atoms) != len(base) for _, _, atoms in tracked):
            why = "operands disagree on the channel count"
        for t, ax in places:
            if env.get(t, ax) is not None:
                continue
            dim = env.dim(t, ax)
            if dim == 1 and oax >= 0:
                continue  # broadcast along this letter
            if not (isinstance(t, gs.Constant) and dim == len(base)):
                why = f"operand {t.name} has no channel map for '{letter}'"
        if why:
            for _, _, atoms in tracked:
                env.freeze(atoms, f"Einsum {node.name}: {why}")
            return
        for _, _, atoms in tracked:
            if atoms is not base:
                env.union(base, atoms)
        for t, ax in consts:
            if env.dim(t, ax) == len(base):
                env.claim(node, t, ax, base)
        if oax >= 0:
            env.set(y, oax, base)
        else:  # contracted: the sum mixes these channels
            t, ax, _ = tracked[0]
            env.gate(node, node.inputs.index(t), ax, np.asarray(base))
