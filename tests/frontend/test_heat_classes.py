"""The confusion matrix's colours are CSS classes (the Content-Security-Policy allows no
inline style): scientist.css holds exactly the rules ``heat_css`` derives from the colour
scale, and a cell gets the class of its level."""

from __future__ import annotations

from pathlib import Path

from frontend.scientist_views import HEAT_LEVELS, heat_class, heat_css

CSS = Path(__file__).resolve().parents[2] / "frontend" / "static" / "frontend" / "scientist.css"


def test_scientist_css_holds_every_heat_class_as_computed():
    css = CSS.read_text()
    for line in heat_css().splitlines():
        assert line in css, f"scientist.css lacks or differs from: {line}"
    assert css.count(".heat-e") == HEAT_LEVELS * 2  # each class and its link rule, once


def test_cells_get_the_class_of_their_level():
    assert heat_class(0, 40, diagonal=False) == "heat-0"
    assert heat_class(1, 40, diagonal=False) == "heat-e1"  # one error is visibly not zero
    assert heat_class(40, 40, diagonal=False) == "heat-e10"
    assert heat_class(95, 98, diagonal=True) == "heat-c10"
    assert heat_class(20, 40, diagonal=True) == "heat-c6"
