"""Palette decoding, property-based: any class map survives colour encoding, any foreign
colour is counted exactly and lands on Unlabeled."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segmodel.data.palette import Palette, from_mapping, load_palette

DUBAI = load_palette("")

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))
colours = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@st.composite
def palettes(draw) -> Palette:
    cols = draw(st.lists(colours, min_size=2, max_size=12, unique=True))
    names = [f"class{i}" for i in range(len(cols) - 1)] + ["Unlabeled"]
    return from_mapping({n: "#%02X%02X%02X" % c for n, c in zip(names, cols)}, "test")


@settings(max_examples=60, deadline=None)
@given(palette=palettes(), data=st.data())
def test_encode_decode_roundtrip(palette, data):
    shape = data.draw(shapes)
    index = data.draw(arrays(np.uint8, shape, elements=st.integers(0, palette.n_classes - 1)))
    decoded, unknown = palette.decode(palette.encode(index))
    np.testing.assert_array_equal(decoded, index)
    assert not unknown.any()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_foreign_colours_are_counted_and_unlabeled(data):
    shape = data.draw(shapes)
    index = data.draw(arrays(np.uint8, shape, elements=st.integers(0, 5)))
    known = {tuple(int(v) for v in c) for c in DUBAI.colors}
    foreign = data.draw(arrays(bool, shape))
    colour = data.draw(colours.filter(lambda c: c not in known))
    rgb = DUBAI.encode(index)
    rgb[foreign] = colour
    decoded, unknown = DUBAI.decode(rgb)
    np.testing.assert_array_equal(unknown, foreign)
    np.testing.assert_array_equal(decoded[foreign], DUBAI.unlabeled)
    np.testing.assert_array_equal(decoded[~foreign], index[~foreign])


def test_dubai_palette_order_and_hex():
    assert DUBAI.names == ("Building", "Land", "Road", "Vegetation", "Water", "Unlabeled")
    assert DUBAI.as_hex()["Water"] == "#E2A929" and DUBAI.unlabeled == 5
