"""A pruned model never stores more parameters than its input unless asked: vectors the input
stored once for several readers (TorchScript deduplicates equal biases) are unshared so each
reader's channels can go their own way, shared again before writing when they are still equal,
and a cut that leaves them different is refused (exit 8, nothing written) without
--allow-larger."""

import json

import numpy as np
import onnx

from onnxprune.analysis.size import graph_params
from onnxprune.api import prune
from onnxprune.cli.main import main
from onnxprune.errors import EXIT_CONSTRAINT
from onnxprune.zoo.builder import GraphBuilder


def shared_bias_model() -> onnx.ModelProto:
    """Four layers of 256 outputs reading one stored bias (0.1 everywhere)."""
    b = GraphBuilder(seed=0)
    x = b.input("x", ["N", 2])
    bias = b.const(np.full(256, 0.1, np.float32))
    outs = []
    for i in range(4):
        w = b.const(np.random.default_rng(i).standard_normal((2, 256)).astype(np.float32))
        h = b.relu(b.op("Add", [b.op("MatMul", [x, w]), bias]))
        outs.append(b.matmul(h, 256, 1, name=f"v{i}"))
    return b.build([b.op("Sum", outs)])


def stored(path) -> int:
    import onnx_graphsurgeon as gs

    return graph_params(gs.import_onnx(onnx.load(str(path))))


def test_equal_cuts_share_the_vector_again(tmp_path):
    model = shared_bias_model()
    r = prune(model, tmp_path / "a.onnx", ratio=0.1)
    assert r.verification.passed
    out = onnx.load(str(tmp_path / "a.onnx"))
    biases = [i for i in out.graph.initializer if list(i.dims) == [231]]
    assert len(biases) == 1  # four readers, one stored vector (unshared to cut, shared again)
    assert stored(tmp_path / "a.onnx") < 3328  # the input stores 3,328


def test_a_cut_that_stores_more_is_refused_unless_asked(tmp_path, capsys):
    model = shared_bias_model()
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    prune(model, None, ratio=0.1, save_plan=tmp_path / "p.json")
    plan = json.loads((tmp_path / "p.json").read_text())
    for k, group in enumerate(plan["groups"]):  # each layer loses a different count
        group["removed"] = group["removed"][:k + 1]
    plan["removed_channels"] = sum(len(g["removed"]) for g in plan["groups"])
    (tmp_path / "q.json").write_text(json.dumps(plan))
    out = tmp_path / "o.onnx"
    code = main(["prune", str(src), "-o", str(out), "--plan", str(tmp_path / "q.json")])
    assert code == EXIT_CONSTRAINT and not out.exists()
    err = capsys.readouterr().err
    assert "more parameters than the input (4,056 > 3,328)" in err and "--allow-larger" in err
    assert main(["prune", str(src), "-o", str(out), "--plan", str(tmp_path / "q.json"),
                 "--allow-larger"]) == 0
    assert stored(out) == 4056 and stored(src) == 3328
