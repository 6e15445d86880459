import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from onnxprune.zoo.torch_zoo import ZOO, build, export_onnx, export_zoo_model  # noqa: E402

FULL_SIZE = {"resnet50": 25_557_032, "mobilenetv2": 3_504_872, "densenet121": 7_978_856}
SMALL = [name for name in ZOO if name not in FULL_SIZE]


def _run_ort(path, x):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    return sess.run(None, {"input": x})[0]


def _assert_matches(model, path, shape, batch=1, seed=1):
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
    got = _run_ort(path, x.numpy())
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() < 1e-4 * scale


def _op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("name", SMALL)
def test_torchscript_export_matches_torch(name, tmp_path):
    model = build(name)
    shape = ZOO[name][1]
    path = export_onnx(model, tmp_path / f"{name}.onnx", shape)
    if name != "densenet_small":  # pre-activation BN has no conv to fold into
        assert "BatchNormalization" not in _op_types(path)
    _assert_matches(model, path, shape)


def test_build_is_deterministic():
    a, b = build("vgg", seed=3), build("vgg", seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert not torch.equal(
        a.features[1].running_mean, build("vgg", seed=4).features[1].running_mean
    )


@pytest.mark.parametrize("dynamo", [False, True])
def test_fold_bn_false_keeps_batchnorm(dynamo, tmp_path):
    model = build("vgg")
    path = export_onnx(model, tmp_path / "vgg.onnx", ZOO["vgg"][1], fold_bn=False, dynamo=dynamo)
    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert ops.count("BatchNormalization") == 5
    _assert_matches(model, path, ZOO["vgg"][1])


def test_dynamo_export_autoencoder(tmp_path):
    model = build("autoencoder")
    path = export_onnx(model, tmp_path / "ae.onnx", ZOO["autoencoder"][1], dynamo=True)
    _assert_matches(model, path, ZOO["autoencoder"][1])


def test_autoencoder_scopes(tmp_path):
    path = export_zoo_model("autoencoder", tmp_path / "ae.onnx")
    names = [node.name for node in onnx.load(path).graph.node]
    assert any(n.startswith("/encoder/") for n in names)
    assert any(n.startswith("/decoder/") for n in names)


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("name", ["lenet", "autoencoder"])
def test_dynamic_batch(name, dynamo, tmp_path):
    model = build(name)
    shape = ZOO[name][1]
    path = export_onnx(model, tmp_path / f"{name}.onnx", shape, dynamic_batch=True, dynamo=dynamo)
    dim = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value
    _assert_matches(model, path, shape, batch=3)


@pytest.mark.slow
def test_full_size_parameter_counts():
    for name, expected in FULL_SIZE.items():
        model = build(name)
        assert sum(p.numel() for p in model.parameters()) == expected, name
        x = torch.randn(1, *ZOO[name][1])
        with torch.no_grad():
            assert model(x).shape == (1, 1000)
