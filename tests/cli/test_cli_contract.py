"""The command line contract, one test per case: exit codes that match what was written, one
line per error, warnings said once, inputs never modified, nothing left behind."""

import hashlib
import json
import os

import numpy as np
import onnx
import pytest

from onnxprune.cli.main import main
from onnxprune.errors import (
    EXIT_CONSTRAINT,
    EXIT_OUTPUT,
    EXIT_UNSUPPORTED,
    EXIT_USAGE,
)
from onnxprune.zoo.builder import demo_cnn


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def model(demo_file):
    return demo_file


@pytest.fixture
def batch1(tmp_path):
    """demo_cnn as the torch exporter writes by default: a fixed batch of one."""
    m = demo_cnn()
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    del m.graph.value_info[:]
    path = tmp_path / "b1.onnx"
    onnx.save(m, str(path))
    return path


def cli(capsys, *argv):
    """(exit code, stdout, stderr lines) of one command."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- output paths -----------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_a_device_node_is_never_replaced(model, capsys):
    before = sha(model)
    code, _, err = cli(capsys, "prune", model, "-o", "/dev/null")
    assert code == EXIT_OUTPUT and len(err) == 1
    assert "is a character device; refusing to replace it" in err[0]
    assert not os.path.isfile("/dev/null") and sha(model) == before


def test_an_unwritable_system_folder_is_one_line(model, capsys, tmp_path):
    code, _, err = cli(capsys, "prune", model, "-o", "/proc/x.onnx")
    assert code == EXIT_OUTPUT and len(err) == 1 and "not writable" in err[0]
    assert "internal error" not in err[0]


def test_a_missing_output_folder_is_found_before_any_work(model, capsys, tmp_path, monkeypatch):
    import onnxprune.ir.io

    def no_work(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(onnxprune.ir.io, "load_model", no_work)
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "no" / "x.onnx")
    assert code == EXIT_OUTPUT and len(err) == 1
    assert "output folder" in err[0] and ".onnxprune-" not in err[0]
    assert files(tmp_path) == ["m.onnx"]


def test_the_input_is_refused_before_any_work(model, capsys, monkeypatch):
    import onnxprune.ir.io

    monkeypatch.setattr(onnxprune.ir.io, "load_model", lambda *a: pytest.fail("loaded"))
    code, _, err = cli(capsys, "prune", model, "-o", model)
    assert code == EXIT_OUTPUT and len(err) == 1 and "--force" in err[0]


# -- calibration data ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [
    ["--criterion", "activation"], ["--criterion", "apoz"], ["--compensate"],
    ["--recover", "distill", "--distill-steps", "5"],
    ["--strategy", "sensitivity", "--target-params", "0.3"],
])
def test_calibration_on_a_fixed_batch_of_one(batch1, tmp_path, capsys, flags):
    calib = tmp_path / "c.npz"
    np.savez(calib, image=np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "prune", batch1, "-o", out, "--calib", calib, "--quiet", *flags)
    assert code == 0, err
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_calib_random_gives_the_samples_asked_on_a_fixed_batch(batch1, tmp_path, capsys):
    code, out, _ = cli(capsys, "prune", batch1, "-o", tmp_path / "o.onnx", "--calib-random", 9,
                       "--json")
    data = json.loads(out)
    # 9 samples asked: 7 searched on, 2 held out (the default share 0.2)
    assert code == 0 and data["quality"]["samples"] == 7
    assert data["stages"]["samples"] == {"calib": 7, "heldout": 2}


def _calib(tmp_path, array) -> str:
    path = tmp_path / "c.npz"
    np.savez(path, image=array)
    return path


def test_calibration_of_another_float_type_is_cast_with_a_note(model, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32))  # float64
    code, out, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--calib",
                         _calib(tmp_path, x), "--json")
    assert code == 0
    assert err == ["onnxprune: warning: calibration array 'image' is float64; cast to float32 "
                   "as the model expects"]
    assert json.loads(out)["warnings"] == [err[0].removeprefix("onnxprune: warning: ")]


@pytest.mark.parametrize("array, words", [
    (np.zeros((0, 3, 32, 32), np.float32), "holds no samples"),
    (np.full((2, 3, 32, 32), np.nan, np.float32), "NaN or infinite"),
    (np.full((2, 3, 32, 32), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((2, 3, 32, 32), bool), "is bool; the model input is float32"),
])
def test_bad_calibration_data_is_one_line(model, tmp_path, capsys, array, words):
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "prune", model, "-o", out, "--calib", _calib(tmp_path, array),
                       "--metric", "cosine")
    assert code == EXIT_USAGE and len(err) == 1 and words in err[0]
    assert not out.exists()


# -- recipes, constraints, targets, metrics ---------------------------------------------------


@pytest.mark.parametrize("recipe", ["recover-compensate", "recover-distill"])
def test_recovery_recipes_print_every_stage(model, tmp_path, capsys, recipe):
    out = tmp_path / "o.onnx"
    code, text, err = cli(capsys, "run", recipe, model, "-o", out, "--calib-random", 8,
                          "--set", "distill.steps=5" if "distill" in recipe else "select.ratio=0.5",
                          "--quiet")
    assert code == 0, err
    stage = "distill" if "distill" in recipe else "compensate"
    # both data sets, every stage up to recovery (or the recovery undone)
    for line in ("calibration samples: ", "held-out samples: "):
        row = next(r for r in text.splitlines() if line in r)
        assert "(unpruned) -> " in row and "(pruned) -> " in row and f"({stage}" in row
    assert f"wrote {out}" in text and out.exists()


def test_an_unreachable_constraint_writes_nothing(model, tmp_path, capsys):
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "prune", model, "-o", out, "--calib-random", 8, "--strategy",
                       "sensitivity", "--constraint", "cosine>=1.5", "--quiet")
    assert code == EXIT_CONSTRAINT and len(err) == 1
    assert "cannot be met: the unpruned model scores cosine 1" in err[0]
    assert not out.exists()


def test_a_target_beyond_the_caps_is_a_warning(model, tmp_path, capsys):
    code, out, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--strategy",
                         "global", "--target-params", "0.99", "--json")
    data = json.loads(out)
    assert code == 0 and len(err) == 1 and err[0].startswith("onnxprune: warning: target")
    reached = data["selection"]["params_reduction"]
    assert reached < 0.99 and f"reached {reached:.3g}" in err[0]


def test_accuracy_without_labels_is_one_line(model, tmp_path, capsys):
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--calib-random", 4,
                       "--metric", "accuracy")
    assert code == EXIT_USAGE and len(err) == 1 and "needs labels" in err[0]


def test_user_metrics_of_the_wrong_signature_or_failing(model, tmp_path, capsys):
    (tmp_path / "um.py").write_text(
        "def one(outputs):\n    return 1.0\n"
        "def boom(outputs, batch):\n    raise KeyError('x')\n"
        "def nan(outputs, batch):\n    return float('nan')\n")
    for func, words in (("one", "must take (outputs, batch)"), ("boom", "raised KeyError"),
                        ("nan", "is nan")):
        code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--calib-random",
                           4, "--metric", f"{tmp_path / 'um.py'}:{func}", "--strategy",
                           "sensitivity")
        assert code == EXIT_USAGE and len(err) == 1 and words in err[0], (func, err)
    assert not (tmp_path / "o.onnx").exists()


def test_tensorrt_is_named(model, tmp_path, capsys):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT is available here")
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--provider",
                       "cpu,tensorrt")
    assert code == EXIT_UNSUPPORTED and len(err) == 1 and "TensorRT" in err[0]


# -- flags that would do nothing ----------------------------------------------------------------


def test_exclude_matching_nothing_is_a_warning(model, tmp_path, capsys):
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--exclude", "nope*",
                       "--quiet")
    assert code == 0 and err == [
        "onnxprune: warning: exclude 'nope*' matches no node name (names look like "
        "'stem'); nothing was excluded by it"]


def test_zero_workers_is_usage(model, tmp_path, capsys):
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--executor",
                       "process", "--workers", 0)
    assert code == EXIT_USAGE and err == ["onnxprune: error: --workers: must be >= 1, got 0"]


def test_distill_boundaries_need_components_before_any_work(model, tmp_path, capsys):
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--calib-random", 4,
                       "--recover", "distill", "--distill-boundaries")
    assert code == EXIT_USAGE and len(err) == 1 and "components" in err[0]


def test_scope_depth_beyond_the_depth_is_a_warning(model, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    code, out, err = cli(capsys, "analyze", model, "--components", "auto", "--scope-depth", 9,
                         "--json")
    assert code == 0 and len(err) == 1 and "beyond the model's deepest name scope" in err[0]


def test_bn_fallback_is_said_once(model, tmp_path, capsys):
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--criterion", "bn",
                       "--quiet")
    assert code == 0 and len(err) == 1 and "ranked by L2 magnitude instead" in err[0]


def test_demo_ratio_is_checked_first(tmp_path, capsys):
    code, _, err = cli(capsys, "demo", "--ratio", 1, "--out-dir", tmp_path)
    assert code == EXIT_USAGE and len(err) == 1 and files(tmp_path) == []


# -- quantized models -------------------------------------------------------------------------


def test_quantized_weights_are_counted(model, tmp_path, capsys):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{"image": rng.random((1, 3, 32, 32), np.float32)}
                              for _ in range(2)])

        def get_next(self):
            return next(self.data, None)

    q = tmp_path / "q.onnx"
    quantize_static(str(model), str(q), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)
    capsys.readouterr()
    _, out, _ = cli(capsys, "analyze", model, "--json")
    floats = json.loads(out)
    _, out, _ = cli(capsys, "analyze", q, "--json")
    quantized = json.loads(out)
    # the int8 weights, plus scales and zero points; the same MACs behind DequantizeLinear
    assert floats["params"] <= quantized["params"] < 1.1 * floats["params"]
    assert quantized["macs"] == floats["macs"] > 0


# -- progress ---------------------------------------------------------------------------------


def test_progress_lines_when_stderr_is_not_a_terminal(model, tmp_path, capsys, monkeypatch):
    from onnxprune import progress

    monkeypatch.setattr(progress, "INTERVAL", 0.05)
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--calib-random", 8,
                       "--strategy", "sensitivity", "--target-params", "0.3")
    assert code == 0
    assert err and all(line.startswith("onnxprune: 0:") for line in err)
    assert any("pass " in line for line in err)
    code, _, err = cli(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--calib-random", 8,
                       "--strategy", "sensitivity", "--target-params", "0.3", "--quiet")
    assert code == 0 and err == []
