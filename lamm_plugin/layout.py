"""The on-disk layout of a run: file names, format tags, the checkpoint folder and how its checkpoint is found.

A run folder (``OUTPUT_DIR`` of a Dassl run) holds::

    log.txt
    config.json                    CONFIG_FILENAME: the full config the run started with
    config.yaml                    CONFIG_YAML_FILENAME: the full config of the latest start, as yacs writes it
    results.json                   RESULTS_FILENAME, "format": RESULTS_FORMAT (continual runs: CONTINUAL_FORMAT)
    prompt_learner/                MODEL_FOLDER (Dassl's model name)
        model.pth.tar-<epoch>      epoch_file(epoch), "format": CHECKPOINT_FORMAT
        model-best.pth.tar         BEST_FILE (with TEST.FINAL_MODEL best_val)
        checkpoint                 INDEX_FILE: the name of the last epoch file saved (Dassl's index)

The trainers write this layout; the sweeps, tables and checkpoint readers of :mod:`lamm_experiments` read it.
Every reader of a checkpoint (training, resume, ``--eval-only``, interpretation) goes through
:func:`read_checkpoint`, so a damaged file gets one message.
Only the standard library at import: importing this module imports neither torch nor Dassl (reading a checkpoint
imports torch).
"""

from __future__ import annotations

import os
import os.path as osp
import pickle
import re
from typing import Any, Optional

from lamm_plugin.errors import UserError

__all__ = [
    "BEST_FILE",
    "CACHE_DIR_ENV",
    "CACHE_DIRNAME",
    "CHECKPOINT_FORMAT",
    "CheckpointFormatError",
    "CONFIG_FILENAME",
    "CONFIG_YAML_FILENAME",
    "CONTINUAL_FORMAT",
    "EPOCH_FILE_PATTERN",
    "FEATURE_CACHE_FORMAT",
    "INDEX_FILE",
    "MODEL_FOLDER",
    "PRECISIONS",
    "PREDICTIONS_FORMAT",
    "RESULTS_FILENAME",
    "RESULTS_FORMAT",
    "checkpoint_epochs",
    "epoch_file",
    "find_checkpoint",
    "last_checkpoint",
    "read_checkpoint",
]

#: The results file beside Dassl's ``log.txt``, written after the final evaluation; a run is finished when it exists.
RESULTS_FILENAME = "results.json"
#: The full config a run started with (written when it starts from scratch; a resume compares the given one with it).
CONFIG_FILENAME = "config.json"
#: The full config of the latest start in a run folder, in yacs' YAML (what ``--verbose`` prints), for reading.
CONFIG_YAML_FILENAME = "config.yaml"
#: ``format`` of a training run's ``results.json``.
RESULTS_FORMAT = "lamm-results/1"
#: ``format`` of a continual run's ``results.json`` and of its ``continual`` section.
CONTINUAL_FORMAT = "lamm_plugin/continual/1"
#: ``format`` of a checkpoint (:meth:`lamm_plugin.LAMM.checkpoint_state`, and the Dassl checkpoints built on it).
CHECKPOINT_FORMAT = "lamm_plugin/1"
#: ``format`` of the JSON that ``python -m lamm_plugin.predict --format json`` writes.
PREDICTIONS_FORMAT = "lamm-predictions/1"
#: Sub-folder of a run holding the checkpoints (the name Dassl registers the model under).
MODEL_FOLDER = "prompt_learner"
#: The best-validation checkpoint (``TEST.FINAL_MODEL best_val``).
BEST_FILE = "model-best.pth.tar"
#: Dassl's index file: the name of the last checkpoint saved.
INDEX_FILE = "checkpoint"
#: Precisions of CLIP's weights and compute (``TRAINER.<NODE>.PREC``, :func:`lamm_plugin.load_clip`).
PRECISIONS = ("fp32", "fp16", "bf16", "amp")
#: The feature cache (:mod:`lamm_plugin.feature_cache`): its folder under ``DATASET.ROOT`` when neither
#: ``LAMM_CACHE.DIR`` nor the environment variable ``CACHE_DIR_ENV`` names one, and the ``format`` of its files.
CACHE_DIRNAME = ".lamm_cache"
CACHE_DIR_ENV = "LAMM_CACHE_DIR"
FEATURE_CACHE_FORMAT = "lamm_plugin/feature-cache/1"

