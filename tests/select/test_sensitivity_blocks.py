"""The sensitivity search's last step when it cannot be taken in part (a residual block goes
whole): the channels of earlier steps go back as far as the target allows, so a 31% target
does not end at 42% (the digits classifier's search before)."""

from types import SimpleNamespace

import numpy as np

from onnxprune.select.common import Target
from onnxprune.select.sensitivity import _given_back, _within

# a channel group of 10 units (1 parameter each) and a residual block of 20 parameters,
# 10 parameters outside both: 40 in all
COST = np.array([1.0] * 10 + [20.0])
TOTAL = 40.0


class Space:
    groups = [SimpleNamespace(counts=np.arange(11)), SimpleNamespace(counts=np.array([0, 1]))]

    def mask(self, counts):
        m = np.zeros(11, bool)
        m[:counts[0]] = True
        m[10] = counts[1] == 1
        return m

    def reduction(self, mask, target):
        return float(COST[mask].sum() / TOTAL)


class Evaluator:
    """The metric: 1 - the removed cost / 100; with ``worse_back`` the first mask (the cut
    with channels given back) scores 0.1 under the second."""

    def __init__(self, worse_back=False):
        self.worse_back = worse_back
        self.metric = SimpleNamespace(utility=lambda v: v)

    def evaluate_many(self, kept):
        values = [1 - COST[~k].sum() / 100 for k in kept]
        if self.worse_back:
            values[0] = values[1] - 0.1
        return np.array(values)


PATH = [[0, 0], [2, 0], [4, 0], [6, 0], [6, 1]]  # channels 2 at a time, then the block


def test_a_whole_last_step_past_the_target_gives_channels_back():
    target = Target("params", 0.3)  # 12 of 40: the block alone (20) reaches it
    assert _given_back(Space(), PATH, 4, target, Evaluator(), PATH[4]) == [0, 1]
    target = Target("params", 0.6)  # 24: four channels stay cut beside the block
    assert _given_back(Space(), PATH, 4, target, Evaluator(), PATH[4]) == [4, 1]


def test_the_metric_keeps_the_cut_that_scores_better():
    target = Target("params", 0.3)
    assert _given_back(Space(), PATH, 4, target, Evaluator(worse_back=True), PATH[4]) == [6, 1]


def test_a_last_step_refined_to_the_channels_the_target_needs_stays():
    path = [[0, 0], [0, 1], [4, 1]]  # the block first, then 4 channels refined to 2
    target = Target("params", 0.55)  # 22: the block and 2 channels
    assert _given_back(Space(), path, 2, target, Evaluator(), [2, 1]) == [2, 1]


def test_a_whole_step_counts_only_the_saving_the_target_still_needs():
    assert _within(0.1, 0.05) == 1.0
    assert _within(0.1, 0.4) == 0.25
    assert _within(0.0, 0.4) == 0.0
