"""Images as calibration arrays (Pillow): grey or RGB (BGR when asked) as the input's channels,
resized to the input's spatial size, scaled to [0, 1], normalized by a mean and a standard
deviation, laid out NCHW or NHWC as the input is; sub-folders of a folder are class labels
(the ImageFolder convention)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .common import need

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
RESIZE = ("stretch", "crop", "letterbox", "pad")
RESAMPLERS = ("pillow", "opencv")


@dataclass(frozen=True)
class Layout:
    """Where an image goes in the input: channels, size, channels-last or not."""

    channels: int
    height: int
    width: int
    channels_last: bool


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the input's pixels."""

    resize: str = "stretch"  # stretch | crop (shorter side, centre crop) | letterbox | pad
    bgr: bool = False
    mean: tuple[float, ...] | None = None  # after scaling to [0, 1]
    std: tuple[float, ...] | None = None
    rescale: float = 1 / 255
    shortest: int | None = None  # crop: the shorter side before the centre crop (None: fit)
    resampler: str = "pillow"  # bilinear by Pillow (with its antialiasing) or OpenCV (without)

    @staticmethod
    def from_hf(path: Path, base: Preprocess) -> Preprocess:
        """Hugging Face image-processor fields of ``preprocessor_config.json`` over ``base``
        (do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_center_crop,
        crop_size): what the processor would do."""
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"{path}: not a readable preprocessor config ({err})") from None
        mean, std = base.mean, base.std
        if cfg.get("do_normalize", True) and "image_mean" in cfg and mean is None:
            mean, std = tuple(map(float, cfg["image_mean"])), tuple(map(float, cfg["image_std"]))
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) \
            else 1.0
        size, shortest = cfg.get("size"), None
        if isinstance(size, dict) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif isinstance(size, int):
            shortest = size
        crop = bool(cfg.get("do_center_crop"))
        resize = "crop" if crop and base.resize == "stretch" else base.resize
        return Preprocess(resize, base.bgr, mean, std, rescale, shortest if crop else None,
                          base.resampler)


