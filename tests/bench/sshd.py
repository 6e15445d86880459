"""A real OpenSSH server on 127.0.0.1 for the remote-device tests: Debian's openssh-server
(installed with apt-get when it is missing and this user may), a generated host key and a
generated client key, a configuration of its own on a free port; stopped after."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def installed() -> str | None:
    """The sshd binary, installing openssh-server where it is missing and apt-get may run;
    None (with the reason printed) where it cannot be had."""
    found = shutil.which("sshd") or (SSHD if Path(SSHD).exists() else None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("sshd: not installed, and apt-get cannot install it here (not root or no apt)")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                 "openssh-server"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                           check=False)
        if r.returncode != 0:
            print(f"sshd: {' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")
            return None
    return SSHD if Path(SSHD).exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keys(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True)
    return key


@dataclass
class Server:
    spec: str  # USER@127.0.0.1:PORT
    port: int
    config: Path  # an ssh_config file for the client (ONNXPRUNE_SSH_CONFIG)
    folder: Path
    proc: subprocess.Popen

    def client_config(self, key: Path, name: str) -> Path:
        """Another client configuration, logging in with ``key``."""
        path = self.folder / name
        path.write_text(self.config.read_text().replace(str(self.folder / "client"), str(key)))
        return path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(folder: Path) -> Server:
    exe = installed()
    if exe is None:
        raise RuntimeError("sshd cannot be installed here")
    host, client = _keys(folder, "host"), _keys(folder, "client")
    (folder / "authorized_keys").write_text(Path(f"{client}.pub").read_text())
    port = _free_port()
    (folder / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host}
AuthorizedKeysFile {folder}/authorized_keys
PidFile {folder}/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
""")
    (folder / "known_hosts").write_text(
        f"[127.0.0.1]:{port} {' '.join(Path(f'{host}.pub').read_text().split()[:2])}\n")
    config = folder / "ssh_config"
    config.write_text(f"""Host *
  IdentityFile {client}
  IdentitiesOnly yes
  UserKnownHostsFile {folder}/known_hosts
  StrictHostKeyChecking yes
  LogLevel ERROR
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege-separation folder
    proc = subprocess.Popen([exe, "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode()[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("sshd did not listen within 15 s")
    return Server(f"{getpass.getuser()}@127.0.0.1:{port}", port, config, folder, proc)
