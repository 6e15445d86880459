"""A remote device reached over SSH (the system's OpenSSH client): the device script
(``on_device.py``) and the models to time are copied into a temporary folder there, run with
the device's Python, and the folder is removed when the work is done. Nothing else is sent
and nothing else is run there.

``USER@HOST[:PORT]`` names the device (a host of the SSH configuration too). Settings from
the environment: ``ONNXPRUNE_SSH_CONFIG`` (an ssh_config file: ``ssh -F``), ``ONNXPRUNE_REMOTE_PYTHON``
(the device's Python, default ``python3``), ``ONNXPRUNE_REMOTE_TIMEOUT`` (seconds one
command may take there, default 600). Errors are one line each, with their own exit code:
the host cannot be reached (10), refuses the login (11), has no Python with numpy and
onnxruntime (12), or a command there ran past the time limit (13).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import (
    HostAuthError,
    HostRuntimeError,
    HostTimeoutError,
    HostUnreachableError,
    UnsupportedModelError,
    UsageError,
)
from . import on_device

SPEC = re.compile(r"^(?:(?P<user>[^@\s:/]+)@)?(?P<host>[^@\s:/]+|\[[0-9a-fA-F:]+\])"
                  r"(?::(?P<port>\d{1,5}))?$")
CONNECT_SECONDS = 15
AUTH = ("Permission denied", "Host key verification failed", "Too many authentication failures",
        "REMOTE HOST IDENTIFICATION HAS CHANGED")


def parse(spec: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of ``USER@HOST[:PORT]``; ValueError when it is not one."""
    m = SPEC.match(spec.strip())
    port = int(m["port"]) if m and m["port"] else None
    if not m or (port is not None and not 0 < port < 65536):
        raise ValueError(f"expected USER@HOST[:PORT], got {spec!r}")
    return m["user"], m["host"].strip("[]"), port


