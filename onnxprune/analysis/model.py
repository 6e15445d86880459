"""Results of the channel analysis (frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

SlotKey = tuple[str, int]  # (tensor name, axis)


@dataclass(frozen=True)
class Member:
    """A tensor axis a group lives on: ``positions`` of its ``size`` entries are the group's."""

    tensor: str
    axis: int
    positions: int
    size: int


@dataclass(frozen=True)
class ParamSlice:
    """A parameter axis a group owns ``count`` slices of."""

    param: str
    axis: int
    count: int
    size: int


@dataclass(frozen=True)
class Group:
    """Channels that must be removed together; ``units`` are its removable channels."""

    id: int
    units: np.ndarray
    members: tuple[Member, ...]
    params: tuple[ParamSlice, ...]
    frozen: bool
    reason: str | None
    frozen_units: int
    n_params: int
    macs: int
    layers: tuple[str, ...] = ()  # nodes whose parameters the group slices
    component: str | None = None

    @property
    def channels(self) -> int:
        return int(self.units.size)

    @property
    def prunable(self) -> int:
        return self.channels - self.frozen_units


@dataclass(frozen=True)
class Gate:
    """Where the oracle multiplies channels by their unit's gate: node input, axis, unit ids."""

    node: str
    input_index: int
    axis: int
    units: np.ndarray
    batched: bool = True  # the gated tensor is batch-first (False: a weight)
    # "mul": the input is multiplied by the gates; "stats": the node (a normalization) takes
    # its statistics over the gated axis weighted by the gates, as if closed channels were gone
    kind: str = "mul"


@dataclass(frozen=True)
class ChannelAnalysis:
    """The coupled-channel structure of one graph."""

    num_units: int
    unit_group: np.ndarray  # unit -> group id (-1: not in a group)
    unit_frozen: np.ndarray  # bool per unit
    unit_reason: tuple[str | None, ...]
    slots: Mapping[SlotKey, np.ndarray]  # (tensor, axis) -> unit per position
    params: Mapping[SlotKey, np.ndarray]  # (param, axis) -> unit per slice (-1: not owned)
    gates: tuple[Gate, ...]
    groups: tuple[Group, ...]
    node_macs: Mapping[str, int] = field(default_factory=dict)
    # (a, b) rows: while unit a stays, unit b must stay (b's channels are gathered into a's)
    links: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    # (tensor, axis) -> units of channels folded into that symbolic axis (its size changes too)
    folds: Mapping[SlotKey, np.ndarray] = field(default_factory=dict)

    def keep_mask(self, key: SlotKey, removed: np.ndarray) -> np.ndarray | None:
        units = self.slots.get(key)
        return None if units is None else ~removed[units]

    def interface_cuts(self, names, removed: np.ndarray) -> dict[str, list[tuple[int, np.ndarray]]]:
        """Graph inputs/outputs (``names``) that lose channels: name -> [(axis, keep mask)]
        (only an opened decoder cache can; see analysis.cache)."""
        wanted = set(names)
        out: dict[str, list[tuple[int, np.ndarray]]] = {}
        for (name, axis), units in self.slots.items():
            if name in wanted and removed[units].any():
                out.setdefault(name, []).append((axis, ~removed[units]))
        return out

    def enforce_links(self, removed: np.ndarray) -> np.ndarray:
        """Keep every unit a kept unit needs (the closure of the links); returns a new mask."""
        removed = np.array(removed, dtype=bool)
        if not self.links.size:
            return removed
        kept_if, needs = self.links[:, 0], self.links[:, 1]
        while True:
            bad = removed[needs] & ~removed[kept_if]
            if not bad.any():
                return removed
            removed[needs[bad]] = False

    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if not g.frozen and g.prunable > 1]
