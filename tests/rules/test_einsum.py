"""Einsum: linear layers, activation products (attention scores) and ellipses, each removal
checked against the oracle."""

import numpy as np
import pytest
from conftest import group_with_layer

from onnxprune.rules.einsum import parse
from onnxprune.testing import check_oracle
from onnxprune.zoo.builder import GraphBuilder


def _w(b, *shape, seed=0):
    return b.const(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_parse_expands_ellipses_and_implicit_outputs():
    assert parse("bld,df->blf", [3, 2]) == (["bld", "df"], "blf")
    assert parse("...d,df", [3, 2]) == (["01d", "df"], "01f")
    assert parse("...ij,...jk->...ik", [3, 4]) == (["1ij", "01jk"], "01ik")
    assert parse("ij,jk", [2, 2]) == (["ij", "jk"], "ik")
    assert parse("ij,jk->ik", [3, 2]) is None


@pytest.mark.parametrize("eq1,eq2", [("bld,df->blf", "blf,fg->blg"),
                                     ("...d,df", "...f,fg"),
                                     ("bld,fd->bfl", "bfl,gf->blg")])
def test_einsum_linear_layers(eq1, eq2):
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 5, 6])
    w1 = _w(b, 8, 6) if eq1.startswith("bld,fd") else _w(b, 6, 8)
    h = b.op("Relu", [b.op("Einsum", [x, w1], equation=eq1, name="e1")])
    w2 = _w(b, 3, 8, seed=1) if eq2.startswith("bfl,gf") else _w(b, 8, 3, seed=1)
    y = b.op("Einsum", [h, w2], equation=eq2, name="e2")
    res = check_oracle(b.build([y]), trials=4)
    g = group_with_layer(res.analysis, "e1")
    assert g.channels == 8 and not g.frozen and "e2" in g.layers


def test_einsum_attention_scores_join_contracted_channels():
    """q k^T as an einsum: q's and k's feature channels are one unit each (pruned together)."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 5, 6])
    q = b.matmul(x, 6, 8, name="q")
    k = b.matmul(x, 6, 8, name="k")
    v = b.matmul(x, 6, 4, name="v")
    s = b.op("Softmax", [b.op("Einsum", [q, k], equation="bid,bjd->bij", name="scores")], axis=-1)
    ctx = b.op("Einsum", [s, v], equation="bij,bjc->bic", name="mix")
    y = b.matmul(ctx, 4, 3, name="out")
    res = check_oracle(b.build([y]), trials=4)
    qk = group_with_layer(res.analysis, "q")
    assert qk.channels == 8 and not qk.frozen and "k" in qk.layers
    vo = group_with_layer(res.analysis, "v")
    assert vo.channels == 4 and not vo.frozen and "out" in vo.layers


def test_einsum_diagonal_freezes():
    b = GraphBuilder(opset=17)
    x = b.input("x", [2, 3, 4])
    h = b.matmul(x, 4, 3, name="mm")
    d = b.op("Einsum", [h], equation="bii->bi", name="diag")
    res = check_oracle(b.build([b.matmul(d, 3, 2)]), trials=1)
    g = group_with_layer(res.analysis, "mm")
    assert g.frozen and "diagonal" in g.reason
