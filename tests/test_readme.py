"""The README's examples run as written: every ``$ onnxprune ...`` command of the README and
then of docs/guide.md (which continues its worked example), in order, in an empty folder (the
zoo and data commands at the top make the files the others use), then the Python block."""

import re
import shlex
from pathlib import Path

import pytest

from onnxprune.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
README, GUIDE = ROOT / "README.md", ROOT / "docs" / "guide.md"


def _text() -> str:
    return README.read_text() + "\n" + GUIDE.read_text()


def readme_commands() -> list[str]:
    commands, current = [], None
    for line in _text().splitlines():
        text = line.strip()
        if current is not None:  # a continuation line
            current += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                commands.append(current)
                current = None
            continue
        if line.startswith("    $ onnxprune"):
            body = text[2:]
            if body.endswith("\\"):
                current = body.rstrip("\\").strip()
            else:
                commands.append(body)
    return commands


def readme_python() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _text(), re.S)


def test_readme_lists_the_examples():
    commands = readme_commands()
    assert shlex.split(commands[0], comments=True) == ["onnxprune", "zoo", "list"]
    assert any(c.startswith("onnxprune bench") for c in commands)
    assert len(commands) >= 15 and len(readme_python()) == 1


def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in readme_commands():
        argv = shlex.split(command, comments=True)
        assert argv[0] == "onnxprune"
        code = main(argv[1:])
        err = capsys.readouterr().err
        assert code == 0, f"{command!r} exited {code}: {err.strip()[-300:]}"
        assert "error" not in err, (command, err)
    for name in ("model.onnx", "ae.onnx", "agent.onnx", "digits.npz", "small.onnx",
                 "bench.json", "bench.png", "bench.md"):
        assert (tmp_path / name).is_file(), name
    for block in readme_python():
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr().out
    assert "'metric': 'psnr'" in out


@pytest.fixture(autouse=True)
def _no_terminal_progress(monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_PROGRESS_INTERVAL", "3600")
