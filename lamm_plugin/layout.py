"""The on-disk layout of a run: file names, format tags, the checkpoint folder and how its checkpoint is found.

A run folder (``OUTPUT_DIR`` of a Dassl run) holds::

    log.txt
    results.json                   RESULTS_FILENAME, "format": RESULTS_FORMAT (continual runs: CONTINUAL_FORMAT)
    prompt_learner/                MODEL_FOLDER (Dassl's model name)
        model.pth.tar-<epoch>      epoch_file(epoch), "format": CHECKPOINT_FORMAT
        model-best.pth.tar         BEST_FILE (with TEST.FINAL_MODEL best_val)
        checkpoint                 INDEX_FILE: the name of the last epoch file saved (Dassl's index)

The trainers write this layout; the sweeps, tables and checkpoint readers of :mod:`lamm_experiments` read it. Only
the standard library: importing this module imports neither torch nor Dassl.
"""

from __future__ import annotations

import os
import os.path as osp
import re
from typing import Optional

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FORMAT",
    "CONTINUAL_FORMAT",
    "EPOCH_FILE_PATTERN",
    "INDEX_FILE",
    "MODEL_FOLDER",
    "PRECISIONS",
    "RESULTS_FILENAME",
    "RESULTS_FORMAT",
    "checkpoint_epochs",
    "epoch_file",
    "find_checkpoint",
    "last_checkpoint",
]

#: The results file beside Dassl's ``log.txt``, written after the final evaluation; a run is finished when it exists.
RESULTS_FILENAME = "results.json"
#: ``format`` of a training run's ``results.json``.
RESULTS_FORMAT = "lamm-results/1"
#: ``format`` of a continual run's ``results.json`` and of its ``continual`` section.
CONTINUAL_FORMAT = "lamm_plugin/continual/1"
#: ``format`` of a checkpoint (:meth:`lamm_plugin.LAMM.checkpoint_state`, and the Dassl checkpoints built on it).
CHECKPOINT_FORMAT = "lamm_plugin/1"
#: Sub-folder of a run holding the checkpoints (the name Dassl registers the model under).
MODEL_FOLDER = "prompt_learner"
#: The best-validation checkpoint (``TEST.FINAL_MODEL best_val``).
BEST_FILE = "model-best.pth.tar"
#: Dassl's index file: the name of the last checkpoint saved.
INDEX_FILE = "checkpoint"
#: Precisions of CLIP's weights and compute (``TRAINER.<NODE>.PREC``, :func:`lamm_plugin.load_clip`).
PRECISIONS = ("fp32", "fp16", "bf16", "amp")

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
