"""Interrupts keep the command line's contract: SIGINT/SIGTERM at any time leave nothing
behind and exit 128 + the signal, or, once the output is in place, report it and exit 0; a
signal ends even a long onnxruntime run at once."""

import os
import signal
import subprocess
import sys
import time

import onnx
import pytest
from test_cli_contract import cli, sha


@pytest.fixture
def model(demo_file):
    return demo_file


def test_an_interrupt_swallowed_inside_a_pass_still_stops_the_run(model, tmp_path, capsys,
                                                                  monkeypatch):
    """onnxruntime may turn an interrupt into another exception that broad handlers swallow
    (as the normalization check does): the flag still stops the run before the write."""
    from onnxprune import interrupts
    from onnxprune.pipeline.passes import frontend

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
    from onnxprune.pipeline.passes import output

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
