"""Training: one jitted update with donated state, Keras-style callbacks, resumable from checkpoints.

The dataset lives on the devices as uint8; each step gathers its batch by index, augments and
preprocesses it inside the compiled function, so the host only sends a vector of indices.
With several devices (all of them, over every host after ``jax.distributed.initialize()``), the
state and the dataset are replicated and each batch is split over a one-axis ("data") mesh:
XLA partitions the step and averages the gradients, and BatchNorm still sees the whole batch.
Everything random is derived from the seed and the step number (shuffles, augmentation) or
kept in the checkpointed model state (dropout), which makes runs repeatable and lets a killed
run resume from its latest checkpoint with the same result as an uninterrupted one.
"""

import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from tqdm import tqdm

from flaxvision.checkpoints import Checkpoints, Progress
from flaxvision.errors import UserError
from flaxvision.evaluation import loss_and_accuracy, make_predict_step, predict
from flaxvision.models.scaling import preprocess_input
from flaxvision.transforms import AugmentConfig, augment


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 20
    batch_size: int = 32
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    batchnorm_momentum: float | None = None  # None: the model's own (Keras' 0.99)
    early_stopping_patience: int = 25
    reduce_lr_patience: int = 0
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    # bfloat16: convolutions and dense layers compute in bf16 (for GPU/TPU); parameters, BatchNorm
    # statistics, the loss and the optimizer stay float32.
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 < self.reduce_lr_factor < 1:
            raise ValueError(f"reduce_lr_factor must be in (0, 1), got {self.reduce_lr_factor}")
        if self.batchnorm_momentum is not None and not 0 <= self.batchnorm_momentum < 1:
            raise ValueError(f"batchnorm_momentum must be in [0, 1), got {self.batchnorm_momentum}")


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer, with the learning rate injected so plateaus can lower it."""
    if config.optimizer == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)
    return optax.inject_hyperparams(optax.sgd)(
        learning_rate=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov
    )


@dataclasses.dataclass
class Plateau:
    """Counts epochs since the monitored loss last improved (Keras callbacks' bookkeeping)."""

    patience: int
    best: float = math.inf
    wait: int = 0

    def update(self, value: float) -> bool:
        """Record an epoch's value; True if it is a new best."""
        if value < self.best:
            self.best, self.wait = value, 0
            return True
        self.wait += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.patience > 0 and self.wait >= self.patience


class Trainer:
    """Owns the model and optimizer state and the two compiled steps (train, predict).

    The model is built for the config (flaxvision.builder: compute dtype, BatchNorm momentum);
    the trainer only casts each batch to ``config.compute_dtype``.
    """

    def __init__(self, model: nnx.Module, config: TrainConfig, augment_config: AugmentConfig, preprocessing: str):
        self.config = config
        self.augment_config = augment_config
        self.preprocessing = preprocessing
        model.eval()
        self.eval_graph = nnx.graphdef(model)
        model.train()
        optimizer = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)

        devices = jax.device_count()
        if config.batch_size % devices:
            raise UserError(
                f"params.yaml: train.batch_size {config.batch_size} must be a multiple of the "
                f"{devices} devices it is split over"
            )
        self._devices = devices
        self._batch_sizes: dict[int, int] = {}  # training-set size -> its batch size (each clamp is reported once)
        mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))  # XLA partitions the step
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        self.train_graph, state = nnx.split((model, optimizer))
        self.state = jax.device_put(state, self.replicated)
        self.augment_key = jax.random.key(config.seed)
        self.train_step = jax.jit(self._train_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated))
        self._predict_step = make_predict_step(self.eval_graph, preprocessing)

    # --- compiled steps -------------------------------------------------------------------

    def _train_step(self, state, images, labels, indices, learning_rate):
        model, optimizer = nnx.merge(self.train_graph, state)
        optimizer.opt_state.hyperparams["learning_rate"][...] = learning_rate
        key = jax.random.fold_in(self.augment_key, optimizer.step[...])
        batch = jax.lax.with_sharding_constraint(images[indices], self.batch_sharding)
        batch = augment(batch.astype(jnp.float32), key, self.augment_config)
        batch = preprocess_input(batch, self.preprocessing).astype(self.config.compute_dtype)
        batch_labels = labels[indices]

        def loss_fn(model):
            logits = model(batch).astype(jnp.float32)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch_labels).mean()
            return loss, logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        correct = jnp.sum(jnp.argmax(logits, -1) == batch_labels)
        return nnx.state((model, optimizer)), {"loss": loss * len(indices), "correct": correct}

    # --- host loops -----------------------------------------------------------------------

    @property
    def model_state(self):
        return self.state[0]

    @property
    def model(self) -> nnx.Module:
        """The model in eval mode, with the current weights."""
        return nnx.merge(self.eval_graph, self.model_state)

    def batch_size(self, count: int) -> int:
        """train.batch_size, or for a training set smaller than that the largest multiple of the
        device count that fits, said once on stderr."""
        if count not in self._batch_sizes:
            wanted = self.config.batch_size
            fitting = count // self._devices * self._devices
            if not fitting:
                raise UserError(
                    f"the training split has {count} images, fewer than the {self._devices} devices "
                    "a batch is split over: add images or lower preprocess.val_fraction/test_fraction"
                )
            if fitting < wanted:
                tqdm.write(
                    f"warning: params.yaml train.batch_size {wanted} is more than the {count} training "
                    f"images: training with batches of {fitting}; set train.batch_size to {fitting} or less, "
                    "or add images",
                    file=sys.stderr,
                )  # on its own line, above the progress bars
            self._batch_sizes[count] = min(wanted, fitting)
        return self._batch_sizes[count]

    def train_epoch(self, images, labels, epoch: int, learning_rate: float) -> dict:
        """One pass over the shuffled training set (the last partial batch is dropped)."""
        batch_size = self.batch_size(len(labels))
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(labels))
        steps = len(order) // batch_size
        totals = {"loss": 0.0, "correct": 0}
        lr = jnp.float32(learning_rate)
        for step in tqdm(range(steps), desc=f"epoch {epoch + 1}", unit="step", leave=False, disable=None):
            indices = jnp.asarray(order[step * batch_size : (step + 1) * batch_size], jnp.int32)
            self.state, metrics = self.train_step(self.state, images, labels, indices, lr)
            totals = jax.tree.map(jnp.add, totals, metrics)  # stays on device: no sync per step
        count = steps * batch_size
        return {"loss": float(totals["loss"]) / count, "accuracy": float(totals["correct"]) / count}

    def predict(self, images) -> np.ndarray:
        return predict(self._predict_step, self.model_state, images, self.config.batch_size)

    def replicate(self, tree):
        """Put arrays (a dataset, a restored state) on every device of the mesh."""
        return jax.device_put(tree, self.replicated)


