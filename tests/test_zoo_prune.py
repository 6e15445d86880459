"""Zoo models exported from torch: the group structure each architecture implies, and random
channel masks removed for real that match the mask oracle. Both torch exporters."""

import onnx
import pytest

torch_zoo = pytest.importorskip("onnxprune.zoo.torch_zoo")

from onnxprune.api import prune  # noqa: E402
from onnxprune.testing import check_oracle  # noqa: E402

# (channels, number of layers whose weights the group slices) per group, in graph order.
# Derived from the architectures in onnxprune/zoo/torch_zoo.py; the classifier output is frozen.
EXPECTED = {
    "mlp": [(128, 2), (128, 2), (10, 1)],
    "lenet": [(6, 2), (16, 2), (120, 2), (84, 2), (10, 1)],
    "vgg": [(32, 2), (32, 2), (64, 2), (64, 2), (128, 2), (128, 2), (10, 1)],
    # stage streams: stem + 2 blocks' conv2 + their readers; inner block convs pair up
    "resnet_basic": [(16, 7), (16, 2), (16, 2), (32, 2), (32, 5), (32, 2), (10, 1)],
    "resnet_bottleneck": [(16, 3), (16, 2), (64, 6), (16, 2), (16, 2), (16, 2), (32, 2),
                          (128, 5), (32, 2), (32, 2), (32, 2), (10, 1)],
    "mobilenetv2_small": [(16, 4), (64, 5), (16, 2), (24, 4), (96, 5), (24, 2), (96, 3),
                          (32, 4), (128, 3), (128, 5), (32, 2), (48, 2), (128, 2), (10, 1)],
    # the stem's 16 channels are read by every later layer of the block (BN + conv) and the
    # transition: 1 + 2 * 3 + 2 layers
    "densenet_small": [(16, 9), (32, 2), (8, 7), (32, 2), (8, 5), (32, 2), (8, 3), (20, 9),
                       (32, 2), (8, 7), (32, 2), (8, 5), (32, 2), (8, 3), (10, 1)],
    "unet": [(16, 2), (16, 3), (32, 2), (32, 3), (64, 2), (64, 2), (32, 2), (32, 2), (16, 2),
             (16, 2), (2, 1)],
    # conv 16, conv 32 (flattened into the encoder Linear), latent 32, the decoder Linear
    # unflattened into 32 channels, ConvTranspose 16, one output channel
    "autoencoder": [(16, 2), (32, 2), (32, 2), (32, 2), (16, 2), (1, 1)],
}
DYNAMO = ["autoencoder", "resnet_bottleneck", "mobilenetv2_small", "densenet_small"]


def _structure(analysis):
    return [(g.channels, len(g.layers)) for g in analysis.groups]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_torchscript_export(name, tmp_path):
    path = torch_zoo.export_zoo_model(name, str(tmp_path / f"{name}.onnx"))
    res = check_oracle(onnx.load(path), trials=3)
    assert _structure(res.analysis) == EXPECTED[name]
    assert [g.frozen for g in res.analysis.groups] == [False] * (len(EXPECTED[name]) - 1) + [True]


@pytest.mark.parametrize("name", DYNAMO)
def test_dynamo_export_with_dynamic_batch(name, tmp_path):
    path = torch_zoo.export_zoo_model(name, str(tmp_path / f"{name}.onnx"), dynamo=True,
                                      dynamic_batch=True)
    res = check_oracle(onnx.load(path), trials=3)
    assert _structure(res.analysis) == EXPECTED[name]


def test_batchnorm_kept_by_exporter_is_folded_and_pruned(tmp_path):
    path = torch_zoo.export_zoo_model("vgg", str(tmp_path / "vgg.onnx"), fold_bn=False)
    assert "BatchNormalization" in {n.op_type for n in onnx.load(path).graph.node}
    res = check_oracle(onnx.load(path), trials=2)
    assert _structure(res.analysis) == EXPECTED["vgg"]


def test_autoencoder_decoder_pruned_through_unflatten(tmp_path):
    path = torch_zoo.export_zoo_model("autoencoder", str(tmp_path / "ae.onnx"),
                                      dynamic_batch=True)
    r = prune(path, tmp_path / "ae.pruned.onnx", ratio=0.5)
    assert r.verification.passed and r.verification.max_rel_diff < 1e-5
    model = onnx.load(str(tmp_path / "ae.pruned.onnx"))
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    dec_fc = next(n for name, n in nodes.items() if name.startswith("/decoder") and n.op_type == "Gemm")
    dec_ct = [n for name, n in nodes.items() if name.startswith("/decoder") and n.op_type == "ConvTranspose"]
    assert inits[dec_fc.input[1]] == [16 * 7 * 7, 16]  # 16 of 32 channels x 49 features, 16 latents
    assert inits[dec_ct[0].input[1]] == [16, 8, 3, 3]
    assert inits[dec_ct[1].input[1]] == [8, 1, 3, 3]
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape" and n.name.startswith("/decoder"))
    target = next(i for i in model.graph.initializer if i.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist()[1:] == [16, 7, 7]
