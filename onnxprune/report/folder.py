"""The report folder: report.json (the run's JSON object), the figures (PNG files beside the
page) and report.html, checked before any work and written atomically once the model is."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import __version__, interrupts
from ..errors import OutputError, UsageError
from ..ir import io
from . import plots
from .build import DATA, render_html

PAGE = "report.html"
# The figures a report may write (and so remove again when a new report leaves them out).
IMAGE = re.compile(r"^(widths|coefficients|stages|passes|bench|curve-\d+)\.png$")


def is_report_file(name: str) -> bool:
    return name in (PAGE, DATA) or IMAGE.match(name) is not None


def check_matplotlib() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
    except ImportError:
        raise UsageError("a report needs matplotlib: pip install 'onnxprune[bench]'") from None


def check_target(folder: str | os.PathLike) -> Path:
    """Where a report goes, checked before any work: a folder (existing, or new in an existing
    one) that accepts files; and matplotlib, to draw the figures."""
    out = io.folder_target(folder)
    check_matplotlib()
    return out


def check_apart(folder: str | os.PathLike, model: str | os.PathLike) -> None:
    """The model is not written in ``folder`` under a name the report writes."""
    p = Path(model)
    with contextlib.suppress(OSError):
        if p.resolve().parent == Path(folder).resolve() and is_report_file(p.name):
            raise OutputError(f"{model}: the report in {folder} writes a file of that name; "
                              "give the model another name or the report another folder")


def _image_sizes(folder: Path, names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Pixel sizes from the PNG headers (for the page's layout before the images load)."""
    out = {}
    for name, what in names.items():
        with open(folder / name, "rb") as fh:
            head = fh.read(24)
        out[name] = {"alt": what, "width": int.from_bytes(head[16:20], "big"),
                     "height": int.from_bytes(head[20:24], "big")}
    return out


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _old_images(folder: Path) -> set[str]:
    """The figures the report already in ``folder`` lists (to remove the ones now gone)."""
    try:
        old = json.loads((folder / DATA).read_text())
        return {n for n in (old.get("report") or {}).get("images") or {} if IMAGE.match(n)}
    except (OSError, ValueError, AttributeError):
        return set()


def write_report(folder: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the report of ``data`` (the run's JSON object) into ``folder``; returns the page.

    Everything is drawn into a temporary folder first. A new folder is then moved into place
    in one rename; into an existing one the figures go first and the page last (the page is
    what readers open), and figures of an earlier report there that this one does not have
    are removed. Interrupts are held back during the renames."""
    out = io.folder_target(folder)
    data = {**data, "report": {**(data.get("report") or {}), "version": __version__}}
    data["report"].setdefault("cwd", os.getcwd())
    data["report"]["files"] = {
        side: {"path": data.get(side), "bytes": io.model_bytes(data[side])
               if data.get(side) else None} for side in ("input", "output")}
    fresh = not out.exists()
    parent = out.parent if fresh else out
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-report-", dir=parent))
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the report ({err.strerror or err})") from None
    try:
        names = plots.render(data, tmp)
        data["report"]["images"] = _image_sizes(tmp, names)
        _write(tmp / DATA, (json.dumps(data, indent=2) + "\n").encode())
        _write(tmp / PAGE, render_html(data).encode("utf-8"))
        interrupts.check()
        if fresh:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            with interrupts.deferred():
                os.rename(tmp, out)
            return out / PAGE
        stale = _old_images(out) - set(names)
        with interrupts.deferred():
            for name in [*names, DATA, PAGE]:
                os.replace(tmp / name, out / name)
        for name in stale:
            (out / name).unlink(missing_ok=True)
        return out / PAGE
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the report ({err.strerror or err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
