"""Checkpoint files that survive a kill at any moment, and the random state that makes a resumed run exact.

* :func:`save_checkpoint` writes ``model.pth.tar-<epoch>`` in Dassl's layout, atomically (temporary file, fsync,
  rename), and updates the ``checkpoint`` index last, the same way: a kill leaves the previous checkpoint and
  index intact, never half a file.
* :func:`lamm_plugin.layout.last_checkpoint` then finds the newest checkpoint from the index, or by scanning the
  folder when the index is missing or names a file that is gone.
* :func:`rng_state` / :func:`set_rng_state` capture and restore every random generator a training epoch draws
  from (torch CPU and CUDA, numpy, Python): the data sampler's order and the augmentation workers' seeds are
  drawn from torch's generator when an epoch starts, so restoring it at an epoch boundary replays them exactly.
"""

from __future__ import annotations

import os
import os.path as osp
import random
import re
from typing import Any, Optional

import numpy as np
import torch

from lamm_plugin.files import write_atomic
from lamm_plugin.layout import EPOCH_FILE_PATTERN, INDEX_FILE, epoch_file

__all__ = [
    "remove_partial_writes",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_atomic",
]

_PARTIAL_FILE = re.compile(r"\.tmp\d+$")


def save_checkpoint(state: dict[str, Any], folder: str, filename: Optional[str] = None) -> str:
    """Save ``state`` as ``folder/<filename>`` (default ``model.pth.tar-<epoch>``) atomically; returns the path.

    Epoch checkpoints also become the index's entry (Dassl's ``checkpoint`` file), written after the checkpoint.
    """
    filename = filename or epoch_file(state["epoch"])
    path = osp.join(folder, filename)
    write_atomic(path, lambda f: torch.save(state, f))
    if EPOCH_FILE_PATTERN.match(filename):
        write_atomic(osp.join(folder, INDEX_FILE), lambda f: f.write(f"{filename}\n".encode()))
    return path


def remove_partial_writes(folder: str) -> list[str]:
    """Delete what a process killed inside :func:`write_atomic` left behind (``<name>.tmp<pid>``); returns them."""
    if not osp.isdir(folder):
        return []
    partial = sorted(name for name in os.listdir(folder) if _PARTIAL_FILE.search(name))
    for name in partial:
        os.remove(osp.join(folder, name))
    return partial


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain values (loads with ``weights_only=True``)."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "keys": list(keys), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` output."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["keys"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
