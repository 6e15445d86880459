"""Quantized models: parameters counted by element type (analyze, prune, bench), and int8
quantization after pruning (the quantize pass, ``--quantize int8``), checked against the float
model. The QDQ models come from onnxruntime's own quantize_static, of the zoo's CNN and MLP."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.analysis.size import graph_params, param_bytes, params_by_type, types_text
from onnxprune.api import analyze, prune
from onnxprune.bench.runner import run_bench
from onnxprune.cli.main import main
from onnxprune.errors import EXIT_VERIFY_FAILED, UsageError
from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import session

pytest.importorskip("torch")


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name.startswith("mlp"):
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
    for name in ("lenet", "mlp", "autoencoder"):
        path = export_model(name, folder / f"{name}.onnx")
        out[name] = path
        for per_channel in (True, False):
            feeds = [{"input": _inputs(name, 8, seed)} for seed in range(3)]
            q = folder / f"{name}-{'pc' if per_channel else 'pt'}.onnx"
            quantize_static(str(path), str(q), Reader(feeds), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel)
            out[f"{name}-{'pc' if per_channel else 'pt'}"] = q
    feeds = [{"input": _inputs("lenet", 8, seed)} for seed in range(3)]
    out["lenet-qop"] = folder / "lenet-qop.onnx"
    quantize_static(str(out["lenet"]), str(out["lenet-qop"]), Reader(feeds),
                    quant_format=QuantFormat.QOperator, per_channel=True)
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


# -- quantize after pruning -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lenet", "mlp"])
def test_prune_then_quantize_int8(zoo, name, tmp_path):
    out = tmp_path / "q.onnx"
    calib = {"input": _inputs(name, 40)}
    r = prune(zoo[name], out, calib=calib, ratio=0.3, quantize="int8")
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # weights per output channel: 1-D scales on the weights' DequantizeLinear
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                 and n.input[0] in inits and inits[n.input[0]].dtype == np.int8]
    assert weight_dq and all(inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1
                             for n in weight_dq)
    q = r.quantization
    assert q["metric"] == "cosine" and q["data"] == "held-out" and q["samples"] == 8
    assert q["calibration_samples"] == 32  # the fitted share only; the held-out stays unseen
    assert q["loss"] <= q["tolerance"] == 0.01
    assert [s["stage"] for s in r.stages["stages"]] == ["unpruned", "pruned", "quantize"]
    assert r.stages["stages"][-1]["heldout"] == pytest.approx(q["int8"])
    # the written model is what was measured: its outputs agree with the float pruned model's
    x = calib["input"][:8]
    f = session(r.float_model).run(None, {"input": x})[0]
    i8 = session(model, optimized=True).run(None, {"input": x})[0]
    cos = np.sum(f * i8, 1) / np.linalg.norm(f, axis=1) / np.linalg.norm(i8, axis=1)
    assert cos.min() > 0.95 and q["agreement"] > 0.95
    # smaller: a byte per weight instead of four
    float_file = tmp_path / "f.onnx"
    onnx.save(r.float_model, str(float_file))
    assert out.stat().st_size < 0.4 * float_file.stat().st_size
    # counted by type: the float pruned weights are now int8 (with scales and zero points)
    pruned = graph_params(import_model(r.float_model))
    assert pruned < graph_params(import_model(onnx.load(zoo[name])))
    assert set(r.params_by_type_before) == {"float32"}
    assert pruned <= r.params_after < 1.1 * pruned
    assert r.params_by_type_after["int8"] > 0.95 * pruned


def test_quantize_per_tensor_and_metric_tolerance(zoo, tmp_path):
    x = _inputs("lenet", 40)
    labels = np.argmax(session(onnx.load(zoo["lenet"])).run(None, {"input": x})[0], axis=1)
    r = prune(zoo["lenet"], tmp_path / "q.onnx", calib={"input": x, "labels": labels},
              ratio=0.2, metric="accuracy", quantize="int8", quantize_per_tensor=True,
              quantize_tolerance=0.5)
    q = r.quantization
    assert "per tensor" in q["settings"] and q["tolerance"] == 0.5 and q["metric"] == "accuracy"
    model = onnx.load(tmp_path / "q.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert all(inits[n.input[1]].size == 1 for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[1] in inits)


def test_a_quantized_model_worse_than_the_tolerance_is_not_written(zoo, tmp_path, capsys,
                                                                    monkeypatch):
    from onnxprune.pipeline.passes import quantization

    monkeypatch.setitem(quantization.TOLERANCES, "cosine", (-1.0, False, "-1 (impossible)"))
    np.savez(tmp_path / "c.npz", input=_inputs("lenet", 20))
    out = tmp_path / "q.onnx"
    code, _, err = cli(capsys, "prune", zoo["lenet"], "-o", out, "--calib", tmp_path / "c.npz",
                       "--ratio", 0.3, "--quantize", "int8", "-q")
    assert code == EXIT_VERIFY_FAILED and not out.exists()
    assert len(err) == 1 and "int8 quantization makes cosine" in err[0]
    assert "more than the tolerance -1 (impossible); nothing written" in err[0]


def test_quantize_needs_calibration_data_and_options_need_quantize(zoo, tmp_path):
    with pytest.raises(UsageError, match="--quantize int8 calibrates on calibration data"):
        prune(zoo["mlp"], tmp_path / "q.onnx", ratio=0.3, quantize="int8")
    with pytest.warns(UserWarning, match="quantize_tolerance: no effect without --quantize"):
        prune(zoo["mlp"], tmp_path / "p.onnx", ratio=0.3, quantize_tolerance=0.1)


def test_the_quantize_pass_in_a_recipe(zoo, tmp_path, capsys):
    recipe = tmp_path / "int8.toml"
    recipe.write_text('description = "prune, then int8"\n' + "".join(
        f'[[pass]]\nname = "{n}"\n' for n in ("normalize", "analyze", "score", "select",
                                               "remove", "cleanup", "verify"))
        + '[[pass]]\nname = "quantize"\nmethod = "minmax"\n')
    out = tmp_path / "q.onnx"
    code, stdout, _ = cli(capsys, "run", recipe, zoo["mlp"], "-o", out, "--calib-random", 24,
                          "--json", "-q")
    assert code == 0 and out.exists()
    data = json.loads(stdout)
    assert data["quantization"]["type"] == "int8" and "int8" in data["params_by_type_after"]
    # without calibration data the recipe is refused before anything runs
    code, _, err = cli(capsys, "run", recipe, zoo["mlp"], "-o", tmp_path / "x.onnx", "-q")
    assert code == 2 and "pass 'quantize' needs calibration data" in err[0]
    assert not (tmp_path / "x.onnx").exists()


def test_prune_bench_shows_original_pruned_and_int8(zoo, tmp_path, capsys):
    np.savez(tmp_path / "c.npz", input=_inputs("mlp", 24))
    code, out, _ = cli(capsys, "prune", zoo["mlp"], "-o", tmp_path / "q.onnx", "--calib",
                       tmp_path / "c.npz", "--ratio", 0.3, "--quantize", "int8", "--bench",
                       "--bench-seconds", 0.1, "--json", "-q")
    assert code == 0
    bench = json.loads(out)["bench"]
    assert bench["models"] == ["mlp.onnx", "q (float)", "q.onnx"]
    rows = {r["model"]: r for r in bench["results"]}
    assert set(rows["q (float)"]["params_by_type"]) == {"float32"}
    assert "int8" in rows["q.onnx"]["params_by_type"]
    assert rows["q.onnx"]["weight_bytes"] < 0.5 * rows["q (float)"]["weight_bytes"]


# -- pruning quantized (QDQ) models ---------------------------------------------------------


def _structure(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """Op types in order, with the element type of each DequantizeLinear's constant data."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return [(n.op_type, str(inits.get(n.input[0], "")) if n.op_type == "DequantizeLinear"
             else "") for n in model.graph.node]


