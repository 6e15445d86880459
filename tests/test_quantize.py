"""Quantized models: parameters counted by element type (analyze, prune, bench). The QDQ
models come from onnxruntime's own quantize_static, of the zoo's CNN and MLP."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.size import graph_params, param_bytes, params_by_type, types_text
from onnxprune.api import analyze
from onnxprune.bench.runner import run_bench
from onnxprune.cli.main import main
from onnxprune.ir.graph import import_model

pytest.importorskip("torch")


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "mlp":
        return rng.standard_normal((n, 64)).astype(np.float32)
    return rng.random((n, 1, 28, 28), np.float32)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The zoo's LeNet (CNN) and MLP, untrained, and QDQ copies per channel and per tensor."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from onnxprune.zoo.catalog import export_model

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.data = iter(feeds)

        def get_next(self):
            return next(self.data, None)

    folder = tmp_path_factory.mktemp("zoo")
    out = {}
    for name in ("lenet", "mlp"):
        path = export_model(name, folder / f"{name}.onnx")
        out[name] = path
        for per_channel in (True, False):
            feeds = [{"input": _inputs(name, 8, seed)} for seed in range(3)]
            q = folder / f"{name}-{'pc' if per_channel else 'pt'}.onnx"
            quantize_static(str(path), str(q), Reader(feeds), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel)
            out[f"{name}-{'pc' if per_channel else 'pt'}"] = q
    return out


def _weights(model: onnx.ModelProto) -> tuple[int, int]:
    """Elements of the float model's weights (Conv/Gemm input 1) and biases (input 2)."""
    inits = {i.name: i for i in model.graph.initializer}
    weights = biases = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            weights += int(np.prod(inits[node.input[1]].dims))
            if len(node.input) > 2 and node.input[2]:
                biases += int(np.prod(inits[node.input[2]].dims))
    return weights, biases


# -- counting by element type ---------------------------------------------------------------------


def test_every_precision_is_counted_and_sized():
    types = [("f32", TensorProto.FLOAT), ("f16", TensorProto.FLOAT16),
             ("bf16", TensorProto.BFLOAT16), ("i8", TensorProto.INT8),
             ("u8", TensorProto.UINT8), ("i4", TensorProto.INT4), ("u4", TensorProto.UINT4)]
    inits = [helper.make_tensor(n, t, [4, 3], [1] * 12) for n, t in types]
    inits.append(helper.make_tensor("shape", TensorProto.INT64, [2], [3, 4]))  # not a param
    nodes = [helper.make_node("Identity", [n], [n + "_o"]) for n, _ in types]
    nodes.append(helper.make_node("Reshape", ["f32", "shape"], ["r"]))
    outs = [helper.make_tensor_value_info(n + "_o", t, [4, 3]) for n, t in types]
    outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [3, 4]))
    model = helper.make_model(helper.make_graph(nodes, "g", [], outs, inits))
    graph = import_model(model)
    by_type = params_by_type(graph)
    assert by_type == {name: 12 for name in ("bfloat16", "float16", "float32", "int4", "int8",
                                             "uint4", "uint8")}
    assert sum(by_type.values()) == graph_params(graph) == 84
    # bytes as stored: 4-bit types packed two to a byte
    assert param_bytes(by_type) == 12 * (4 + 2 + 2 + 1 + 1) + 6 + 6
    assert types_text({"int8": 1200, "float32": 30}) == "int8 1,200, float32 30"


@pytest.mark.parametrize("name", ["lenet", "mlp"])
@pytest.mark.parametrize("kind", ["pc", "pt"])
def test_qdq_models_are_counted_by_type(zoo, name, kind):
    float_model, q = onnx.load(zoo[name]), zoo[f"{name}-{kind}"]
    weights, biases = _weights(float_model)
    result = analyze(q)
    by_type = result.params_by_type
    qmodel = onnx.load(q)
    inits = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    zero_points = {n.input[2] for n in qmodel.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2}
    zp = {t: sum(inits[z].size for z in zero_points if inits[z].dtype == t)
          for t in (np.int8, np.int32)}
    # every weight quantized and counted once (next to its zero points); the biases as int32
    assert by_type["int8"] == weights + zp[np.int8]
    assert by_type["int32"] == biases + zp[np.int32]
    assert sum(by_type.values()) == result.params
    layers = sum(n.op_type in ("Conv", "Gemm") for n in float_model.graph.node)
    scales = by_type["float32"]
    if kind == "pt":  # one weight scale per layer, one bias scale, and the activations'
        assert scales < 6 * layers
    else:  # a scale per output channel (weights and biases)
        assert scales >= 2 * biases
    assert analyze(zoo[name]).params_by_type == {"float32": weights + biases}


def test_analyze_prune_and_bench_show_the_types(zoo, tmp_path, capsys):
    code, out, _ = cli(capsys, "analyze", zoo["lenet-pc"], "--json")
    assert code == 0 and json.loads(out)["params_by_type"]["int8"] > 0
    code, out, _ = cli(capsys, "analyze", zoo["lenet-pc"])
    assert code == 0 and "int8 " in out and "int32 " in out
    code, out, _ = cli(capsys, "prune", zoo["lenet"], "-o", tmp_path / "p.onnx", "--ratio", 0.5,
                       "--json", "-q")
    data = json.loads(out)
    assert set(data["params_by_type_before"]) == {"float32"}
    assert sum(data["params_by_type_after"].values()) == data["params_after"]
    report = run_bench([zoo["lenet"], zoo["lenet-pc"]], repeat=2, warmup=0).to_json()
    rows = {r["model"]: r for r in report["results"]}
    f32, int8 = rows["lenet.onnx"], rows["lenet-pc.onnx"]
    assert set(f32["params_by_type"]) == {"float32"} and "int8" in int8["params_by_type"]
    assert f32["weight_bytes"] == 4 * f32["params"]
    assert int8["weight_bytes"] < 0.3 * f32["weight_bytes"]
    code, out, _ = cli(capsys, "bench", zoo["lenet"], zoo["lenet-pc"], "--repeat", 2,
                       "--warmup", 0)
    assert code == 0 and "KiB int8" in out and "KiB float32" in out
