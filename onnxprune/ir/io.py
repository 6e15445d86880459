"""Loading and writing ONNX models: clear errors on bad input, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

import onnx
from google.protobuf.message import DecodeError

from .. import interrupts
from ..errors import (
    InputMissingError,
    InvalidModelError,
    OutputError,
    UnsupportedModelError,
    first_line,
)
from . import stream
from .mapped import read_mapped
from .runtime import default_opset, weightless
from .weights import Skeleton, to_skeleton

# onnx 1.23 writes IR 14 by default; onnxruntime 1.31 loads at most IR 13.
MAX_RUNTIME_IR = 13
# Default-domain opsets the op rules are written and tested for.
MIN_OPSET, MAX_OPSET = 7, onnx.defs.onnx_opset_version()
# Beyond this much weight data a model is written with external data (protobuf's 2 GB limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Every model this process wrote, in order (a front end reports them when interrupted).
written: list[Path] = []


def check_input(path: str | os.PathLike) -> Path:
    """The input is an existing regular file (checked before any work)."""
    p = Path(path)
    if not p.exists():
        raise InputMissingError(f"{p}: no such file")
    if p.is_dir():
        raise InputMissingError(f"{p}: is a directory, expected an .onnx file")
    if not p.is_file():
        raise InputMissingError(f"{p}: is {_kind(p)}, expected an .onnx file")
    return p


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model (and its external data) and reject what cannot be handled, naming why."""
    p = check_input(path)
    model = _parse(p)
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise _missing_data(p, err) from err
    _check(p)
    return model


def load_skeleton(path: str | os.PathLike) -> Skeleton:
    """``load_model`` with the large weights as arrays (``ir.weights``), memory-mapped where
    they lie: in their external data files, or in the .onnx file itself (``ir.mapped``; when
    its encoding is unusual, they are copied out of the parsed protobuf once, which is then
    dropped). The same checks and errors."""
    p = check_input(path)
    try:
        found = read_mapped(p)  # inline weights: arrays over the mapped file
    except (DecodeError, OSError, RuntimeError, ValueError):
        found = None  # parsed the usual way below, which names what is wrong
    model = _parse(p, found[0] if found else None)
    given = {model.graph.initializer[i].name: a for i, a in found[1].items()} if found else {}
    try:
        skeleton = to_skeleton(model, base_dir=str(p.parent), given=given)
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise _missing_data(p, err) from err
    del model
    try:  # the skeleton with its weights as typed inputs: nothing re-read or re-serialized
        onnx.checker.check_model(weightless(skeleton))
    except onnx.checker.ValidationError as err:
        raise InvalidModelError(f"{p}: the model is not valid ONNX ({first_line(err)})") from err
    return skeleton


def _missing_data(p: Path, err: BaseException) -> InvalidModelError:
    return InvalidModelError(f"{p}: external data is missing ({first_line(err)}); keep the "
                             "data file(s) next to the model")


def _check(p: Path) -> None:
    try:
        onnx.checker.check_model(str(p))  # from the file: no re-serialization of the weights
    except onnx.checker.ValidationError as err:
        raise InvalidModelError(f"{p}: the model is not valid ONNX ({first_line(err)})") from err


def _parse(p: Path, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The model file parsed (external data not read; or ``model``, parsed already) and checked
    for what cannot be handled."""
    if model is None:
        try:
            model = onnx.load(str(p), load_external_data=False)
        except (DecodeError, RuntimeError, ValueError) as err:
            raise InvalidModelError(f"{p}: not a readable ONNX model ({first_line(err)})") from err
    if not model.graph.node:
        raise InvalidModelError(f"{p}: the model has no graph nodes (not an ONNX model?)")
    if model.ir_version > onnx.IR_VERSION:
        raise UnsupportedModelError(
            f"{p}: IR version {model.ir_version} is newer than this onnx supports "
            f"({onnx.IR_VERSION}); upgrade the onnx package"
        )
    opset = default_opset(model)
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedModelError(
            f"{p}: opset {opset} is outside the supported range {MIN_OPSET}..{MAX_OPSET}; "
            "convert it with onnx.version_converter first"
        )
    return model


def runtime_ir_version(model: onnx.ModelProto, source_ir: int | None = None) -> int:
    """The IR version to write: the source's (or the runtime's limit), never below what the opsets need."""
    want = min(source_ir or MAX_RUNTIME_IR, MAX_RUNTIME_IR)
    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except TypeError:  # older onnx without ignore_unknown
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    return max(want, needed)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers' values (raw, typed fields or external data alike)."""
    total = 0
    for t in model.graph.initializer:
        if t.raw_data:
            total += len(t.raw_data)
            continue
        count = 1
        for d in t.dims:
            count *= d
        try:
            size = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            size = 1
        total += count * size
    return total


def _kind(path: Path) -> str:
    """What a non-regular file is, for the message."""
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def output_target(path: str | os.PathLike) -> Path:
    """Where a model written to ``path`` lands, checked before any work is done.

    The folder must exist and accept a new file (probed by creating one: permission bits do
    not tell for root, /proc or read-only mounts). A symbolic link is written through: its
    target is replaced and the link stays. An existing directory, device, pipe or socket is
    never replaced (OutputError, exit 7)."""
    out = Path(path)
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    if out.exists() and not out.is_file():
        raise OutputError(f"{path}: is {_kind(out)}; refusing to replace it (give a file path)")
    _probe_writable(path, folder, "output folder")
    return out


