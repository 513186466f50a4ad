"""Checkpointing and resume of :class:`~lamm_plugin.dassl.trainer.PromptTrainer` (the files: :mod:`.checkpoints`).

Checkpoints hold only learned tensors, class names and configs (``model.checkpoint_state()``), plain optimiser and
scheduler states, what an exact resume needs (GradScaler, every random generator, best validation result,
training time) and the method's own state (:meth:`~lamm_plugin.methods.PromptMethod.extra_state`), in Dassl's
layout (``<output>/prompt_learner/model.pth.tar-<epoch>``, ``model-best.pth.tar``, ``checkpoint``); they are read
with ``torch.load(..., weights_only=True)``. Labels are matched by class name, so a checkpoint evaluates on another
class set (base -> new, ImageNet -> its variants).
"""

from __future__ import annotations

import os
import os.path as osp
from typing import Any, Optional

from lamm_plugin.dassl import checkpoints, compat, run_config
from lamm_plugin.dassl.console import emit
from lamm_plugin.errors import MissingFileError, UserError
from lamm_plugin.layout import checkpoint_epochs, epoch_file, find_checkpoint, last_checkpoint

__all__ = ["CheckpointMixin", "checkpoint_note"]


def checkpoint_note(epoch: int, max_epoch: int, path: str, freq: int, first: bool) -> Optional[str]:
    """The console's line for the checkpoint of ``epoch`` (1-based) written to ``path``, or None for no line.

    Every epoch writes a checkpoint but only some files stay (``TRAIN.CHECKPOINT_FREQ``, see
    :meth:`CheckpointMixin.after_epoch`): the first save of a process says which, the last epoch's names the file
    the run ends with; the epochs between show nothing on the console (``log.txt`` has every save).
    """
    if not (first or epoch >= max_epoch):
        return None
    if epoch >= max_epoch:
        return f"checkpoint: epoch {epoch}/{max_epoch} -> {path} (the run's final one)"
    rule = "each epoch's replaces the previous" if freq <= 0 else f"every {freq}-th stays, the others are replaced"
    return f"checkpoint: epoch {epoch}/{max_epoch} -> {path} ({rule})"


