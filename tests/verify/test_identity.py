"""The input model runs again in verification only when normalization may have changed it:
a graph given back node for node needs no second run, and any difference gets one."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxprune.api import prune
from onnxprune.errors import VerificationError
from onnxprune.ir.graph import import_model
from onnxprune.ir.runtime import skeleton
from onnxprune.ir.weights import Skeleton
from onnxprune.pipeline.passes import frontend
from onnxprune.verify import checks
from onnxprune.verify.identity import same_model
from onnxprune.zoo.builder import GraphBuilder


def _model() -> onnx.ModelProto:
    b = GraphBuilder(seed=2)
    x = b.input("x", ["batch", 3, 24, 24])
    h = b.relu(b.conv(x, 3, 64, name="c0"))
    h = b.relu(b.conv(h, 64, 64, name="c1"))  # 147 KB: an array of the skeleton
    return b.build([b.conv(h, 64, 8, name="c2")], "net")


def _round_trip(model: onnx.ModelProto) -> tuple[Skeleton, Skeleton]:
    from onnxprune.ir.graph import export_skeleton

    source = Skeleton(*skeleton(model))
    return source, export_skeleton(import_model(source))


def test_a_round_trip_is_the_same_model_and_a_change_is_not():
    source, back = _round_trip(_model())
    assert back.arrays and same_model(source, back)
    # an equal array that is another object is still the same weight
    name = next(iter(back.arrays))
    back.arrays[name] = back.arrays[name].copy()
    assert same_model(source, back)
    changed = back.arrays[name].copy()
    changed.flat[0] += 1
    back.arrays[name] = changed
    assert not same_model(source, back)
    _, back = _round_trip(_model())
    conv = next(n for n in back.model.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "strides").ints[:] = [2, 2]
    assert not same_model(source, back)
    _, back = _round_trip(_model())
    small = next(t for t in back.model.graph.initializer if t.name not in back.arrays)
    small.raw_data = np.full(np.prod(small.dims), 3, np.float32).tobytes()
    assert not same_model(source, back)


def test_an_untouched_model_is_not_run_again(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))

    def never(*args, **kwargs):
        raise AssertionError("the input model ran again")

    monkeypatch.setattr(checks, "_compare_source", never)
    result = prune(str(path), ratio=0.5)
    assert result.verification.passed and result.verification.normalize_rel_diff is None


def test_a_step_that_changes_weights_unannounced_is_still_caught(tmp_path, monkeypatch):
    """A normalization step that scales a weight but says it changed nothing: the graphs
    differ, so verification compares with the input model and names the step."""
    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    original = frontend.DropIdentity.run

    def scaling(self, ctx):
        result = original(self, ctx)
        weight = next(t for t in ctx.graph.tensors().values()
                      if isinstance(t, gs.Constant) and t.values.ndim == 4)
        weight.values = weight.values * 2
        return result

    monkeypatch.setattr(frontend.DropIdentity, "run", scaling)
    with pytest.raises(VerificationError, match="drop-identity"):
        prune(str(path), ratio=0.5)


def test_a_search_and_its_verification_share_one_oracle(tmp_path, monkeypatch):
    """The gated reference a search evaluates candidates with also proves the pruned model:
    one oracle per run."""
    from onnxprune.verify import oracle as oracle_module

    path = tmp_path / "m.onnx"
    onnx.save(_model(), str(path))
    built = []
    real = oracle_module.Oracle.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs.get("search", False))
        real(self, *args, **kwargs)

    monkeypatch.setattr(oracle_module.Oracle, "__init__", counting)
    x = np.random.default_rng(0).standard_normal((16, 3, 24, 24)).astype(np.float32)
    result = prune(str(path), calib={"x": x}, metric="cosine", strategy="sensitivity",
                   target_params=0.3)
    assert result.verification.passed and built == [True]
    built.clear()
    assert prune(str(path), ratio=0.5).verification.passed and built == [False]