def _probe_writable(path: str | os.PathLike, folder: Path, what: str) -> None:
    """Create and remove a file in ``folder`` (permission bits do not tell for root, /proc or
    read-only mounts); OutputError naming ``path`` when it cannot."""
    from .. import interrupts

    try:
        with interrupts.deferred():  # an interrupt between create and unlink waits for both
            fd, probe = tempfile.mkstemp(prefix=".onnxprune-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{path}: {what} {folder} is not writable "
                          f"({first_line(err)})") from None


def folder_target(path: str | os.PathLike) -> Path:
    """A folder files will be written into, checked before any work is done: an existing
    folder, or a new one whose parent exists; either must accept a new file (probed). Anything
    else at ``path`` (a file, a device, ...) is refused (OutputError, exit 7)."""
    out = Path(path)
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    if out.exists() and not out.is_dir():
        what = "a file" if out.is_file() else _kind(out)
        raise OutputError(f"{path}: is {what}, not a folder; refusing to replace it "
                          "(give a folder path)")
    probe_in = out if out.is_dir() else (out.parent if str(out.parent) else Path("."))
    if not probe_in.is_dir():
        raise OutputError(f"{path}: folder {probe_in} does not exist")
    _probe_writable(path, probe_in, "folder")
    return out


def model_bytes(path: str | os.PathLike) -> int | None:
    """The bytes a model takes on disk: its file and the external data files it names (None
    when it is not there)."""
    p = Path(path)
    try:
        total = p.stat().st_size
        for name in _external_files(p):
            extra = p.parent / name
            if extra.is_file():
                total += extra.stat().st_size
    except OSError:
        return None
    return total


def _data_name(out: Path, model: onnx.ModelProto) -> str:
    """A name for the external data file unique to its contents, so that a model file can
    never be paired with another run's data (the model's rename is the one commit point)."""
    digest = hashlib.blake2b(digest_size=6)
    for t in model.graph.initializer:
        digest.update(t.name.encode())
        digest.update(t.raw_data or t.SerializeToString())
    return f"{out.name}.{digest.hexdigest()}.data"


def _external_files(path: Path) -> set[str]:
    """The external data files an existing model at ``path`` refers to (empty if none; a
    large file holds its weights itself and is not parsed)."""
    if path.stat().st_size > 64 << 20:
        return set()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - whatever is there, it is about to be replaced
        return set()
    return {e.value for t in model.graph.initializer for e in t.external_data
            if e.key == "location"}


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder (flock on its descriptor; no file is left behind), so
    that a writer reads the model it replaces and removes that model's data file while no
    other writer commits there."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_model(
    model: onnx.ModelProto | Skeleton,
    path: str | os.PathLike,
    *,
    source_ir: int | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write atomically: temp files in the target folder, then renames.

    With external data, the data file gets a name derived from its contents and is moved into
    place first; the model's rename commits the pair, so a reader sees the old pair or the new
    one, never a mix (also under concurrent writers or an interrupt). The data file the
    replaced model used is removed afterwards when it followed the same naming. Interrupts
    are held back during the renames; one that arrived earlier stops the write. A skeleton is
    written piece by piece from its arrays (``ir.stream``: no serialized copy of the weights)."""
    out = output_target(path)
    folder = out.parent
    bare = model.model if isinstance(model, Skeleton) else model
    bare.ir_version = runtime_ir_version(bare, source_ir)
    if external_data is None:
        external_data = weight_bytes(bare) > EXTERNAL_DATA_THRESHOLD
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=folder))
    except OSError as err:
        raise OutputError(f"{path}: cannot write the model ({first_line(err)})") from None
    try:
        tmp_model = tmpdir / out.name
        data_name = None
        if isinstance(model, Skeleton):
            data_name = f"{out.name}.{stream.digest(model)}.data" if external_data else None
            with open(tmp_model, "wb") as fh:
                if data_name is None:
                    stream.write_inline(model, fh)
                else:
                    with open(tmpdir / data_name, "wb") as data:
                        stream.write_external(model, fh, data, data_name)
            if data_name is not None:
                _fsync(tmpdir / data_name)
        elif external_data:
            data_name = _data_name(out, model)
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # saving with external data rewrites the proto in place
            onnx.save_model(
                copy, str(tmp_model), save_as_external_data=True,
                all_tensors_to_one_file=True, location=data_name, size_threshold=1024,
            )
            _fsync(tmpdir / data_name)
        else:
            with open(tmp_model, "wb") as fh:
                fh.write(model.SerializeToString())
        _fsync(tmp_model)
        interrupts.check()
        with _folder_lock(folder):  # commits in this folder one at a time
            old_data = _external_files(out) if out.exists() else set()
            with interrupts.deferred():
                if data_name is not None:
                    os.replace(tmpdir / data_name, folder / data_name)
                os.replace(tmp_model, out)
                written.append(out)
            for name in old_data - {data_name}:  # the replaced model's own data file
                stale = folder / name
                if name.startswith(out.name + ".") and name.endswith(".data") and stale.is_file():
                    stale.unlink(missing_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot write the model ({first_line(err)})") from err
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out



def write_file(path: str | os.PathLike, data: bytes, what: str = "file") -> Path:
    """Write a small file (a plan, a report) atomically: a temp file in the target folder,
    then a rename; the same target checks as a model's."""
    out = output_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", dir=out.parent)
    except OSError as err:
        raise OutputError(f"{path}: cannot write the {what} ({first_line(err)})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with interrupts.deferred():
            os.replace(tmp, out)
    except OSError as err:
        raise OutputError(f"{path}: cannot write the {what} ({first_line(err)})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return out