def check_finite(epoch: int, train_loss: float, val_loss: float, learning_rate: float):
    """Stop a diverged run: a NaN or infinite loss must never become a result or a best epoch."""
    if math.isfinite(train_loss) and math.isfinite(val_loss):
        return
    raise UserError(
        f"training diverged in epoch {epoch + 1} (train loss {train_loss}, val loss {val_loss}); nothing "
        f"was saved: lower train.learning_rate (now {learning_rate:g}), lower train.batchnorm_momentum "
        "or set train.compute_dtype to float32"
    )


def epoch_summary(epoch: int, epochs: int, metrics: dict) -> str:
    """One epoch's line, as Keras' fit prints it: ``epoch 3/20: loss 0.612 accuracy 0.671 | val ...``."""
    train, val = (
        " ".join(f"{name} {value:.4f}" for name, value in metrics[split].items()) for split in ("train", "val")
    )
    return f"epoch {epoch + 1}/{epochs}: {train} | val {val} | lr {metrics['learning_rate']:.3g}"


def epoch_logger(live) -> Callable[[int, dict], None]:
    """An ``on_epoch`` for `fit` that logs each epoch's metrics to a dvclive ``Live``: train/* and
    val/* (loss, accuracy) and the learning rate, with the epoch (counted from 1) as the step."""

    def log_epoch(epoch: int, metrics: dict) -> None:
        live.step = epoch + 1
        for split in ("train", "val"):
            for name, value in metrics[split].items():
                live.log_metric(f"{split}/{name}", value)
        live.log_metric("learning_rate", metrics["learning_rate"])
        live.next_step()

    return log_epoch