@pytest.mark.parametrize("name", ["lenet", "mlp", "autoencoder"])
@pytest.mark.parametrize("kind", ["pc", "pt"])
def test_qdq_models_prune_at_random_masks_as_the_oracle_says(zoo, name, kind):
    from onnxprune.testing import check_oracle

    model = onnx.load(zoo[f"{name}-{kind}"])
    feeds = {"input": _inputs(name, 2, seed=7)}
    res = check_oracle(model, seed=1, trials=3, feeds=feeds)
    float_groups = analyze(zoo[name]).channels.prunable_groups()
    # the same channels are prunable as in the float model, and some were removed each trial
    assert [g.channels for g in res.analysis.prunable_groups()] == [
        g.channels for g in float_groups]
    assert res.removed_fraction > 0 and res.max_abs_diff < 1e-5


@pytest.mark.parametrize("kind", ["pc", "pt"])
def test_a_pruned_qdq_model_stays_quantized_with_the_same_structure(zoo, kind, tmp_path):
    src = onnx.load(zoo[f"lenet-{kind}"])
    r = prune(src, tmp_path / "p.onnx", ratio=0.5)
    out = onnx.load(tmp_path / "p.onnx")
    onnx.checker.check_model(out, full_check=True)
    from onnxprune.testing import normalized

    assert _structure(out) == _structure(normalized(src))  # the same Q/DQ around the same ops
    assert r.verification.passed and r.verification.max_abs_diff == 0.0  # exactly the oracle
    assert r.params_after < 0.6 * r.params_before
    assert set(r.params_by_type_after) == set(r.params_by_type_before)
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    for node in out.graph.node:  # every weight still integer, its scales cut with it
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        data, scale = inits[node.input[0]], inits[node.input[1]]
        if data.ndim > 1:
            assert data.dtype == np.int8
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            assert scale.size == (data.shape[axis] if kind == "pc" else 1)
    # and it runs as deployed: onnxruntime fuses the pairs into integer kernels
    x = _inputs("lenet", 4)
    fused = session(out, optimized=True).run(None, {"input": x})[0]
    exact = session(out).run(None, {"input": x})[0]
    assert np.allclose(fused, exact, atol=0.1 * np.abs(exact).max())


