"""--quantize int4: MatMul weights in 4-bit blocks by onnxruntime's own quantizer
(MatMulNBits), after pruning, checked against the float model like int8."""

import numpy as np
import onnx
import pytest

from onnxprune.api import prune
from onnxprune.cli.main import main
from onnxprune.errors import EXIT_USAGE, UsageError
from onnxprune.ir.runtime import session
from onnxprune.quant.weight_only import matmul_weights, quantize_int4
from onnxprune.zoo.builder import GraphBuilder


def mlp(path, width=256):
    """Two MatMul layers with biases (a transformer's FFN), trained-looking weights."""
    b = GraphBuilder(seed=1)
    x = b.input("x", ["batch", 128])
    h = b.relu(b.op("Add", [b.op("MatMul", [x, b.const(b.rng.standard_normal(
        (128, width)).astype(np.float32) * 0.09)]), b.const(np.zeros(width, np.float32))]))
    y = b.op("MatMul", [h, b.const(b.rng.standard_normal((width, 64)).astype(
        np.float32) * 0.06)])
    onnx.save(b.build([y]), str(path))
    return path


def test_prune_then_int4(tmp_path):
    src = mlp(tmp_path / "m.onnx")
    out = tmp_path / "q.onnx"
    r = prune(src, out, ratio=0.25, calib="random:32", quantize="int4")
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    q = r.quantization
    assert q["type"] == "int4" and q["quantized_nodes"] == 2 and "blocks of 32" in q["settings"]
    assert q["loss"] <= q["tolerance"] and q["int4"] == q["quantized"]
    assert [s["stage"] for s in r.stages["stages"]] == ["unpruned", "pruned", "quantize"]
    # what was measured is what was written: it follows the float pruned model closely
    x = np.random.default_rng(5).standard_normal((16, 128)).astype(np.float32)
    f = session(r.float_model).run(None, {"x": x})[0]
    i4 = session(model, optimized=True).run(None, {"x": x})[0]
    cos = np.sum(f * i4, 1) / np.linalg.norm(f, axis=1) / np.linalg.norm(i4, axis=1)
    assert cos.min() > 0.99 and not np.allclose(f, i4)  # close, and really quantized
    # half a byte per weight (and a scale per block): under a fifth of the float file
    float_file = tmp_path / "f.onnx"
    onnx.save(r.float_model, str(float_file))
    assert out.stat().st_size < 0.2 * float_file.stat().st_size


def test_int4_block_size_and_what_it_refuses(tmp_path, capsys):
    src = mlp(tmp_path / "m.onnx")
    model = onnx.load(src)
    assert matmul_weights(model) == 2
    q = quantize_int4(model, block_size=64)
    blocks = [a.i for n in q.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
              if a.name == "block_size"]
    assert blocks == [64, 64] and matmul_weights(model) == 2  # the input is left alone
    with pytest.raises(UsageError, match="block size must be one of"):
        quantize_int4(model, block_size=48)
    b = GraphBuilder(seed=0)
    x = b.input("input", ["batch", 3, 8, 8])
    conv = tmp_path / "c.onnx"
    onnx.save(b.build([b.relu(b.conv(x, 3, 8))]), str(conv))
    assert main(["prune", str(conv), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.3",
                 "--calib", "random:8", "--quantize", "int4"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "has none (--quantize int8 quantizes convolutions)" in err
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(UsageError, match="--quantize int4 is checked on calibration data"):
        prune(src, tmp_path / "p.onnx", ratio=0.3, quantize="int4")
