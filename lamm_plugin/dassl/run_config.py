"""The config that shaped a run, kept in its folder, and the check that a resume or a finished run's report is for
the experiment asked.

A run writes its full config to ``<output>/config.json`` (:data:`~lamm_plugin.layout.CONFIG_FILENAME`) when it
starts from scratch; ``results.json`` carries it too. A resume compares that config with the one given, and so does
the finished-run check; a difference in a key that can change results is refused with
:class:`RunConfigMismatchError`, which names the keys and the ways out. Only the keys of :data:`ALLOWED_TO_DIFFER`
(where files go, how the data is read and how often the run reports or keeps checkpoints) may differ.
"""

from __future__ import annotations

import json
import os.path as osp
from collections.abc import Mapping
from typing import Any, Optional

from lamm_plugin.dassl.results import cfg_to_dict, write_json
from lamm_plugin.errors import UserError
from lamm_plugin.layout import CONFIG_FILENAME

__all__ = [
    "ALLOWED_TO_DIFFER",
    "CONFIG_FILENAME",
    "RunConfigMismatchError",
    "check_same_experiment",
    "config_differences",
    "save",
    "stored_config",
]

#: Config keys that cannot change a run's result; everything else must match for a resume or a finished-run report.
ALLOWED_TO_DIFFER = frozenset(
    {
        "OUTPUT_DIR",  # the folder itself (a moved run folder)
        "RESUME",
        "DATASET.ROOT",  # a moved or copied data folder (cached few-shot paths resolve under the current root)
        "DATALOADER.NUM_WORKERS",
        "TRAIN.PRINT_FREQ",
        "TRAIN.CHECKPOINT_FREQ",
        "VERBOSE",
        "DATASET.ALLOW_TRAIN_TEST_OVERLAP",  # decides whether a run starts, never what it computes
        # The caches return the tensors they would compute (lamm_plugin.feature_cache, lamm_plugin.dassl.decoded):
        # on, off or moved alike; a run folder made before them has none of these keys.
        "LAMM_CACHE.DIR",
        "LAMM_CACHE.TEST_FEATURES",
        "LAMM_CACHE.TEXT_FEATURES",
        "LAMM_CACHE.DECODED_IMAGES",
        "LAMM_CACHE.DECODED_MAX_MB",
    }
)

_ABSENT = "(absent)"


class RunConfigMismatchError(UserError):
    """A run folder holds a run of another config than the one given (the message names the keys and what to do)."""


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(stored: Mapping[str, Any], given: Any) -> list[tuple[str, Any, Any]]:
    """The keys, outside :data:`ALLOWED_TO_DIFFER`, whose values differ between two configs.

    Args:
        stored: The config a run was shaped by, as :func:`~lamm_plugin.dassl.results.cfg_to_dict` wrote it.
        given: The config given now (a yacs node or the same plain form).

    Returns:
        ``(key, stored value, given value)`` per differing key, sorted by key; a key only one side has shows
        ``"(absent)"`` on the other.
    """
    old, new = _flatten(stored), _flatten(cfg_to_dict(given))
    keys = sorted((set(old) | set(new)) - ALLOWED_TO_DIFFER)
    return [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in keys if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def save(cfg: Any, folder: str) -> str:
    """Write ``cfg`` to ``folder/config.json`` (atomically); returns the path."""
    path = osp.join(folder, CONFIG_FILENAME)
    write_json(cfg_to_dict(cfg), path)
    return path


def stored_config(folder: str) -> Optional[dict[str, Any]]:
    """The config kept in ``folder/config.json``; ``None`` when there is none (a run folder of an older version)."""
    path = osp.join(folder, CONFIG_FILENAME)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise RunConfigMismatchError(
            f"{path} should hold the config this run folder was trained with, but cannot be read ({err}): delete the "
            "folder to train again, or give another --output-dir."
        ) from err
    return config if isinstance(config, dict) else None


def check_same_experiment(stored: Mapping[str, Any], given: Any, where: str, action: str, folder: str) -> None:
    """Raise :class:`RunConfigMismatchError` when ``given`` differs from ``stored`` in a key that changes results.

    Args:
        stored: The config the run was shaped by.
        given: The config given now.
        where: The file ``stored`` comes from (named in the message).
        action: What was about to happen (``"resumed"``, ``"reported as finished"``).
        folder: The run folder (named in the ways out).
    """
    diffs = config_differences(stored, given)
    if not diffs:
        return
    shown = "; ".join(f"{key}: {old} -> {new}" for key, old, new in diffs[:12])
    more = f"; and {len(diffs) - 12} more" if len(diffs) > 12 else ""
    raise RunConfigMismatchError(
        f"The run in {folder} was made with another config ({where}) than the one given, in keys that change "
        f"results: {shown}{more}. It is not {action} under the new config. Either rerun the same command as before "
        f"(its values), give another --output-dir for the new experiment, or delete {folder} to start it over. Keys "
        f"that may differ: {', '.join(sorted(ALLOWED_TO_DIFFER))}."
    )
