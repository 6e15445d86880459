"""The oracle's tolerance follows each output's float noise, and stays a real check: a past kind
of rewrite bug (a channel window off by one) and a tiny wrong weight both fail."""

import numpy as np
import pytest

from onnxprune.api import prune
from onnxprune.errors import VerificationError
from onnxprune.verify.compare import ATOL, NOISE_FACTOR, check_outputs
from onnxprune.zoo.builder import GraphBuilder, demo_cnn


def sliced_model():
    b = GraphBuilder(seed=0, opset=13)
    x = b.input("x", ["batch", 3, 8, 8])
    h = b.relu(b.conv(x, 3, 12, name="c1"))
    s = b.op("Slice", [h, b.const(np.array([2])), b.const(np.array([10])),
                       b.const(np.array([1]))], name="sl")
    return b.build([b.conv(s, 8, 4, name="head"), b.conv(h, 12, 3, name="side")])


def test_an_honest_prune_passes_and_says_what_decided():
    r = prune(sliced_model(), ratio=0.5)
    v = r.verification
    assert v.passed and v.deciding.startswith("output ") and "tolerance" in v.deciding


def test_a_channel_window_off_by_one_is_caught(monkeypatch):
    """Re-introduces a Slice rewrite that counts the kept window from one channel too far."""
    from onnxprune.rules import slicing

    real = slicing.Slice.rewrite

    def off_by_one(self, node, rw):
        real(self, node, rw)
        starts = node.inputs[1]
        if hasattr(starts, "values") and np.asarray(starts.values).size:
            rw.set_const_input(node, 1, np.asarray(starts.values) + 1)
            rw.set_const_input(node, 2, np.asarray(node.inputs[2].values) + 1)

    monkeypatch.setattr(slicing.Slice, "rewrite", off_by_one)
    with pytest.raises(VerificationError, match="mask oracle mismatch: output"):
        prune(sliced_model(), ratio=0.5)


def test_a_slightly_wrong_weight_is_caught(monkeypatch):
    """One layer's kept weights off by 0.1%: below what a task metric would notice, far above
    float noise."""
    from onnxprune.rewrite import remove

    real = remove.remove_units

    def perturbed(graph, analysis, removed):
        out = real(graph, analysis, removed)
        conv = next(n for n in graph.nodes if n.name == "head_conv")
        conv.inputs[1].values = np.array(conv.inputs[1].values) * np.float32(1.001)
        return out

    monkeypatch.setattr("onnxprune.pipeline.passes.removal.remove_units", perturbed)
    with pytest.raises(VerificationError, match="mask oracle mismatch"):
        prune(demo_cnn(), ratio=0.5)


def test_the_tolerance_grows_with_measured_noise_only():
    want = [np.array([1.0, 2.0, 3.0])]
    got = [np.array([1.0 + 5e-4, 2.0, 3.0])]
    quiet = check_outputs(got, want, noise=[0.0])[0]
    noisy = check_outputs(got, want, noise=[1e-4])[0]
    assert not quiet.passed and quiet.atol == pytest.approx(ATOL * 3.0)
    assert noisy.passed and noisy.atol == pytest.approx(NOISE_FACTOR * 1e-4)
    assert "float noise" in noisy.describe()
