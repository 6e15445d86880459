"""Calibration data as users have it: ``--calib PATH`` reads an ``.npz`` of arrays, a folder
(or glob, or list file) of images, a ``.txt``/``.jsonl`` of text with a tokenizer, a folder
of recordings, or a Hugging Face ``datasets`` folder (``save_to_disk``), the kind found from
the path. Every reader ends in the same arrays keyed by model input name, so the held-out
share, the probe and every stage work the same on them. The readers' packages (Pillow,
tokenizers, soundfile, datasets) come with the ``data`` extra."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..ir.arrays import load_npz
from ..ir.shapes import InputSpec
from . import audio, images, text
from .common import need

KINDS = ("npz", "images", "text", "audio", "dataset")
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class Settings:
    """How a source becomes arrays (``--calib-normalize``, ``--calib-resize``, ...)."""

    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    resize: str = "stretch"
    bgr: bool = False
    tokenizer: Path | None = None
    max_length: int | None = None
    sample_rate: int | None = None
    column: str | None = None
    model_path: Path | None = None  # its folder may hold tokenizer.json, preprocessor_config
    shapes: dict = field(default_factory=dict)  # --input-shape
    pinned: dict = field(default_factory=dict)  # --input-value
    resampler: str = "pillow"  # images: pillow | opencv (calibrate.resampler)


@dataclass(frozen=True)
class Read:
    arrays: dict[str, np.ndarray]
    kind: str
    note: str  # what was read, for the run's output


def kind_of(path: Path) -> str:
    """The source's kind from the path: a glob or a folder of images, a list file of images,
    ``.npz``, ``.txt``/``.jsonl`` text, audio files, a ``datasets`` folder."""
    text_path = str(path)
    if any(ch in text_path for ch in "*?["):
        return "images"
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "dataset"
        found = [p.suffix.lower() for p in path.rglob("*") if p.is_file()]
        if any(s in images.EXTENSIONS for s in found):
            return "images"
        if any(s in audio.EXTENSIONS for s in found):
            return "audio"
        raise UsageError(f"{path}: a folder with no usable file (images: "
                         f"{', '.join(images.EXTENSIONS)}; audio: {', '.join(audio.EXTENSIONS)}; "
                         "or a datasets save_to_disk folder)")
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UsageError(f"{path}: no such file or folder")
    if suffix == ".npz":
        return "npz"
    if suffix in images.EXTENSIONS:
        return "images"
    if suffix in audio.EXTENSIONS:
        return "audio"
    if suffix in (".txt", ".jsonl", ".lst", ".list"):
        return "images" if suffix != ".jsonl" and images.is_image_list(path) else "text"
    raise UsageError(f"{path}: unknown calibration data (give an .npz, a folder or glob of "
                     "images, a .txt/.jsonl of text, audio files or a datasets folder)")


def read(path: Path, specs: list[InputSpec], settings: Settings) -> Read:
    """The arrays of ``path`` for the model inputs ``specs`` (pinned ones left out)."""
    kind = kind_of(path)
    if kind == "npz":
        try:
            arrays = load_npz(path, batch_first=False)
        except (ValueError, OSError) as err:
            raise UsageError(str(err)) from None
        return Read(arrays, kind, f"{len(arrays)} array(s) from {path.name}")
    free = [s for s in specs if s.name not in settings.pinned]
    if kind == "images":
        files, labels = images.find(path)
        return _images(path, files, labels, free, settings)
    if kind == "text":
        return _text(path, text.lines(path), free, settings)
    if kind == "audio":
        return _audio(path, audio.find(path), free, settings)
    return _dataset(path, free, settings)


def _one(free: list[InputSpec], what: str, path: Path) -> InputSpec:
    if len(free) != 1:
        raise UsageError(f"{path}: {what} feed one model input; the model has "
                         f"{len(free)} ({', '.join(s.name for s in free)}): pin the others "
                         "with --input-value or give an .npz")
    return free[0]


def _beside(settings: Settings, name: str) -> Path | None:
    if settings.model_path is None:
        return None
    p = Path(settings.model_path).parent / name
    return p if p.is_file() else None


def _images(path: Path, files, labels, free, settings: Settings, loaded=None) -> Read:
    spec = _one(free, "images", path)
    if not files and loaded is None:
        raise UsageError(f"{path}: no image files ({', '.join(images.EXTENSIONS)})")
    config = _beside(settings, "preprocessor_config.json")
    where = images.layout(spec.dims, settings.shapes.get(spec.name),
                          images.hf_size(config) if config else None, spec.name)
    mean, std = settings.normalize or (None, None)
    how = images.Preprocess(settings.resize, settings.bgr, mean, std,
                            resampler=settings.resampler)
    if config is not None:
        how = images.Preprocess.from_hf(config, how)
    arrays = {spec.name: images.load(files if loaded is None else loaded, where, how)}
    if labels is not None:
        arrays["labels"] = np.asarray([int(v) for v in labels], np.int64)
    count = len(arrays[spec.name])
    return Read(arrays, "images", f"{count} image(s) from {path} as {spec.name} "
                f"{where.channels}x{where.height}x{where.width}"
                f"{' (channels last)' if where.channels_last else ''}, resize {how.resize}"
                f"{' (OpenCV)' if how.resampler == 'opencv' else ''}"
                f"{', normalized' if how.mean is not None else ''}"
                f"{', labels of ' + str(len(set(labels))) + ' classes' if labels else ''}"
                f"{', preprocessing from ' + config.name if config else ''}")


def _text(path: Path, texts: list, free, settings: Settings) -> Read:
    if not texts:
        raise UsageError(f"{path}: no text samples")
    tok_path = settings.tokenizer or _beside(settings, "tokenizer.json")
    if tok_path is None:
        raise UsageError(f"{path}: text needs a tokenizer: give --tokenizer tokenizer.json or "
                         "put tokenizer.json beside the model")
    tok = text.tokenizer(Path(tok_path))
    limit = (settings.max_length or _max_length(free) or _positions(settings)
             or DEFAULT_MAX_LENGTH)
    enc = text.encode(texts, tok, {s.name: s.dtype for s in free}, limit)
    cut = f", {enc.truncated} truncated at {limit} tokens" if enc.truncated else ""
    what = "text pair(s)" if isinstance(texts[0], tuple) else "text sample(s)"
    return Read(enc.arrays, "text", f"{len(texts)} {what} from {path.name}, "
                f"{enc.length} tokens with padding{cut} (tokenizer {Path(tok_path).name})")


def _max_length(free: list[InputSpec]) -> int | None:
    """A static sequence length the text inputs declare."""
    for s in free:
        if len(s.dims) == 2 and isinstance(s.dims[1], int) and s.dims[1] > 1:
            return int(s.dims[1])
    return None


def _positions(settings: Settings) -> int | None:
    """The position limit of a Hugging Face ``config.json`` beside the model."""
    config = _beside(settings, "config.json")
    if config is None:
        return None
    try:
        value = json.loads(config.read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 1 else None


def _rate(settings: Settings) -> int:
    if settings.sample_rate:
        return int(settings.sample_rate)
    for name, value in settings.pinned.items():
        if "rate" in name.lower() or name.lower() in ("sr", "fs"):
            return int(np.asarray(value).reshape(-1)[0])
    raise UsageError("audio needs a sample rate: give --sample-rate HZ (or pin the model's "
                     "sample-rate input with --input-value)")


def _audio_length(spec: InputSpec, settings: Settings) -> tuple[int, list]:
    dims = list(settings.shapes.get(spec.name) or spec.dims)
    if not dims or not isinstance(dims[-1], int) or dims[-1] <= 1:
        raise UsageError(f"input {spec.name!r} has a dynamic length {dims}: give it with "
                         f"--input-shape {spec.name}=1xLENGTH")
    return int(dims[-1]), dims


def _audio(path: Path, files, free, settings: Settings, loaded=None) -> Read:
    spec = _one(free, "audio files", path)
    if not files and loaded is None:
        raise UsageError(f"{path}: no audio files ({', '.join(audio.EXTENSIONS)})")
    rate = _rate(settings)
    length, dims = _audio_length(spec, settings)
    x = audio.pieces(files, rate, length) if loaded is None else loaded(rate, length)
    x = x.reshape(len(x), *[1] * (len(dims) - 2), length) if len(dims) >= 2 else x
    return Read({spec.name: x.astype(spec.dtype)}, "audio",
                f"{len(x)} piece(s) of {length} samples at {rate} Hz from {path}")


def _dataset(path: Path, free, settings: Settings) -> Read:
    ds_mod = need("datasets", "datasets", "a datasets folder")
    try:
        ds = ds_mod.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - datasets raises many types
        raise UsageError(f"{path}: not a datasets save_to_disk folder ({str(err)[:200]})") \
            from None
    if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # a DatasetDict
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    labels = next((c for c in ("label", "labels") if c in ds.column_names), None)
    columns = [c for c in ds.column_names if c != labels]
    column = settings.column or (columns[0] if len(columns) == 1 else None)
    if column is None or column not in ds.column_names:
        raise UsageError(f"{path}: choose the column with --calib-column "
                         f"({', '.join(ds.column_names)})")
    feature = type(ds.features[column]).__name__
    values = ds[column]
    extra = {"labels": np.asarray(ds[labels], np.int64)} if labels else {}
    if feature == "Image":
        got = _images(path, [], None, free, settings, loaded=values)
    elif feature == "Audio":
        def loaded(rate, length):
            return audio.cut((audio.resample(item["array"], item["sampling_rate"], rate)
                              for item in values), length, rate, str(path))

        got, extra = _audio(path, [], free, settings, loaded=loaded), {}
    elif feature == "Value" and ds.features[column].dtype == "string":
        got = _text(path, [str(v) for v in values], free, settings)
    else:
        spec = _one(free, f"column {column!r}", path)
        got = Read({spec.name: np.asarray(values)}, "dataset", "")
    arrays = {**got.arrays, **extra}
    return Read(arrays, "dataset", f"column {column!r} of {path}: {got.note or len(values)}")