def hf_size(path: Path) -> tuple[int, int] | None:
    """The (height, width) a ``preprocessor_config.json`` resizes to, if it says one."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def layout(dims: tuple, shape: list[int] | None, hf: tuple[int, int] | None, name: str
           ) -> Layout:
    """The input's image layout from its declared dims, a chosen shape or a processor's size:
    a 4-D input [N, C, H, W] or [N, H, W, C] with 1 or 3 channels."""
    dims = list(shape) if shape else list(dims)
    if len(dims) != 4:
        raise UsageError(f"input {name!r} has {len(dims)} dimensions; images feed a 4-D input "
                         "(N, C, H, W or N, H, W, C)")
    if dims[1] in (1, 3):
        c, h, w, last = dims[1], dims[2], dims[3], False
    elif dims[3] in (1, 3):
        c, h, w, last = dims[3], dims[1], dims[2], True
    else:
        raise UsageError(f"input {name!r} has shape {dims}: no axis of 1 or 3 channels for "
                         "images (grey or RGB)")
    if not isinstance(h, int) or not isinstance(w, int):
        if hf is None:
            raise UsageError(f"input {name!r} has a dynamic image size {dims}: give it with "
                             f"--input-shape {name}=1x{c}xHxW")
        h, w = hf
    return Layout(int(c), int(h), int(w), last)


def _listed(root: Path) -> list[tuple[str, str | None]]:
    """The (path, label) of every line of a list file: ``path`` or ``path label`` (a whole
    number after the last space, as ImageNet's validation lists write it)."""
    out = []
    for line in root.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        head, _, tail = line.rpartition(" ")
        if head and tail.lstrip("-").isdigit() and Path(head.strip()).suffix.lower() in EXTENSIONS:
            out.append((head.strip(), tail))
        else:
            out.append((line, None))
    return out


def find(root: Path) -> tuple[list[Path], list[str] | None]:
    """Image files under a folder (sorted; one level of sub-folders as classes, whose sorted
    names are the labels 0, 1, ...), a glob pattern, or a list file (one path a line, or a path
    and its label)."""
    text = str(root)
    if any(ch in text for ch in "*?["):
        base = Path(text.split("*")[0].split("?")[0].split("[")[0] or ".").parent
        pattern = text[len(str(base)) + 1:] if text.startswith(str(base) + "/") else text
        files = sorted(p for p in base.glob(pattern) if p.suffix.lower() in EXTENSIONS)
        return files, None
    if root.is_file():
        entries = _listed(root)
        files = [(root.parent / ln) if not Path(ln).is_absolute() else Path(ln)
                 for ln, _ in entries]
        labels = [label for _, label in entries]
        if all(label is None for label in labels):
            return files, None
        if any(label is None for label in labels):
            raise UsageError(f"{root}: some lines give a label and some do not (a path, or a "
                             "path and a whole-number label, on every line)")
        return files, labels
    direct = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if direct or not folders:
        return direct, None
    files, labels = [], []
    for k, folder in enumerate(folders):
        inside = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
        files += inside
        labels += [str(k)] * len(inside)
    return files, labels if files else None


def is_image_list(path: Path) -> bool:
    """A text file whose every line names an existing image file."""
    try:
        lines = [ln for ln, _ in _listed(path)]
    except OSError:
        return False
    return bool(lines) and all(
        Path(ln).suffix.lower() in EXTENSIONS and ((path.parent / ln).is_file()
                                                   or Path(ln).is_file()) for ln in lines)


def load(files: list, where: Layout, how: Preprocess) -> np.ndarray:
    """The images (paths, or images Pillow opened) as one float32 array in the input's
    layout."""
    image_mod = need("PIL.Image", "Pillow", "images")
    out = np.empty((len(files), where.height, where.width, where.channels), np.float32)
    mode = "L" if where.channels == 1 else "RGB"
    content = np.ones((len(files), where.height, where.width), bool)  # not padding
    for i, f in enumerate(files):
        if hasattr(f, "convert"):  # an image already opened (a datasets Image column)
            rgb = f.convert(mode)
        else:
            try:
                with image_mod.open(f) as im:
                    im.load()
                    rgb = im.convert(mode)
            except (OSError, ValueError, image_mod.DecompressionBombError) as err:
                raise UsageError(f"{f}: not a readable image ({err})") from None
        resized, (x0, y0, x1, y1) = _resized(rgb, where, how, image_mod)
        px = np.asarray(resized, np.float64).reshape(where.height, where.width, -1)
        if how.resize == "pad":
            content[i] = False
            content[i, y0:y1, x0:x1] = True
        if how.bgr and where.channels == 3:
            px = px[..., ::-1]
        steps = 1.0 / how.rescale  # 8-bit values / 255 as numpy computes them
        out[i] = px / round(steps) if abs(steps - round(steps)) < 1e-6 else px * how.rescale
    if how.mean is not None:
        mean = _per_channel(how.mean, where.channels, "mean")
        std = _per_channel(how.std or (1.0,), where.channels, "std")
        out = (out - mean) / std
    if how.resize == "pad":  # the padding is zero in the model's input (PaddleOCR's lines)
        out[~content] = 0.0
    return out if where.channels_last else np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _per_channel(values, channels: int, what: str) -> np.ndarray:
    v = np.asarray(values, np.float32).reshape(-1)
    if v.size == 1:
        return np.repeat(v, channels)
    if v.size != channels:
        raise UsageError(f"--calib-normalize: {v.size} {what} values for {channels} channel(s)")
    return v


def _resized(im, where: Layout, how: Preprocess, image_mod):
    """The image at the input's size, and the box (x0, y0, x1, y1) its content fills."""
    h, w = where.height, where.width
    scale = _Scale(how.resampler, image_mod)
    if how.resize == "stretch":
        return scale(im, w, h), (0, 0, w, h)
    if how.resize == "crop":  # the shorter side to the target's (or ``shortest``), the centre
        factor = max(h / im.height, w / im.width)
        if how.shortest is not None:
            factor = max(factor, how.shortest / min(im.height, im.width))
        im = scale(im, max(w, round(im.width * factor)), max(h, round(im.height * factor)))
        left, top = (im.width - w) // 2, (im.height - h) // 2
        return im.crop((left, top, left + w, top + h)), (0, 0, w, h)
    if how.resize == "pad":  # PaddleOCR's text lines: the height to the input's, the width
        # kept in ratio (rounded up) up to the input's (a wider line is squeezed), padded right
        fit = scale(im, min(w, math.ceil(h * im.width / im.height)), h)
        at = (0, 0)
    else:  # letterbox: fitted inside, centred
        factor = min(h / im.height, w / im.width)
        fit = scale(im, max(1, round(im.width * factor)), max(1, round(im.height * factor)))
        at = ((w - fit.width) // 2, (h - fit.height) // 2)
    canvas = image_mod.new(im.mode, (w, h), 0)
    canvas.paste(fit, at)
    return canvas, (at[0], at[1], at[0] + fit.width, at[1] + fit.height)


class _Scale:
    """Bilinear resizing of a Pillow image: Pillow's (antialiased when it shrinks, as
    torchvision and Hugging Face processors resize) or OpenCV's ``cv2.resize`` (no
    antialiasing, 8-bit fixed point: as PaddleOCR and YOLO exports preprocess)."""

    def __init__(self, resampler: str, image_mod):
        self.image_mod, self.cv2 = image_mod, None
        if resampler == "opencv":
            self.cv2 = need("cv2", "opencv-python-headless", "images with OpenCV's resize")

    def __call__(self, im, width: int, height: int):
        if self.cv2 is None:
            return im.resize((width, height), self.image_mod.Resampling.BILINEAR)
        px = self.cv2.resize(np.asarray(im), (width, height),
                             interpolation=self.cv2.INTER_LINEAR)
        return self.image_mod.fromarray(px, im.mode)
