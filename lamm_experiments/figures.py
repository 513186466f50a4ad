"""Decisions shared by the figures (standard library only; the drawing imports matplotlib itself).

A figure of accuracies starts its y-axis at chance or 0, not at the data's minimum (an axis zoomed to one point
makes noise look like a result), and draws curves that coincide so that each stays visible: its own marker and
line style, a small sideways offset, and a note that says which coincide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

__all__ = ["LINESTYLES", "MARKERS", "accuracy_limits", "coinciding", "style"]

#: One marker and one line style per series, in order (they repeat after the last).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def style(index: int) -> tuple[str, str]:
    """The marker and line style of series ``index``: no two of the first ``len(MARKERS)`` series share both."""
    return MARKERS[index % len(MARKERS)], LINESTYLES[index % len(LINESTYLES)]


def accuracy_limits(values: Sequence[float], floor: float = 0.0) -> tuple[float, float]:
    """The y-range of an accuracy axis (percent): from ``floor`` (0 or chance; 0 when a value is below it) to a bit
    above the largest value (a tenth more, at least 5 points), at most 100."""
    values = [v for v in values if v is not None]
    if not values:
        return 0.0, 100.0
    low = floor if min(values) >= floor else 0.0
    top = max(values)
    return low, min(100.0, max(top + 5.0, top * 1.1))


def coinciding(curves: Mapping[str, Sequence[Optional[float]]], tolerance: float) -> list[list[str]]:
    """Groups (two or more, in the mapping's order) of curves that are within ``tolerance`` of each other at every
    point where both have a value; each curve is in at most one group (the group of the first it coincides with)."""
    names = list(curves)
    grouped: set[str] = set()
    groups = []
    for i, a in enumerate(names):
        if a in grouped:
            continue
        group = [a]
        for b in names[i + 1 :]:
            if b not in grouped and _close(curves[a], curves[b], tolerance):
                group.append(b)
        if len(group) > 1:
            grouped.update(group)
            groups.append(group)
    return groups


def _close(a: Sequence[Optional[float]], b: Sequence[Optional[float]], tolerance: float) -> bool:
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return bool(pairs) and len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in pairs)
