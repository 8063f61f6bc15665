"""Resumable training: Orbax checkpoints of a run, and the fingerprint that says which run they belong to.

A checkpoint holds the train state (model and optimizer), the best weights so far and the
`Progress` (epoch, history, callbacks' counters); it is resumed only by the run with the same
fingerprint (the same params, data, code and devices), so a changed run starts over.

Each checkpoint folder gets a SHA256SUMS (flaxvision.files) once Orbax has finished it. A
checkpoint is resumed only if its files match it, its arrays are finite and the caller's check
passes (fit re-validates the best weights); else it is deleted, said in one line, and the one
before it is tried (the last two are kept).
"""

import dataclasses
import errno
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from flaxvision import interrupts
from flaxvision.errors import UserError
from flaxvision.files import CHECKSUMS, find_damage, write_checksums
from flaxvision.model_folder import nonfinite

SAVE_OVERHEAD_BYTES = 1 << 20  # a checkpoint's metadata and its files' last blocks, beyond the arrays


@dataclasses.dataclass
class Progress:
    """Everything besides arrays that a resumed run needs (saved as JSON with the checkpoint)."""

    fingerprint: str
    epoch: int = 0
    learning_rate: float = 0.0
    history: list = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    early_stopping: dict = dataclasses.field(default_factory=dict)
    reduce_lr: dict = dataclasses.field(default_factory=dict)
    # A checkpoint within an epoch: its next step, the loss and correct sums so far, and the
    # loader's iterator state (Training.train_epoch); empty after a whole epoch.
    partial: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> dict:
        """The run in a few numbers: its best epoch (counted from 1), how many ran, and the best one's metrics."""
        best = self.history[self.best_epoch]
        return {"best_epoch": self.best_epoch + 1, "epochs": self.epoch, "train": best["train"], "val": best["val"]}


class Checkpoints:
    """Latest train state and best weights, one Orbax step per checkpoint (numbered by train steps done)."""

    def __init__(self, directory: Path) -> None:
        # Orbax needs an absolute path (a relative one fails in a background thread). Saves are
        # synchronous because the next train step donates (frees) the buffers being saved. A save
        # killed part-way leaves a `<step>.orbax-checkpoint-tmp` folder, ignored when resuming;
        # Orbax removes it when saving that step again, or (as asked here) when the next run starts.
        # Two are kept: the one before the latest is the fallback when the latest is damaged.
        self.directory = Path(directory)
        self.manager = ocp.CheckpointManager(
            self.directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=2, enable_async_checkpointing=False, cleanup_tmp_directories=True
            ),
        )

    def save(self, step: int, state: nnx.State, best_model_state: nnx.State, progress: Progress) -> None:
        self._check_room(state, best_model_state)
        with interrupts.deferred():  # till the checkpoint is whole
            self._save(step, state, best_model_state, progress)

    def _save(self, step: int, state: nnx.State, best_model_state: nnx.State, progress: Progress) -> None:
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    best=ocp.args.StandardSave(best_model_state),
                    progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
                ),
            )
        except Exception as error:  # Orbax words a full disk as a tensorstore RESOURCE_EXHAUSTED error
            for unfinished in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(unfinished, ignore_errors=True)
            if "RESOURCE_EXHAUSTED" in str(error) or "No space left" in str(error):
                raise OSError(errno.ENOSPC, "No space left on device", str(self.directory)) from None
            raise
        if jax.process_index() == 0:  # the one that wrote it (Orbax's primary host)
            write_checksums(self.directory / str(step))

    def _check_room(self, *arrays: nnx.State) -> None:
        """Refuse a save that cannot fit: on a full disk each of Orbax's threads prints its traceback."""
        needed = sum(leaf.nbytes for leaf in jax.tree.leaves(arrays)) + SAVE_OVERHEAD_BYTES
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            detail = f"a checkpoint needs {needed / 2**20:.1f} MB, {free / 2**20:.1f} MB are free"
            raise OSError(errno.ENOSPC, detail, str(self.directory))

    def restore(
        self,
        fingerprint: str,
        state_like: nnx.State,
        best_like: nnx.State,
        check: Callable[[nnx.State, nnx.State, Progress], str] = lambda *restored: "",
    ) -> tuple[nnx.State, nnx.State, Progress] | None:
        """(state, best, progress) of the latest intact checkpoint of this very run, else None.

        ``check(state, best, progress)`` says what is wrong with a restored checkpoint ('' if
        nothing). Damaged checkpoints are deleted, each said in one line, and the one before is
        tried. When one was damaged and none is left, a UserError says so rather than starting
        over unasked (a damaged file may be a failing disk); the next run starts over.
        """
        damaged = ""
        for step in sorted(self.manager.all_steps(), reverse=True):
            folder = self.directory / str(step)
            if not (folder / CHECKSUMS).is_file():  # killed right after Orbax finished it
                self.manager.delete(step)
                continue
            if not (damage := find_damage(folder)):
                try:
                    progress = self._read(step, progress=ocp.args.JsonRestore())
                    if progress["progress"]["fingerprint"] != fingerprint:
                        print(
                            f"{self.directory} holds another run's checkpoints "
                            "(other params, data, code or devices): starting over"
                        )
                        return None
                    restored = self._read(
                        step,
                        state=ocp.args.StandardRestore(nnx.eval_shape(lambda: state_like)),
                        best=ocp.args.StandardRestore(nnx.eval_shape(lambda: best_like)),
                    )
                    state, best, progress = restored["state"], restored["best"], Progress(**progress["progress"])
                    if name := nonfinite((state, best)):
                        damage = f"{folder} holds NaN or infinite values in {name}"
                    elif problem := check(state, best, progress):
                        damage = f"{folder} is damaged ({problem})"
                except Exception as error:  # anything failing to read back (matching its digests) is damage too
                    reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
                    damage = f"{folder} is unreadable ({reason})"
            if not damage:
                return state, best, progress
            damaged = damaged or damage
            print(f"warning: {damage}; deleted {folder}", file=sys.stderr)
            self.manager.delete(step)
        if damaged:
            raise UserError(f"{damaged}; no intact checkpoint is left (deleted): rerun to train from the start")
        return None

    def _read(self, step: int, **items: ocp.args.CheckpointArgs) -> ocp.args.Composite:
        with interrupts.deferred():  # as saves: Orbax's threads must not be left reading
            return self.manager.restore(step, args=ocp.args.Composite(**items))

    def clear(self) -> None:
        for step in self.manager.all_steps():
            self.manager.delete(step)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def fingerprint(*parts: object) -> str:
    """A digest of everything that defines a run, so a checkpoint is only resumed by its own run."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, Path):  # a file, by its content
            with part.open("rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()
