"""Measuring on a device over SSH (``bench --host``, ``--target-host``), against a real OpenSSH
server on 127.0.0.1 started for these tests (``sshd.py``): the remote bench equals a local one
within noise, a latency target is met with tables measured there, nothing is left there, and
each failure is one line with its own exit code."""

import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import sshd
from conftest import convnet

from onnxprune.api import prune
from onnxprune.bench.on_device import alternate, run_job
from onnxprune.bench.remote import Host
from onnxprune.bench.runner import run_bench
from onnxprune.cli.main import main
from onnxprune.errors import (
    EXIT_HOST_AUTH,
    EXIT_HOST_RUNTIME,
    EXIT_HOST_TIMEOUT,
    EXIT_HOST_UNREACHABLE,
    EXIT_OK,
    EXIT_USAGE,
)
from onnxprune.zoo.builder import GraphBuilder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        s = sshd.start(tmp_path_factory.mktemp("sshd"))
    except RuntimeError as err:
        pytest.skip(f"no OpenSSH server on 127.0.0.1: {err}")
    yield s
    s.stop()


@pytest.fixture
def device(server, monkeypatch, tmp_path):
    """The loopback device: this machine's Python there, a cache of latency tables here."""
    monkeypatch.setenv("ONNXPRUNE_SSH_CONFIG", str(server.config))
    monkeypatch.setenv("ONNXPRUNE_REMOTE_PYTHON", sys.executable)
    monkeypatch.setenv("ONNXPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    before = _remote_folders()
    yield server
    assert _remote_folders() == before  # every folder made there was removed


def _remote_folders() -> set[str]:
    return set(glob.glob(str(Path(tempfile.gettempdir()) / "onnxprune-*")))


def test_the_device_script_times_groups_alternately():
    calls = []
    times = alternate([lambda: calls.append("a"), lambda: calls.append("b")], warmup=2,
                      repeat=3)
    assert calls == ["a", "b"] * 5 and [len(t) for t in times] == [3, 3]
    b = GraphBuilder(seed=0)
    x = b.input("x", [1, 8])
    m = b.build([b.relu(x)]).SerializeToString()
    feeds = {"x": np.ones((1, 8), np.float32)}
    out = run_job({"models": [m, m, m], "feeds": [feeds] * 3, "groups": [[0, 2], [1]],
                   "warmup": 0, "repeat": 4})
    assert [len(t) for t in out] == [4, 4, 4] and all(v > 0 for t in out for v in t)


def test_the_remote_bench_equals_a_local_one_within_noise(device, tmp_path):
    model = convnet(tmp_path / "m.onnx")
    half = prune(model, tmp_path / "half.onnx", ratio=0.5).output
    local = run_bench([model, half], seconds=0.5)
    remote = run_bench([model, half], seconds=0.5, host=device.spec)
    assert remote.environment["host"] == device.spec
    assert remote.environment["processor"] and remote.environment["cpu_count"] >= 1
    assert [r.model for r in remote.rows] == [r.model for r in local.rows]
    for lo, re in zip(local.rows, remote.rows, strict=True):
        assert re.runs >= 5 and re.peak_mem is None  # host memory is not measured there
        assert re.macs == lo.macs and re.params == lo.params
        # the same sessions on the same machine: the medians agree within noise
        assert 0.5 < re.p50 / lo.p50 < 2.0
    # the pruned model runs faster there as here
    assert remote.rows[1].p50 < remote.rows[0].p50


def test_bench_host_on_the_command_line(device, tmp_path, capsys):
    model = convnet(tmp_path / "m.onnx")
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--host", device.spec, "--seconds", "0.2",
                 "--json", str(out)]) == EXIT_OK
    data = json.loads(out.read_text())
    assert data["environment"]["host"] == device.spec and data["results"][0]["runs"] >= 5


def test_a_latency_target_is_met_on_the_device(device, tmp_path):
    model = convnet(tmp_path / "m.onnx")
    r = prune(model, tmp_path / "a.onnx", target="latency=0.6", target_host=device.spec)
    lat = r.selection["latency"]
    assert lat["host"] == device.spec and lat["table"]["measured"] > 0
    assert lat["achieved"] <= 0.6 * 1.05 and r.verification.passed
    # the tables are cached under the device's fingerprint, as measured there
    cache = json.loads(Path(lat["table"]["file"]).read_text())
    assert cache["device"]["provider"] == "CPUExecutionProvider" and cache["ms"]
    again = prune(model, tmp_path / "b.onnx", target="latency=0.6", target_host=device.spec)
    assert again.selection["latency"]["table"]["measured"] == 0


def test_prune_bench_runs_on_the_target_host(device, tmp_path, capsys):
    model = convnet(tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    assert main(["prune", str(model), "-o", str(out), "--ratio", "0.5", "--bench",
                 "--bench-seconds", "0.2", "--target-host", device.spec, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["bench"]["environment"]["host"] == device.spec and out.is_file()
    assert [r["runs"] >= 5 for r in data["bench"]["results"]] == [True, True]


def _cli(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_unreachable_host_is_exit_10(device, tmp_path, capsys):
    model = convnet(tmp_path / "m.onnx")
    closed = sshd._free_port()
    code, line = _cli(["bench", str(model), "--host", f"me@127.0.0.1:{closed}"], capsys)
    assert code == EXIT_HOST_UNREACHABLE and "refused" in line.lower()


def test_a_refused_login_is_exit_11(device, tmp_path, capsys, monkeypatch):
    stranger = sshd._keys(tmp_path, "stranger")
    monkeypatch.setenv("ONNXPRUNE_SSH_CONFIG", str(device.client_config(stranger, "s")))
    model = convnet(tmp_path / "m.onnx")
    code, line = _cli(["bench", str(model), "--host", device.spec], capsys)
    assert code == EXIT_HOST_AUTH and "Permission denied" in line


def test_no_onnxruntime_there_is_exit_12(device, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    monkeypatch.setenv("ONNXPRUNE_REMOTE_PYTHON", str(bare / "bin" / "python"))
    model = convnet(tmp_path / "m.onnx")
    code, line = _cli(["bench", str(model), "--host", device.spec], capsys)
    assert code == EXIT_HOST_RUNTIME and "numpy" in line
    code, line = _cli(["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--target",
                       "latency=0.5", "--target-host", device.spec], capsys)
    assert code == EXIT_HOST_RUNTIME and not (tmp_path / "o.onnx").exists()


def test_a_command_past_its_time_is_exit_13(device, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_REMOTE_TIMEOUT", "3")
    model = convnet(tmp_path / "m.onnx")
    code, line = _cli(["bench", str(model), "--host", device.spec, "--seconds", "8"], capsys)
    assert code == EXIT_HOST_TIMEOUT and "ONNXPRUNE_REMOTE_TIMEOUT" in line


def test_a_bad_host_is_a_usage_error(tmp_path, capsys):
    model = convnet(tmp_path / "m.onnx")
    for argv in (["bench", str(model), "--host", "a@b@c"],
                 ["prune", str(model), "--target", "latency=0.5", "--target-host", "x:99999"]):
        try:  # argparse exits; a schema's check returns the code
            code = main(argv)
        except SystemExit as e:
            code = e.code
        assert code == EXIT_USAGE
        assert capsys.readouterr().err.count("error:") == 1


def test_only_the_folder_it_made_is_removed(device):
    with Host(device.spec) as host:
        folder = Path(host.folder)
        assert folder.is_dir() and (folder / "on_device.py").is_file()
        assert host.info()["onnxruntime"]
    assert not folder.exists() and folder.parent.is_dir()
