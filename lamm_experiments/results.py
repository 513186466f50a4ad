"""Reading a run's ``results.json`` for the sweeps and tables: a file that cannot be used is named with the reason.

A results file is *usable* when it is a JSON object whose ``accuracy`` is a finite number of percent (0 to 100; a
bool, a string such as ``"52.5%"``, NaN or infinity is not). A file that is empty, truncated, not an object or
without a usable accuracy raises :class:`ResultsFileError`, whose message holds the path, what is wrong and what to
do; the table scripts skip such runs and list them, the sweep runs their job again.

Only the standard library.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

from lamm_plugin.errors import UserError

__all__ = ["ResultsFileError", "accuracy_of", "continual_section", "read_results", "usable"]

#: What to do with a results file that cannot be used (the run's folder keeps its checkpoints).
REMEDY = "delete the file and rerun its job (it resumes from its checkpoints), or remove the run's folder"


class ResultsFileError(UserError):
    """A ``results.json`` that cannot be used; ``path`` and ``reason`` are kept for listings.

    Args:
        path: The file.
        reason: What is wrong with it, e.g. ``not valid JSON (an empty or truncated file)``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}; {REMEDY}")
        self.path = path
        self.reason = reason


def accuracy_of(results: dict[str, Any], path: str, key: str = "accuracy") -> float:
    """The value of ``key`` in a parsed results file as a percentage.

    Raises:
        ResultsFileError: It is missing, not a number (a string such as ``"52.5%"``, a bool), not finite, or
            outside 0 to 100.
    """
    value = results.get(key)
    if value is None:
        raise ResultsFileError(path, f"has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultsFileError(path, f"{key!r} is {value!r}, not a number of percent")
    if not math.isfinite(value):
        raise ResultsFileError(path, f"{key!r} is {value!r}: the run diverged or its evaluation failed")
    if not 0.0 <= value <= 100.0:
        raise ResultsFileError(path, f"{key!r} is {value!r}, outside 0 to 100 percent")
    return float(value)


def read_results(path: str, key: Optional[str] = "accuracy") -> dict[str, Any]:
    """The parsed results file at ``path``, checked for a usable ``key`` (pass ``None`` to check only the JSON).

    Raises:
        ResultsFileError: It cannot be read, is not a JSON object, or ``key`` is not usable (:func:`accuracy_of`).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsFileError(path, f"cannot be read ({type(e).__name__}: {e})") from None
    if not text.strip():
        raise ResultsFileError(path, "is empty (the run was cut off while writing it)")
    try:
        results = json.loads(text)
    except ValueError as e:
        raise ResultsFileError(path, f"is not valid JSON, a truncated file? ({e})") from None
    if not isinstance(results, dict):
        raise ResultsFileError(path, f"holds a JSON {type(results).__name__}, not an object")
    if key is not None:
        accuracy_of(results, path, key)
    return results


#: Metrics of a finished continual run that must be numbers; the others may be None (nothing to forget yet).
CONTINUAL_REQUIRED = ("average_incremental_accuracy", "last_accuracy")
CONTINUAL_OPTIONAL = ("average_forgetting", "average_forgetting_per_class")


def _number(value: Any, path: str, what: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultsFileError(path, f"{what} is {value!r}, not a number")
    if not math.isfinite(value):
        raise ResultsFileError(path, f"{what} is {value!r}: the run diverged or its evaluation failed")


def continual_section(results: dict[str, Any], path: str) -> Optional[dict[str, Any]]:
    """The ``continual`` section of a parsed results file, checked; None when the file has none.

    A section without ``metrics`` is a run still going (callers leave it out). A finished one needs an integer
    ``num_stages``, numbers for the average incremental and last accuracy, numbers or None for the forgetting
    metrics (also those of ``within_stage``) and numbers in ``seen_accuracy``.

    Raises:
        ResultsFileError: The section is not an object or a value above is malformed.
    """
    if "continual" not in results:
        return None
    section = results["continual"]
    if not isinstance(section, dict):
        raise ResultsFileError(path, f"'continual' is a JSON {type(section).__name__}, not an object")
    stages = section.get("num_stages")
    if "num_stages" in section and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 1):
        raise ResultsFileError(path, f"'continual' 'num_stages' is {stages!r}, not a number of stages")
    metrics = section.get("metrics")
    if not metrics:
        return section
    if not isinstance(metrics, dict) or "num_stages" not in section:
        raise ResultsFileError(path, "'continual' has metrics but no 'num_stages', or metrics that are no object")
    for key in CONTINUAL_REQUIRED + CONTINUAL_OPTIONAL:
        _number(metrics.get(key), path, f"'continual' metric {key!r}", optional=key in CONTINUAL_OPTIONAL)
    within = section.get("within_stage")
    if within is not None:
        inner = within.get("metrics") if isinstance(within, dict) else within
        if inner is not None and not isinstance(inner, dict):
            raise ResultsFileError(path, "'continual' 'within_stage' metrics are not an object")
        _number((inner or {}).get("average_forgetting"), path, "'within_stage' 'average_forgetting'", optional=True)
    seen = section.get("seen_accuracy", [])
    if not isinstance(seen, list):
        raise ResultsFileError(path, f"'continual' 'seen_accuracy' is {seen!r}, not a list")
    for value in seen:
        _number(value, path, "a value of 'continual' 'seen_accuracy'")
    return section


_USABLE: dict[str, tuple[tuple[int, int], bool]] = {}


def usable(path: str) -> bool:
    """Whether ``path`` is a usable results file (:func:`read_results` raises nothing); remembered per file version.

    The sweep asks this of every job after each job it runs, so a file is parsed again only when it changed.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    version = (st.st_mtime_ns, st.st_size)
    known = _USABLE.get(path)
    if known is not None and known[0] == version:
        return known[1]
    try:
        read_results(path)
        ok = True
    except ResultsFileError:
        ok = False
    _USABLE[path] = (version, ok)
    return ok