def test_quantized_weights_are_scored_by_their_dequantized_values(zoo):
    from onnxprune.scoring.magnitude import magnitude_scores

    floats = analyze(zoo["lenet"])
    quant = analyze(zoo["lenet-pc"])
    for f, q in zip(floats.channels.prunable_groups(), quant.channels.prunable_groups(),
                    strict=True):
        a = magnitude_scores(floats.graph, floats.channels)[f.units]
        b = magnitude_scores(quant.graph, quant.channels)[q.units]
        assert np.corrcoef(a, b)[0, 1] > 0.99  # int8 rounding, not per-channel scales


def test_qoperator_kernels_freeze_with_a_reason_and_count_their_macs(zoo):
    result = analyze(zoo["lenet-qop"])
    assert not result.channels.prunable_groups()
    reasons = {g.reason for g in result.channels.groups}
    assert any("QOperator" in (why or "") for why in reasons)
    floats = analyze(zoo["lenet"])
    # the convolutions (QLinearConv) count as the float ones; QGemm is com.microsoft's
    convs = sum(floats.channels.node_macs[n.name] for n in floats.graph.nodes if n.op == "Conv")
    assert result.macs == convs > 0
    assert "int8" in result.params_by_type


def test_recovery_and_quantize_refuse_a_quantized_model(zoo, tmp_path):
    calib = {"input": _inputs("lenet", 16)}
    with pytest.raises(UsageError, match="compensate refits float weights"):
        prune(zoo["lenet-pc"], calib=calib, ratio=0.3, compensate=True)
    with pytest.raises(UsageError, match="quantized already"):
        prune(zoo["lenet-pc"], calib=calib, ratio=0.3, quantize="int8")


