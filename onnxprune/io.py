"""Loading and writing ONNX models: clear errors on bad input, atomic writes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import InputMissingError, InvalidModelError, OutputError, UnsupportedModelError

# onnx 1.23 writes IR 14 by default; onnxruntime 1.31 loads at most IR 13.
MAX_RUNTIME_IR = 13
# Default-domain opsets the op rules are written and tested for.
MIN_OPSET, MAX_OPSET = 7, onnx.defs.onnx_opset_version()
# Beyond this much weight data a model is written with external data (protobuf's 2 GB limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load a model (and its external data) and reject what cannot be handled, naming why."""
    p = Path(path)
    if not p.exists():
        raise InputMissingError(f"{p}: no such file")
    if p.is_dir():
        raise InputMissingError(f"{p}: is a directory, expected an .onnx file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise InvalidModelError(f"{p}: not a readable ONNX model ({_first_line(err)})") from err
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
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except (OSError, onnx.checker.ValidationError) as err:
        raise InvalidModelError(
            f"{p}: external data is missing ({_first_line(err)}); keep the data file(s) "
            "next to the model"
        ) from err
    try:
        onnx.checker.check_model(str(p))  # from the file: no re-serialization of the weights
    except onnx.checker.ValidationError as err:
        raise InvalidModelError(f"{p}: the model is not valid ONNX ({_first_line(err)})") from err
    return model


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return None


def runtime_ir_version(model: onnx.ModelProto, source_ir: int | None = None) -> int:
    """The IR version to write: the source's (or the runtime's limit), never below what the opsets need."""
    want = min(source_ir or MAX_RUNTIME_IR, MAX_RUNTIME_IR)
    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except TypeError:  # older onnx without ignore_unknown
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    return max(want, needed)


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    source_ir: int | None = None,
    external_data: bool | None = None,
) -> Path:
    """Write atomically: a temp file in the target folder, then a rename (external data too)."""
    out = Path(path)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{out}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{out}: output folder {folder} is not writable")
    model.ir_version = runtime_ir_version(model, source_ir)
    if external_data is None:
        external_data = weight_bytes(model) > EXTERNAL_DATA_THRESHOLD
    tmpdir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=folder))
    try:
        tmp_model = tmpdir / out.name
        if external_data:
            data_name = out.name + ".data"
            copy = onnx.ModelProto()
            copy.CopyFrom(model)  # saving with external data rewrites the proto in place
            onnx.save_model(
                copy, str(tmp_model), save_as_external_data=True,
                all_tensors_to_one_file=True, location=data_name, size_threshold=1024,
            )
            os.replace(tmpdir / data_name, folder / data_name)
        else:
            with open(tmp_model, "wb") as fh:
                fh.write(model.SerializeToString())
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp_model, out)
    except OSError as err:
        raise OutputError(f"{out}: cannot write the model ({_first_line(err)})") from err
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
