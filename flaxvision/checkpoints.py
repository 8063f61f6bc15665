"""Resumable training: Orbax checkpoints of a run, and the fingerprint that says which run they belong to.

A checkpoint holds the train state (model and optimizer), the best weights so far and the
`Progress` (epoch, history, callbacks' counters); it is resumed only by the run with the same
fingerprint (the same params, data and code), so a changed run starts over.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


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

    def __init__(self, directory: Path):
        # Orbax needs an absolute path (a relative one fails in a background thread). Saves are
        # synchronous because the next train step donates (frees) the buffers being saved. A save
        # killed part-way leaves a `<step>.orbax-checkpoint-tmp` folder, ignored when resuming;
        # Orbax removes it when saving that step again, or (as asked here) when the next run starts.
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, enable_async_checkpointing=False, cleanup_tmp_directories=True
            ),
        )

    def save(self, step: int, state, best_model_state, progress: Progress):
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                best=ocp.args.StandardSave(best_model_state),
                progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
            ),
        )

    def restore(self, fingerprint: str, state_like, best_like):
        """(state, best, progress) of the latest checkpoint of this very run, else None."""
        step = self.manager.latest_step()
        if step is None:
            return None
        progress = self.manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
        if progress["progress"]["fingerprint"] != fingerprint:
            return None  # left by a run with other params or data: start over
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(nnx.eval_shape(lambda: state_like)),
                best=ocp.args.StandardRestore(nnx.eval_shape(lambda: best_like)),
            ),
        )
        return restored["state"], restored["best"], Progress(**progress["progress"])

    def clear(self):
        for step in self.manager.all_steps():
            self.manager.delete(step)

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def fingerprint(*parts) -> str:
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
