"""Gather on spatial axes and on channels (links between copies)."""

import numpy as np
import pytest
from conftest import group_of_tensor, group_with_layer

from onnxprune.testing import check_oracle


def _conv(b, x, cin, cout, name):
    return b.relu(b.conv(x, cin, cout, name=name))


def test_gather_on_spatial_axis(gb):
    x = gb.input("x", [1, 3, 4, 4])
    h = _conv(gb, x, 3, 8, "c1")
    h = gb.op("Gather", [h, gb.const(np.array([0, 2], np.int64))], axis=2)
    y = gb.conv(h, 8, 2, name="c2")
    res = check_oracle(gb.build([y]), trials=3)
    assert not group_with_layer(res.analysis, "c1").frozen


@pytest.mark.parametrize("indices", [[3, 1, 0, 2, 5, 4], [0, 2, 4], [1, 1, 5, 0], 4])
def test_gather_on_channels_links_outputs_to_inputs(gb, indices):
    x = gb.input("x", [2, 3, 4, 4])
    h = _conv(gb, x, 3, 6, "c1")
    g = gb.op("Gather", [h, gb.const(np.array(indices, np.int64))], axis=1, name="pick")
    if isinstance(indices, int):
        g = gb.op("Unsqueeze", [g, gb.const(np.array([1]))])
    n = 1 if isinstance(indices, int) else len(indices)
    y = gb.conv(g, n, 2, name="c2")
    y2 = gb.conv(h, 6, 2, name="side")  # c1's channels are also read directly
    res = check_oracle(gb.build([gb.op("Add", [y, y2])]), trials=6)
    a = res.analysis
    c1 = group_with_layer(a, "c1")
    assert c1.channels == 6 and not c1.frozen
    if isinstance(indices, int):
        assert c1.frozen_units == 1
        return
    picked = group_of_tensor(a, "pick_out0")
    assert picked is not c1 and picked.channels == n and not picked.frozen
    # every link says: while a picked channel stays, the c1 channel it copies stays
    assert len(a.links) == n  # one (picked, source) pair per output channel
    assert set(a.unit_group[a.links[:, 0]]) == {picked.id}
    assert set(a.unit_group[a.links[:, 1]]) == {c1.id}
    # c1 cannot lose a channel the gather still reads
    removed = np.zeros(a.num_units, bool)
    removed[c1.units] = True
    removed[c1.units[0]] = False
    kept = a.enforce_links(removed)
    assert set(c1.units[~kept[c1.units]]) == set(c1.units[np.unique(indices)]) | {c1.units[0]}

