"""Soft coefficients with real gradients: the torch metrics equal the numpy ones, the
autograd gradient of the gated graph matches finite differences on the oracle, and a metric
without a torch form falls back to finite differences."""

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnxprune.analysis.channels import analyze_channels  # noqa: E402
from onnxprune.api import prune  # noqa: E402
from onnxprune.ir.graph import import_model  # noqa: E402
from onnxprune.recover.soft_autograd import _torch_metric  # noqa: E402
from onnxprune.recover.torch_bridge import TorchGraph  # noqa: E402
from onnxprune.search.evaluate import Evaluator  # noqa: E402
from onnxprune.search.quality import get_metric  # noqa: E402
from onnxprune.select.common import Space  # noqa: E402
from onnxprune.select.cost import CostModel  # noqa: E402
from onnxprune.select.soft import _soft_gates  # noqa: E402
from onnxprune.verify.oracle import GATES  # noqa: E402
from onnxprune.zoo.builder import GraphBuilder  # noqa: E402


def _ae(seed=0) -> onnx.ModelProto:
    """A small autoencoder-like MLP: input width = output width (psnr/mse apply)."""
    b = GraphBuilder(seed=seed)
    x = b.input("x", ["batch", 16])
    h = b.op("Relu", [b.gemm(x, 16, 24, name="fc1")])
    h = b.op("Relu", [b.gemm(h, 24, 24, name="fc2")])
    return b.build([b.op("Sigmoid", [b.gemm(h, 24, 16, name="fc3")])])


def _data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0, 1, (n, 16)).astype(np.float32), "labels": np.arange(n) % 16}


@pytest.mark.parametrize("name, sign", [("psnr", 1), ("mse", -1), ("cosine", 1), ("kl", -1)])
def test_torch_metrics_equal_the_numpy_ones(name, sign):
    rng = np.random.default_rng(3)
    batch = _data()
    outs = [rng.uniform(0, 1, (64, 16)).astype(np.float32)]
    ref = [rng.uniform(0, 1, (64, 16)).astype(np.float32)]
    want = get_metric(name)(outs, batch, ref)
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    got = _torch_metric(name)([torch.as_tensor(outs[0])], t, [torch.as_tensor(ref[0])], 1.0)
    assert sign * float(got) == pytest.approx(want, rel=1e-5)
    if name == "kl":  # outputs that are probabilities already (a model ending in Softmax)
        outs, ref = ([a / a.sum(-1, keepdims=True)] for a in (outs[0], ref[0]))
        want = get_metric(name)(outs, batch, ref)
        got = _torch_metric(name)([torch.as_tensor(outs[0])], t, [torch.as_tensor(ref[0])], 1.0)
        assert sign * float(got) == pytest.approx(want, rel=1e-5)


def test_the_autograd_gradient_matches_finite_differences_on_the_oracle():
    model = _ae()
    graph = import_model(model)
    analysis = analyze_channels(graph)
    data = _data()
    ev = Evaluator(model, analysis, data, get_metric("psnr"))
    scores = np.random.default_rng(0).uniform(size=analysis.num_units)
    space = Space(analysis, scores, CostModel(graph, analysis), {"*": 0.9})
    c = np.array([0.4, 0.3])[: len(space.groups)]
    assert len(space.groups) == 2
    tg = TorchGraph(ev.oracle.model)
    for p in tg.params.values():
        p.requires_grad_(False)
    ct = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    gates = torch.ones(analysis.num_units)
    for g, ci in zip(space.groups, ct, strict=True):
        pos = torch.arange(g.order.size, dtype=torch.float32) + 0.5
        gates = gates.index_put((torch.as_tensor(g.order),),
                                torch.sigmoid(pos - ci.float() * g.order.size))
    outs = tg.run({"x": torch.as_tensor(data["x"]), GATES: gates[None]})
    util = _torch_metric("psnr")(outs, {"x": torch.as_tensor(data["x"])}, None, 1.0)
    util.backward()
    delta = 1e-3
    for i in range(len(c)):
        up, down = c.copy(), c.copy()
        up[i] += delta
        down[i] -= delta
        fd = (ev.evaluate(_soft_gates(space, up, 1.0))
              - ev.evaluate(_soft_gates(space, down, 1.0))) / (2 * delta)
        assert float(ct.grad[i]) == pytest.approx(fd, rel=2e-2, abs=1e-3)
        assert abs(fd) > 1e-2  # a gradient that says something


def test_soft_uses_autograd_for_builtin_metrics_and_falls_back_for_user_ones(tmp_path):
    kw = dict(calib=_data(), strategy="soft", target_params=0.4)
    r = prune(_ae(), None, metric="psnr", **kw)
    assert r.selection["method"] == "autograd"
    assert abs(r.selection["params_reduction"] - 0.4) <= 0.02 + 1e-9
    user = tmp_path / "m.py"
    user.write_text("import numpy as np\n"
                    "def close(outputs, batch):\n"
                    "    return -float(np.mean((outputs[0] - batch['x']) ** 2))\n")
    r = prune(_ae(), None, metric=f"{user}:close", **kw)
    assert r.selection["method"] == "finite differences"
    assert "no torch form" in r.selection["autograd"]
    r = prune(_ae(), None, metric="psnr", soft_method="finite", **kw)
    assert r.selection["method"] == "finite differences"
