"""Placement vocabulary: layer selectors, components, ranks, and their errors."""

import pytest

from lora_ext import resolve_components, resolve_layers
from lora_ext.placement import check_alpha, check_dropout, check_rank
from record.errors import InputError

LAYER_CASES = [
    ("all", 12, tuple(range(12))),
    ("upper", 12, (6, 7, 8, 9, 10, 11)),
    ("lower", 12, (0, 1, 2, 3, 4, 5)),
    ("even", 12, (0, 2, 4, 6, 8, 10)),
    ("upper:4", 12, (8, 9, 10, 11)),
    ("lower:3", 12, (0, 1, 2)),
    ("even:3", 12, (0, 4, 8)),
    ("upper", 6, (3, 4, 5)),
    ("lower", 6, (0, 1, 2)),
    ("even", 6, (0, 2, 4)),
    (0, 12, (0,)),  # layer 0 is falsy: its own case
    (11, 12, (11,)),
    ([5, 0, 11], 12, (0, 5, 11)),
]


@pytest.mark.parametrize("selector,n,expected", LAYER_CASES)
def test_layer_selectors(selector, n, expected):
    assert resolve_layers(selector, n) == expected


@pytest.mark.parametrize("selector,match", [
    (12, "out of range"), (-1, "out of range"), ([1, 1], "duplicate"), ([], "empty"), ("middle", "unknown layer"),
    ("upper:0", "bad layer count"), ("upper:13", "bad layer count"), ("all:3", "no count"), (True, "not a layer"),
    ([1.5], "integers"),
])
def test_layer_selector_errors(selector, match):
    with pytest.raises(InputError, match=match) as info:
        resolve_layers(selector, 12)
    assert str(info.value).startswith("layers:")


@pytest.mark.parametrize("value,expected", [
    ("all", ("q", "k", "v", "o", "up", "down")),
    ("v+up", ("v", "up")),
    ("up+q+o", ("q", "o", "up")),
    (["down", "v"], ("v", "down")),
    ("q", ("q",)),
])
def test_components(value, expected):
    assert resolve_components(value) == expected


@pytest.mark.parametrize("value,match", [("x", "unknown component"), ("q+q", "duplicate"), ([], "empty"),
                                         ("", "empty"), (3, "not a component")])
def test_component_errors(value, match):
    with pytest.raises(InputError, match=match):
        resolve_components(value)


def test_scalar_checks():
    assert check_rank(1, "r") == 1
    assert check_alpha(None) is None and check_alpha(16) == 16.0
    assert check_dropout(0, "d") == 0.0
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="rank must be"):
            check_rank(bad, "r")
    for bad in (0, -1.0, "x"):
        with pytest.raises(InputError, match="alpha must be"):
            check_alpha(bad)
    for bad in (1.0, -0.1, 2):
        with pytest.raises(InputError, match=r"\[0, 1\)"):
            check_dropout(bad, "lora.dropout")