class CheckpointMixin:
    """Saving every epoch, loading for evaluation and exact resume; mixed into the trainer before ``TrainerX``.

    The trainer provides ``BEST_MODEL_FILE`` and ``TRAINING_KEYS`` (the keys a checkpoint adds to the model state),
    ``scaler`` and ``_train_seconds()``.
    """

    BEST_MODEL_FILE: str
    TRAINING_KEYS: tuple[str, ...]

    def after_epoch(self) -> None:
        """Dassl's ``after_epoch``, except that every epoch is saved, so that a killed run resumes where it was.

        ``TRAIN.CHECKPOINT_FREQ`` says which epochs' files stay (Dassl's meaning: every ``k``-th and the last; 0 =
        the last only); the newest is always there until a newer one is written. The method's end-of-epoch hook
        (:meth:`~lamm_plugin.methods.PromptMethod.on_epoch_end`: PromptSRC's GPA) runs first, so the checkpoint
        holds what it did.
        """
        self.model.method.on_epoch_end(self.model, self.epoch, self.max_epoch)
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            result = self.test(split="val")
            if result > self.best_result:
                self.best_result = result
                self.save_model(self.epoch, self.output_dir, val_result=result, model_name=self.BEST_MODEL_FILE)
        self._epochs_done = self.epoch + 1
        self.save_model(self.epoch, self.output_dir)
        freq = int(self.cfg.TRAIN.CHECKPOINT_FREQ)
        for name in self.get_model_names():
            folder = osp.join(self.output_dir, name)
            for epoch in checkpoint_epochs(folder):
                if epoch < self._epochs_done and (freq <= 0 or epoch % freq):
                    os.remove(osp.join(folder, epoch_file(epoch)))

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def save_model(
        self, epoch: int, directory: str, is_best: bool = False, val_result: Optional[float] = None, model_name=""
    ) -> None:
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = self._models[name].checkpoint_state()
            state.update(
                epoch=epoch + 1,
                optimizer=optim.state_dict() if optim is not None else None,
                scheduler=compat.scheduler_state_dict(sched) if sched is not None else None,
                val_result=None if val_result is None else float(val_result),
                # What an exact resume needs: every random generator at this epoch boundary, the GradScaler,
                # the best validation result so far and the training time spent.
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                rng=checkpoints.rng_state(),
                best_result=float(self.best_result),
                train_seconds=self._train_seconds(),
            )
            # The method's own state (PromptSRC: GPA), and the trainer's (the linear probe: its classifier).
            extra = {**self._models[name].method.extra_state(), **self.extra_checkpoint_state()}
            clash = set(extra) & set(state)
            if clash:
                raise KeyError(f"The method's or trainer's extra checkpoint state reuses keys {sorted(clash)}.")
            state.update(extra)
            folder = osp.join(directory, name)
            path = checkpoints.save_checkpoint(state, folder, model_name or None)
            if model_name:
                note = f"best validation result so far ({compat.format_val_result(val_result)}) -> {path}"
            else:
                first = not getattr(self, "_checkpoint_noted", False)
                note = checkpoint_note(epoch + 1, self.max_epoch, path, int(self.cfg.TRAIN.CHECKPOINT_FREQ), first)
                self._checkpoint_noted = True
            emit(note, f"Checkpoint saved to {path}")
            if is_best:
                checkpoints.save_checkpoint(state, folder, self.BEST_MODEL_FILE)

    def extra_checkpoint_state(self) -> dict[str, Any]:
        """What this trainer adds to each checkpoint besides the model's (tensors and plain values only; the linear
        probe: its classifier); read back by its own ``_load_state``."""
        return {}

    def _load_state(self, checkpoint: dict[str, Any], path: str, name: Optional[str] = None) -> None:
        model = self._models[name] if name is not None else self.model
        ignored = (*self.TRAINING_KEYS, *model.method.extra_state())
        core_state = {k: v for k, v in checkpoint.items() if k not in ignored}
        try:
            model.load_checkpoint_state(core_state, allow_other_weights=self._allow_other_weights())
        except ValueError as err:
            raise UserError(f"Cannot load {path} into {self.cfg.TRAINER.NAME}: {err}") from err

    def _allow_other_weights(self) -> bool:
        return bool(self.cfg.MODEL.BACKBONE.get("ALLOW_OTHER_WEIGHTS", False))

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load learned tensors for evaluation, like Dassl's ``load_model`` (``--model-dir``, ``--load-epoch``).

        Without ``epoch`` the best model is loaded, or, when none was saved (``TEST.FINAL_MODEL last_step``), the
        last checkpoint.
        """
        if not directory:
            what = "zero-shot CLIP" if self.optim is None else "the untrained model (learned tensors as initialised)"
            print(f"Note: no --model-dir given: this evaluates {what}")
            self._untrained_eval = True
            return
        for name in self.get_model_names():
            path = self._model_path(directory, name, epoch)
            checkpoint = compat.load_checkpoint(path)
            val_result = compat.format_val_result(checkpoint.get("val_result"))
            print(f"Load {path} to {name} (epoch={checkpoint.get('epoch')}, val_result={val_result})")
            self._load_state(checkpoint, path, name)
            self._loaded_checkpoint = {"path": osp.abspath(path), "epoch": checkpoint.get("epoch")}

    def _model_path(self, directory: str, name: str, epoch: Optional[int]) -> str:
        folder = osp.join(directory, name)
        model_file = self.BEST_MODEL_FILE if epoch is None else epoch_file(epoch)
        path = osp.join(folder, model_file)
        found = find_checkpoint(folder, epoch)
        if found is not None:
            if osp.basename(found) != model_file:  # no best model: the last checkpoint
                last = osp.basename(found)
                print(f"No {model_file} in {folder} (saved only with TEST.FINAL_MODEL best_val); loading {last}")
            return found
        found = sorted(f for f in os.listdir(folder) if f.startswith("model")) if osp.isdir(folder) else []
        raise MissingFileError(
            f"No model at {path} (found: {', '.join(found) or 'nothing'}): give a --load-epoch found there, or "
            "leave it out for the best (else the last) model."
        )

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume from the newest checkpoint in ``directory`` exactly where the run stopped (Dassl's hook).

        Restores the learned tensors, optimiser, schedule, GradScaler, best validation result, training time, the
        method's own state (:meth:`~lamm_plugin.methods.PromptMethod.extra_state`) and every random generator as they
        were at the end of that epoch, so the rest of the run is the one it would have been without the interruption.
        The config given must equal the one the run started with (``config.json``) but for
        :data:`~lamm_plugin.dassl.run_config.ALLOWED_TO_DIFFER`: a difference that changes results raises
        :class:`~lamm_plugin.dassl.run_config.RunConfigMismatchError`. Without a checkpoint, training starts from
        scratch with the generators as building the trainer left them, as in Dassl and the originals' ``train.py``
        (``SEED`` was set before the dataset was built; a run that finds its few-shot cache makes the draws that
        wrote it again, so this state does not depend on earlier attempts), and the config is written to
        ``config.json``.
        """
        names = self.get_model_names()
        for name in names:
            for partial in checkpoints.remove_partial_writes(osp.join(directory, name)):
                print(f"Removed {partial}: a checkpoint write that was interrupted")
        found = {name: last_checkpoint(osp.join(directory, name)) for name in names}
        if any(file is None for file in found.values()):
            print("No checkpoint found, train from scratch")
            run_config.save(self.cfg, self.output_dir)  # what a resume of this folder is compared with
            return 0
        stored = run_config.stored_config(directory)
        if stored is None:
            print(f"Note: {directory} keeps no config of the run (an older run folder): the config is not compared")
        else:
            where = osp.join(directory, run_config.CONFIG_FILENAME)
            run_config.check_same_experiment(stored, self.cfg, where, "resumed", directory)
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            path = osp.join(directory, name, found[name])
            print(f'Loading checkpoint from "{path}"')
            checkpoint = compat.load_checkpoint(path)
            self._load_state(checkpoint, path, name)
            print("Loaded model weights")
            if self._optims[name] is not None and checkpoint.get("optimizer") is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
                print("Loaded optimizer")
            if self._scheds[name] is not None and checkpoint.get("scheduler") is not None:
                compat.load_scheduler_state_dict(self._scheds[name], checkpoint["scheduler"])
                print("Loaded scheduler")
            if self.scaler is not None and checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            if checkpoint.get("rng") is not None:
                checkpoints.set_rng_state(checkpoint["rng"])
            self.best_result = checkpoint.get("best_result", self.best_result)
            self._train_seconds_before = float(checkpoint.get("train_seconds") or 0.0)
            method = self._models[name].method
            method.load_extra_state({key: checkpoint.get(key) for key in method.extra_state()})
            start_epoch = checkpoint["epoch"]
            print(f"Previous epoch: {start_epoch}")
        self._epochs_done = start_epoch
        return start_epoch