def fit(
    trainer: Trainer,
    train: tuple,
    validation: tuple,
    checkpoint_dir: Path,
    run_id: str,
    on_epoch: Callable[[int, dict], None] = lambda epoch, metrics: None,
) -> Progress:
    """Train with early stopping and LR reduction on val_loss; leave the best weights in trainer.

    A NaN or infinite loss stops the run with a UserError before that epoch is logged or saved.

    Resumes from ``checkpoint_dir`` when it holds a checkpoint of the same ``run_id``.
    ``on_epoch(epoch, metrics)`` is called for every epoch, replayed ones included, so loggers
    see the full history after a resume.
    """
    config = trainer.config
    train_images, train_labels = trainer.replicate(train)
    val_images, val_labels = validation
    val_images_device = trainer.replicate(val_images)
    if len(val_labels) == 0:
        raise UserError("the validation split is empty: raise preprocess.val_fraction")

    checkpoints = Checkpoints(checkpoint_dir)
    best_model_state = jax.tree.map(jnp.copy, trainer.model_state)
    restored = checkpoints.restore(run_id, trainer.state, best_model_state)
    if restored is None:
        checkpoints.clear()
        progress = Progress(fingerprint=run_id, learning_rate=config.learning_rate)
    else:
        state, best_model_state, progress = restored
        trainer.state, best_model_state = trainer.replicate((state, best_model_state))
        print(f"resuming from the checkpoint after epoch {progress.epoch} in {checkpoint_dir}")
    early_stopping = Plateau(config.early_stopping_patience, **progress.early_stopping)
    reduce_lr = Plateau(config.reduce_lr_patience, **progress.reduce_lr)
    for epoch, metrics in enumerate(progress.history):
        on_epoch(epoch, metrics)

    # Bars on a terminal only; every epoch also prints one summary line, which is all a log gets.
    epochs = tqdm(
        range(progress.epoch, config.epochs),
        desc="training",
        unit="epoch",
        initial=progress.epoch,
        total=config.epochs,
        disable=None,
    )
    for epoch in epochs:
        if early_stopping.exhausted:
            break
        train_metrics = trainer.train_epoch(train_images, train_labels, epoch, progress.learning_rate)
        val_metrics = loss_and_accuracy(trainer.predict(val_images_device), val_labels)
        check_finite(epoch, train_metrics["loss"], val_metrics["loss"], progress.learning_rate)
        metrics = {"train": train_metrics, "val": val_metrics, "learning_rate": progress.learning_rate}
        progress.history.append(metrics)
        on_epoch(epoch, metrics)
        tqdm.write(epoch_summary(epoch, config.epochs, metrics))

        if early_stopping.update(val_metrics["loss"]):
            best_model_state = jax.tree.map(jnp.copy, trainer.model_state)
            progress.best_epoch = epoch
        if config.reduce_lr_patience and not reduce_lr.update(val_metrics["loss"]) and reduce_lr.exhausted:
            progress.learning_rate = max(progress.learning_rate * config.reduce_lr_factor, config.min_learning_rate)
            reduce_lr.wait = 0
        progress.epoch = epoch + 1
        progress.early_stopping = {"best": early_stopping.best, "wait": early_stopping.wait}
        progress.reduce_lr = {"best": reduce_lr.best, "wait": reduce_lr.wait}
        checkpoints.save(progress.epoch, trainer.state, best_model_state, progress)
    checkpoints.close()

    # Restore the best weights, as Keras' EarlyStopping(restore_best_weights=True) does.
    model, optimizer = nnx.merge(trainer.train_graph, trainer.state)
    nnx.update(model, best_model_state)
    trainer.state = nnx.state((model, optimizer))
    return progress
