"""The one markdown table writer of the experiment reports (paper tables, checkpoint interpretation, continual runs).

Only the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["markdown_cell", "markdown_table"]


def markdown_cell(value: Any) -> str:
    """``value`` as the text of one cell: a ``|`` or a line break would end the cell or the row, so both are
    escaped (and the backslash that escapes)."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown (GitHub) table: the header row, the ``| --- |`` rule, one line per row; no trailing newline."""
    lines = ["| " + " | ".join(map(markdown_cell, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(markdown_cell, row)) + " |" for row in rows]
    return "\n".join(lines)