class Host:
    """A device over SSH, as a context: entering makes the temporary folder there (checking
    the login and the device's Python), leaving removes it. ``time`` runs a timing job."""

    def __init__(self, spec: str):
        self.spec = spec
        try:
            self.user, self.host, self.port = parse(spec)
        except ValueError as err:
            raise UsageError(f"host: {err}") from None
        if shutil.which("ssh") is None or shutil.which("scp") is None:
            raise UsageError("--target-host needs the OpenSSH client (ssh, scp) on this machine")
        self.python = os.environ.get("ONNXPRUNE_REMOTE_PYTHON", "python3")
        try:
            self.timeout = float(os.environ.get("ONNXPRUNE_REMOTE_TIMEOUT", "600"))
        except ValueError:
            raise UsageError("ONNXPRUNE_REMOTE_TIMEOUT: expected seconds, got "
                             f"{os.environ['ONNXPRUNE_REMOTE_TIMEOUT']!r}") from None
        self.config = os.environ.get("ONNXPRUNE_SSH_CONFIG")
        self.folder: str | None = None
        self.sent: set[str] = set()
        self.device: dict | None = None
        self._local: tempfile.TemporaryDirectory | None = None

    # -- ssh --------------------------------------------------------------------------------
    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_SECONDS}",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._local.name}/c",
                "-o", "ControlPersist=60"]
        return (["-F", self.config] if self.config else []) + opts

    def _target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _call(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise HostTimeoutError(f"{self.spec}: {what} ran past {self.timeout:g} s "
                                   "(ONNXPRUNE_REMOTE_TIMEOUT)") from None
        if proc.returncode == 255:  # ssh's own failure: connection or authentication
            said = _last_line(proc.stderr) or "ssh failed"
            cls = HostAuthError if any(a in proc.stderr for a in AUTH) else HostUnreachableError
            raise cls(f"{self.spec}: {said}")
        return proc

    def ssh(self, command: str, what: str) -> subprocess.CompletedProcess:
        port = ["-p", str(self.port)] if self.port else []
        return self._call(["ssh", *self._options(), *port, self._target(), command], what)

    def send(self, files: list[Path]) -> None:
        if not files:
            return
        port = ["-P", str(self.port)] if self.port else []
        proc = self._call(["scp", "-q", *self._options(), *port, *map(str, files),
                           f"{self._target()}:{self.folder}/"], "copying files")
        if proc.returncode != 0:
            raise HostRuntimeError(f"{self.spec}: copying files failed: "
                                   f"{_last_line(proc.stderr)}")

    # -- the folder ----------------------------------------------------------------------------
    def __enter__(self) -> Host:
        self._local = tempfile.TemporaryDirectory(prefix="onnxprune-ssh-")
        try:
            make = "import tempfile; print(tempfile.mkdtemp(prefix='onnxprune-'))"
            proc = self.ssh(f"{shlex.quote(self.python)} -c {shlex.quote(make)}",
                            "making a folder")
            folder = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
            if not folder:
                raise HostRuntimeError(f"{self.spec}: {self.python} does not run there: "
                                       f"{_last_line(proc.stderr) or 'no output'}")
            self.folder = folder[0]
            script = Path(self._local.name) / "on_device.py"
            shutil.copyfile(on_device.__file__, script)
            self.send([script])
            self.info()  # the device's Python runs numpy and onnxruntime, or one line now
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the folder there (only it), end the shared connection, forget local files."""
        try:
            if self.folder is not None:
                self.ssh(f"rm -rf -- {shlex.quote(self.folder)}", "removing its folder")
                self.folder = None
        except (HostUnreachableError, HostAuthError, HostTimeoutError):
            pass  # the device went away: nothing more can be removed there
        finally:
            if self._local is not None:
                subprocess.run(["ssh", *self._options(), "-O", "exit", self._target()],
                               capture_output=True, check=False, timeout=CONNECT_SECONDS)
                self._local.cleanup()
                self._local = None

    def info(self) -> dict:
        """``on_device.device_info()`` of the device (asked once)."""
        if self.device is None:
            proc = self.ssh(f"cd {shlex.quote(self.folder)} && {shlex.quote(self.python)} "
                            "on_device.py --device", "asking what the device is")
            self.device = json.loads(self._checked(proc).strip().splitlines()[-1])
        return self.device

    def _checked(self, proc: subprocess.CompletedProcess) -> str:
        """The device script's output, or its failure as one line (with its exit code)."""
        said = _last_line(proc.stderr)
        if proc.returncode == on_device.NO_RUNTIME:
            raise HostRuntimeError(f"{self.spec}: {said} (the device needs numpy and "
                                   "onnxruntime: pip install onnxruntime)")
        if proc.returncode in (on_device.NO_PROVIDER, on_device.MODEL_FAILS):
            raise UnsupportedModelError(f"{self.spec}: {said}")
        if proc.returncode != 0 or not proc.stdout.strip():
            raise HostRuntimeError(f"{self.spec}: the device script failed "
                                   f"(exit {proc.returncode}): {said or 'no message'}")
        return proc.stdout

    # -- jobs ------------------------------------------------------------------------------------
    def _file(self, data: bytes, suffix: str) -> tuple[str, Path | None]:
        """The name of ``data`` there (by content), and the local file to send when new."""
        name = hashlib.sha256(data).hexdigest()[:24] + suffix
        if name in self.sent:
            return name, None
        path = Path(self._local.name) / name
        path.write_bytes(data)
        self.sent.add(name)
        return name, path

    def time(self, models: list[bytes], feeds: list[dict], **settings) -> list[list[int]]:
        """Nanoseconds per run of each model on its feeds, timed there (``on_device.run_job``
        settings: groups, providers, threads, warmup, repeat, seconds, min_rounds,
        max_rounds)."""
        names, new = [], []
        for data, suffix in [(m, ".onnx") for m in models] + [(_npz(f), ".npz") for f in feeds]:
            name, path = self._file(data, suffix)
            names.append(name)
            new += [path] if path is not None else []
        job = {"models": names[:len(models)], "feeds": names[len(models):], **settings}
        job_name, job_path = self._file(json.dumps(job).encode(), ".json")
        self.send(new + ([job_path] if job_path is not None else []))
        run = (f"cd {shlex.quote(self.folder)} && {shlex.quote(self.python)} on_device.py "
               f"{shlex.quote(job_name)}")
        out = json.loads(self._checked(self.ssh(run, "timing models")).strip().splitlines()[-1])
        self.device = out["device"]
        return out["times_ns"]


def _npz(feeds: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in feeds.items()})
    return buf.getvalue()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
