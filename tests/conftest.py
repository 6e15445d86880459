import numpy as np
import pytest

from onnxprune.zoo.builder import GraphBuilder


@pytest.fixture
def gb():
    return GraphBuilder(seed=0)


def groups_summary(analysis):
    """Sorted (channels, frozen) per group: the structure the tests assert."""
    return sorted((g.channels, g.frozen) for g in analysis.groups)


def group_with_layer(analysis, layer):
    return next(g for g in analysis.groups if layer in g.layers)


def group_of_tensor(analysis, tensor):
    return next(g for g in analysis.groups if any(m.tensor == tensor for m in g.members))


def cbr(b, x, cin, cout, **kw):
    """conv + relu"""
    return b.relu(b.conv(x, cin, cout, **kw))


np.set_printoptions(precision=4)
