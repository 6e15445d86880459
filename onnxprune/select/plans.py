"""Plans on disk: which channels a selection removed, in a JSON file that a later run of the
same model reuses (``--save-plan`` / ``--plan``), so trying compensation or distillation on
the same cut does not rerun a search.

A plan names every group by its id, the layers it slices and its width, and the removed
channels by their position in the group; a fingerprint of the whole group structure ties it
to the model it was made for. Loading checks both and names the first difference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.model import ChannelAnalysis
from ..errors import UsageError

FORMAT, VERSION = "onnxprune-plan", 1


def fingerprint(analysis: ChannelAnalysis) -> str:
    """A hash of the group structure: ids, widths, frozen channels, layers."""
    h = hashlib.sha256(str(analysis.num_units).encode())
    for g in analysis.groups:
        frozen = np.flatnonzero(analysis.unit_frozen[g.units]).tolist()
        h.update(json.dumps([g.id, g.channels, frozen, list(g.layers)]).encode())
    return h.hexdigest()[:16]


def plan_json(analysis: ChannelAnalysis, removed: np.ndarray, selection: dict | None = None,
              model: str | None = None) -> dict[str, Any]:
    groups = []
    for g in analysis.groups:
        gone = np.flatnonzero(removed[g.units])
        if gone.size:
            groups.append({"id": g.id, "layers": list(g.layers), "channels": g.channels,
                           "removed": gone.tolist()})
    info = {k: v for k, v in (selection or {}).items() if _plain(v)}
    return {"format": FORMAT, "version": VERSION, "model": model,
            "fingerprint": fingerprint(analysis), "units": int(analysis.num_units),
            "removed_channels": int(removed.sum()), "selection": info, "groups": groups}


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def plan_factorized(path: str | Path) -> bool:
    """Whether the run that made a plan factorized matrices (a run from it must too; a file
    that does not read is read_plan's to report)."""
    try:
        data = json.loads(Path(path).read_text())
        return bool(data.get("selection", {}).get("factorized"))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def read_plan(path: str | Path, analysis: ChannelAnalysis) -> tuple[np.ndarray, dict]:
    """The removed-unit mask a plan file describes for ``analysis``, and what the plan's
    selection recorded; a file that is not a plan, or one made for another model, is a
    UsageError naming what differs."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read the plan ({err})") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not a plan (invalid JSON: {err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path}: not an onnxprune plan (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise UsageError(f"{path}: plan version {data.get('version')!r}; this onnxprune "
                         f"reads version {VERSION}")
    by_id = {g.id: g for g in analysis.groups}
    removed = np.zeros(analysis.num_units, dtype=bool)
    for entry in data.get("groups", []):
        g = by_id.get(entry.get("id"))
        if g is None or g.channels != entry.get("channels") or list(g.layers) != entry.get(
                "layers"):
            have = (f"group {g.id} has {g.channels} channels over {_layers(g.layers)}"
                    if g is not None else f"there is no group {entry.get('id')}")
            raise UsageError(f"{path}: the plan was made for another model: its group "
                             f"{entry.get('id')} has {entry.get('channels')} channels over "
                             f"{_layers(entry.get('layers') or [])}; here {have}")
        index = np.asarray(entry.get("removed", []), dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= g.channels):
            raise UsageError(f"{path}: group {g.id}: removed channel out of range "
                             f"(the group has {g.channels})")
        if analysis.unit_frozen[g.units[index]].any():
            raise UsageError(f"{path}: group {g.id}: the plan removes channels that are frozen "
                             "here (the model or its options differ)")
        removed[g.units[index]] = True
    if data.get("fingerprint") != fingerprint(analysis):
        raise UsageError(f"{path}: the plan was made for another model or other analysis "
                         "options (its group structure differs)")
    if not np.array_equal(analysis.enforce_links(removed), removed):
        raise UsageError(f"{path}: the plan removes channels whose linked channels it keeps "
                         "(not a plan onnxprune wrote for this model)")
    return removed, dict(data.get("selection") or {})


def _layers(layers: list[str]) -> str:
    shown = ", ".join(layers[:2]) + (", ..." if len(layers) > 2 else "")
    return shown or "no layers"