#: Matches an epoch checkpoint's file name; group 1 is the epoch.
EPOCH_FILE_PATTERN = re.compile(r"^model\.pth\.tar-(\d+)$")


def epoch_file(epoch: int) -> str:
    """The file name of the checkpoint saved after ``epoch`` epochs (1-based, as Dassl numbers them)."""
    return f"model.pth.tar-{epoch}"


def checkpoint_epochs(folder: str) -> list[int]:
    """Epochs of the ``model.pth.tar-<epoch>`` files in ``folder``, ascending."""
    if not osp.isdir(folder):
        return []
    return sorted(int(m.group(1)) for m in map(EPOCH_FILE_PATTERN.match, os.listdir(folder)) if m)


def last_checkpoint(folder: str) -> Optional[str]:
    """File name of the newest checkpoint of ``folder``: the index's entry, else the highest epoch found."""
    index = osp.join(folder, INDEX_FILE)
    if osp.isfile(index):
        with open(index) as f:
            name = f.readline().strip()
        if name and osp.isfile(osp.join(folder, name)):
            return name
    epochs = checkpoint_epochs(folder)
    return epoch_file(epochs[-1]) if epochs else None


def find_checkpoint(folder: str, epoch: Optional[int] = None, best: bool = True) -> Optional[str]:
    """The checkpoint file of a model folder that a reader of the run wants; ``None`` when there is none.

    Args:
        folder: A model folder (``<run>/prompt_learner``).
        epoch: The checkpoint of this epoch (``model.pth.tar-<epoch>``), and nothing else.
        best: Without ``epoch``: the best-validation checkpoint when there is one; otherwise (or with ``False``)
            the last one (:func:`last_checkpoint`).

    Returns:
        The path of the file (``folder`` joined with its name).
    """
    if epoch is not None:
        path = osp.join(folder, epoch_file(epoch))
        return path if osp.isfile(path) else None
    if best and osp.isfile(osp.join(folder, BEST_FILE)):
        return osp.join(folder, BEST_FILE)
    name = last_checkpoint(folder)
    return osp.join(folder, name) if name else None


class CheckpointFormatError(UserError, RuntimeError):
    """A checkpoint file that cannot be read safely (it needs pickle) or is damaged; the message says what to do."""


def read_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Args:
        path: Checkpoint file.
        map_location: Passed to ``torch.load``.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFormatError: The file needs pickle to load (e.g. a checkpoint written by Dassl's own
            ``save_model`` in CoOp, MaPLe, ...): it is not one of ours and is not unpickled; or it is damaged.
    """
    import torch

    if not osp.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:  # a well-formed file that needs pickle (torch's advice to unpickle it is not passed on)
            raise CheckpointFormatError(
                f"{path} holds pickled Python objects ({found.group(1)}), so it was not written by lamm_plugin (whose "
                "checkpoints hold tensors and plain values only) but, e.g., by another repository's trainer. It is "
                "not loaded with pickle for safety."
            ) from err
        raise _damaged(path, err) from err
    except Exception as err:  # truncated or corrupt files fail in many ways (EOFError, RuntimeError, KeyError, ...)
        raise _damaged(path, err) from err


def _damaged(path: str, err: Exception) -> CheckpointFormatError:
    # torch's own text goes on to advise weights_only=False and filing an issue: only its first sentence is shown.
    text = re.split(r"(?<=[.)])\s|\n", str(err).strip(), maxsplit=1)[0] if str(err).strip() else ""
    return CheckpointFormatError(
        f"Checkpoint {path} is damaged ({osp.getsize(path)} bytes, {type(err).__name__}: {text}). It cannot be read: "
        "delete it; rerunning the same training command then resumes from the checkpoint before it (or starts over "
        "if there is none), and --eval-only can load another epoch with --load-epoch."
    )
