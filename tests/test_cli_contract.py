"""The command line contract, one test per case: exit codes that match what was written, one
line per error, warnings said once, inputs never modified, nothing left behind."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

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


# -- interrupts -------------------------------------------------------------------------------


def test_an_interrupt_swallowed_inside_a_pass_still_stops_the_run(model, tmp_path, capsys,
                                                                  monkeypatch):
    """onnxruntime may turn an interrupt into another exception that broad handlers swallow
    (as the normalization check does): the flag still stops the run before the write."""
    from onnxprune import interrupts
    from onnxprune.pipeline import frontend

    def swallowing(self, ctx):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except BaseException:  # noqa: BLE001 - what a broad handler does
            pass
        return frontend.PassResult(False)

    monkeypatch.setattr(frontend.CheckNormalization, "run", swallowing)
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "prune", model, "-o", out)
    assert code == 130 and not out.exists() and len(err) == 1
    assert "interrupted (SIGINT) during pass check-normalize; nothing was written" in err[0]
    assert interrupts.pending() is None  # the flag belongs to that run only


@pytest.mark.parametrize("sig, fractions", [(signal.SIGINT, (0.1, 0.3, 0.5, 0.7, 0.9)),
                                            (signal.SIGTERM, (0.4, 0.8))])
def test_interrupts_at_any_time_never_leave_a_mismatch(tmp_path, sig, fractions):
    """A real process interrupted at many points of a prune: either it finished (exit 0, a
    valid model) or it says so (128 + signal, no model); the input never changes."""
    from onnxprune.zoo.builder import GraphBuilder

    b = GraphBuilder(seed=0)
    x = b.input("x", ["batch", 3, 96, 96])
    for i, (cin, cout) in enumerate(((3, 64), (64, 128), (128, 256), (256, 256), (256, 64))):
        x = b.relu(b.conv(x, cin, cout, name=f"conv{i}"))
    src = tmp_path / "in.onnx"
    onnx.save(b.build([x], "chain"), str(src))
    before = sha(src)
    outcomes = set()
    command = [sys.executable, "-m", "onnxprune", "prune", str(src), "-o",
               str(tmp_path / "whole.onnx"), "--quiet"]
    runs = []
    for _ in range(2):  # the faster of two: a run slowed by a busy machine would put every
        start = time.perf_counter()  # interrupt after the end
        subprocess.run(command, check=True, capture_output=True)
        runs.append(time.perf_counter() - start)
    whole = min(runs)  # interrupts land at fractions of an uninterrupted run
    for delay in (f * whole for f in fractions):
        out = tmp_path / f"o{delay}.onnx"
        p = subprocess.Popen([sys.executable, "-m", "onnxprune", "prune", str(src), "-o",
                              str(out), "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        if p.returncode == 0:
            onnx.checker.check_model(onnx.load(str(out)), full_check=True)
            outcomes.add("done")
        else:
            assert p.returncode == 128 + sig, (delay, p.returncode, err)
            assert not out.exists() and "nothing was written" in err, err
            outcomes.add("interrupted")
        assert sha(src) == before
        assert not [f for f in os.listdir(tmp_path) if f.startswith(".onnxprune-")]
    assert "interrupted" in outcomes, (runs, outcomes)


def test_an_interrupt_after_the_write_reports_the_model_and_exits_0(model, tmp_path, capsys,
                                                                   monkeypatch):
    """The output is complete once renamed into place: an interrupt then (here in the report
    pass that follows) says so and exits 0, never 130 with a file in place."""
    from onnxprune.pipeline import output

    def interrupted(self, ctx):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)

    monkeypatch.setattr(output.Report, "run", interrupted)
    out = tmp_path / "o.onnx"
    code, _, err = cli(capsys, "prune", model, "-o", out, "--report", tmp_path / "rep")
    assert code == 0 and out.exists() and onnx.load(str(out)).graph.node
    assert len(err) == 1 and f"after writing {out} (complete and verified)" in err[0]


def test_an_interrupt_inside_the_writability_probe_leaves_no_probe_file(tmp_path, monkeypatch):
    from onnxprune import interrupts
    from onnxprune.ir import io as oio

    real_close = os.close

    def close_then_interrupt(fd):
        signal.raise_signal(signal.SIGINT)  # to this thread: between create and unlink
        real_close(fd)

    monkeypatch.setattr(oio.os, "close", close_then_interrupt)
    with pytest.raises(interrupts.Interrupted), interrupts.guarded():
        oio.output_target(tmp_path / "o.onnx")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_deferred_section_holds_an_interrupt_another_thread_receives():
    """The kernel may hand SIGINT to any thread not blocking it; the section still ends
    before the interrupt is raised."""
    import threading

    from onnxprune import interrupts

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)  # a thread that does not block it
    helper.start()
    steps = []
    try:
        with pytest.raises(interrupts.Interrupted), interrupts.guarded():
            with interrupts.deferred():
                signal.pthread_kill(helper.ident, signal.SIGINT)  # another thread gets it
                time.sleep(0.2)  # the main thread runs the handler in here
                steps.append("section ended")
    finally:
        stop.set()
    assert steps == ["section ended"]


LONG_RUN = """
import sys, time
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnxprune import interrupts
from onnxprune.ir.runtime import run_batched, session

n = 1024
w = numpy_helper.from_array(np.eye(n, dtype=np.float32), "w")
nodes, x = [], "x"
for i in range(240):  # ~0.5 TFLOP: seconds on a 2-core machine
    nodes.append(helper.make_node("MatMul", [x, "w"], ["y%d" % i]))
    x = "y%d" % i
model = helper.make_model(helper.make_graph(
    nodes, "long", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
    [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n])], [w]),
    opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
sess = session(model)
feeds = {"x": np.ones((n, n), np.float32)}
start = time.perf_counter()
run_batched(sess, feeds)  # unguarded: the whole run
print("whole", time.perf_counter() - start, flush=True)
try:
    with interrupts.guarded():
        print("ready", flush=True)
        run_batched(sess, feeds)
    print("finished", flush=True)
except BaseException as err:
    print("stopped", type(err).__name__, flush=True)
    sys.exit(143)
"""


def test_a_signal_ends_a_long_onnxruntime_run_at_once():
    """Python runs its signal handlers between bytecodes only; during a long onnxruntime run a
    SIGTERM waited for the run to end (5 s into a sensitivity search). The guarded run's
    watcher terminates the run instead: the process stops within a second (a real process,
    signalled from outside)."""
    p = subprocess.Popen([sys.executable, "-c", LONG_RUN], stdout=subprocess.PIPE, text=True)
    whole = float(p.stdout.readline().split()[1])
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    start = time.perf_counter()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    took = time.perf_counter() - start
    assert p.returncode == 143 and out.startswith("stopped"), out
    assert took < min(1.5, 0.6 * whole), (took, whole)