def test_a_qdq_transformer_block_prunes_whole_heads(tmp_path):
    """BERT-style self-attention (q, k, v, output projections, LayerNorm) quantized by
    onnxruntime, its MatMul weights per channel: heads are units across the four int8
    projections, and random cuts match the oracle."""
    import contextlib
    import io

    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from test_attention import BertSelfAttention as Attention  # the same block, in float

    from onnxprune.testing import check_oracle

    torch.manual_seed(0)
    path, q = tmp_path / "a.onnx", tmp_path / "a-qdq.onnx"
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(Attention().eval(), (torch.randn(2, 5, 32),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": rng.standard_normal((4, 5, 32)).astype(np.float32)}
                              for _ in range(3)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(path), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    model = onnx.load(q)
    weights = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(weights) >= 4  # the projections (and the attention products), quantized
    res = check_oracle(model, trials=4, feeds={"x": rng.standard_normal((2, 5, 32)).astype(
        np.float32)})
    heads = [g for g in res.analysis.groups if not g.frozen and g.channels == 4]
    assert len(heads) == 1 and len(heads[0].layers) >= 2
    r = prune(model, ratio=0.5)
    assert r.verification.passed and r.params_after < r.params_before
    assert r.params_by_type_after["int8"] < r.params_by_type_before["int8"]


def test_reduced_range_is_the_default_on_x86_cpus_without_vnni(zoo, tmp_path, monkeypatch):
    from onnxprune.pipeline.passes import quantization
    from onnxprune.quant.static import lacks_vnni

    avx2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
    assert lacks_vnni("x86_64", avx2)
    assert not lacks_vnni("x86_64", avx2.replace("avx2", "avx2 avx512f avx512_vnni"))
    assert not lacks_vnni("x86_64", avx2.replace("avx2", "avx2 avx_vnni"))
    assert not lacks_vnni("aarch64", avx2) and not lacks_vnni("x86_64", "")  # unknown: off
    x = _inputs("lenet", 24)
    for lacks in (True, False):
        monkeypatch.setattr(quantization, "cpu_lacks_vnni", lambda lacks=lacks: lacks)
        r = prune(zoo["lenet"], tmp_path / "q.onnx", calib={"input": x}, ratio=0.2,
                  quantize="int8", quantize_tolerance=1.0)
        assert ("reduced range" in r.quantization["settings"]) is lacks
        assert r.quantization["reduce_range"] == f"auto: {'on' if lacks else 'off'}"
    # off (or the API's False) turns it off on such a CPU, on turns it on anywhere
    monkeypatch.setattr(quantization, "cpu_lacks_vnni", lambda: True)
    for value, on in ((False, False), ("off", False), ("on", True), (True, True)):
        r = prune(zoo["lenet"], tmp_path / "q.onnx", calib={"input": x}, ratio=0.2,
                  quantize="int8", quantize_tolerance=1.0, quantize_reduce_range=value)
        assert ("reduced range" in r.quantization["settings"]) is on
    # on the command line: the flag alone means on, and it takes auto, on or off
    src = tmp_path / "m.onnx"
    onnx.save(onnx.load(zoo["lenet"]), src)
    np.savez(tmp_path / "c.npz", input=x)
    for extra, code in ((["--quantize-reduce-range"], 0), (["--quantize-reduce-range", "off"], 0),
                        (["--quantize-reduce-range", "maybe"], 2)):
        assert main(["prune", str(src), "-o", str(tmp_path / "q.onnx"), "--ratio", "0.2",
                     "--calib", str(tmp_path / "c.npz"), "--quantize", "int8",
                     "--quantize-tolerance", "1", *extra]) == code


def test_histogram_calibration_runs_on_a_sample_count_no_batch_divides(zoo, tmp_path):
    from onnxprune.ir.arrays import Calibration
    from onnxprune.quant.static import (
        QuantSettings,
        calibrated_samples,
        calibration_batches,
        even_batch,
    )

    # as many batches as 16 needs, all the same size; fewer samples left out than batches
    assert [even_batch(n, 16) for n in (205, 208, 210, 211, 31, 7)] == [15, 16, 15, 15, 15, 7]
    model = onnx.load(zoo["lenet"])
    x = _inputs("lenet", 211)  # prime: 14 batches of 15, one sample left out
    calib = Calibration({"input": x})
    sizes = [len(b["input"]) for b in calibration_batches(model, calib, 16, even=True)]
    assert sizes == [15] * 14
    assert calibrated_samples(model, calib, QuantSettings(method="entropy")) == 210
    assert calibrated_samples(model, calib, QuantSettings()) == 211  # minmax: all of them
    assert [len(b["input"]) for b in calibration_batches(model, calib, 16)][-1] == 3
    for method in ("entropy", "percentile"):
        r = prune(zoo["lenet"], tmp_path / f"{method}.onnx", calib={"input": _inputs("lenet", 45)},
                  ratio=0.2, quantize="int8", quantize_method=method, quantize_tolerance=1.0)
        assert method in r.quantization["settings"]
