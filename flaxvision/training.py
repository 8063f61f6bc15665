"""Training: one jitted update with donated state, Keras-style callbacks, resumable from checkpoints.

Two input paths give the same batches, step by step, and so the same run (flaxvision.batches:
`fit` picks one by the splits' size, train.input forces it). Either way the step augments and
preprocesses the uint8 batch inside the compiled function.
With several devices (all of them, over every host after ``jax.distributed.initialize()``), the
state is replicated and each batch is split over a one-axis ("data") mesh: XLA partitions the
step and averages the gradients, and BatchNorm still sees the whole batch; the step is the
one-device step within float rounding (tests/test_sharding.py says why not bit for bit).
Everything random is derived from the seed and the step number (shuffles, augmentation) or
kept in the checkpointed model state (dropout), which makes runs repeatable and lets a killed
run resume from its latest checkpoint with the same result as an uninterrupted one.
"""

import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from tqdm import tqdm

from flaxvision.batches import OnDevices, Streamed, streams
from flaxvision.checkpoints import Checkpoints, Progress
from flaxvision.data import Images
from flaxvision.errors import UserError
from flaxvision.evaluation import loss_and_accuracy
from flaxvision.inference import apply_in_batches, gather, make_logits_step
from flaxvision.models.scaling import preprocess_input
from flaxvision.optimization import learning_rates, make_optimizer
from flaxvision.params import AugmentConfig, TrainConfig
from flaxvision.transforms import augment, mix

if TYPE_CHECKING:
    from dvclive import Live

# What the train step carries: the model, its optimizer and, with train.ema_decay, the weights' average.
TrainParts = tuple[nnx.Module, nnx.Optimizer, *tuple[nnx.Module, ...]]


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
    """Owns the model and optimizer state and the two compiled steps (train, logits).

    The model is built for the config (flaxvision.builder: compute dtype, BatchNorm momentum);
    the trainer only casts each batch to ``config.compute_dtype``.
    """

    def __init__(
        self, model: nnx.Module, config: TrainConfig, augment_config: AugmentConfig, preprocessing: str
    ) -> None:
        self.config = config
        self.augment_config = augment_config
        self.preprocessing = preprocessing
        model.eval()
        self.eval_graph = nnx.graphdef(model)
        model.train()
        optimizer = nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param)
        # The weights' moving average is a second copy of the model, trained by none of the
        # steps but averaged after each; it is what validation sees and what is kept.
        averaged = (nnx.clone(model),) if config.ema_decay else ()
        for average in averaged:  # buffers of its own (clone shares them), so each can be donated
            nnx.update(average, jax.tree.map(jnp.copy, nnx.state(average)))

        devices = jax.device_count()
        if config.batch_size % devices:
            raise UserError(
                f"params.yaml: train.batch_size {config.batch_size} must be a multiple of the "
                f"{devices} devices it is split over"
            )
        self._devices = devices
        self._batch_sizes: dict[int, int] = {}  # training-set size -> its batch size (each clamp is reported once)
        mesh = jax.make_mesh((devices,), ("data",), axis_types=(AxisType.Auto,))  # XLA partitions the step
        self.mesh = mesh.abstract_mesh  # the train step's, for the calls XLA cannot split over devices
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        parts: TrainParts = (model, optimizer, *averaged)
        self.train_graph, state = nnx.split(parts)
        self.state: nnx.State = self.replicate(state)
        self.augment_key = jax.random.key(config.seed)
        self.train_step = jax.jit(self._train_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated))
        self._logits_step = make_logits_step(self.eval_graph, preprocessing, self.mesh)

    # --- compiled steps -------------------------------------------------------------------

    def _train_step(
        self,
        state: nnx.State,
        images: jax.Array,
        labels: jax.Array,
        indices: jax.Array | None,
        learning_rate: jax.Array,
    ) -> tuple[nnx.State, dict[str, jax.Array]]:
        with jax.sharding.use_abstract_mesh(self.mesh):  # see flaxvision.ops.onednn
            model, optimizer, *averaged = nnx.merge(self.train_graph, state)
            optimizer.opt_state[-1].hyperparams["learning_rate"][...] = learning_rate  # see make_optimizer
            key = jax.random.fold_in(self.augment_key, optimizer.step[...])
            batch = jax.lax.with_sharding_constraint(gather(images, indices), self.batch_sharding)
            batch = augment(batch.astype(jnp.float32), key, self.augment_config)
            batch_labels = gather(labels, indices)
            if self.augment_config.mixing:
                batch, own_share = mix(batch, jax.random.fold_in(key, 4), self.augment_config)
            batch = preprocess_input(batch, self.preprocessing).astype(self.config.compute_dtype)

            # ``model``: the nnx.Module, typed by what is done with it (nnx.Module declares no __call__)
            def loss_fn(model: Callable[[jax.Array], jax.Array]) -> tuple[jax.Array, jax.Array]:
                logits = model(batch).astype(jnp.float32)
                loss = self._cross_entropy(logits, batch_labels)
                if self.augment_config.mixing:
                    loss = own_share * loss + (1 - own_share) * self._cross_entropy(logits, batch_labels[::-1])
                return loss.mean(), logits

            (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            optimizer.update(model, grads)
            for average in averaged:
                self._update_average(average, model, optimizer.step[...])
            correct = jnp.sum(jnp.argmax(logits, -1) == batch_labels)
            return nnx.state((model, optimizer, *averaged)), {"loss": loss * len(batch_labels), "correct": correct}

    def _cross_entropy(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        if not self.config.label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), self.config.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)

    def _update_average(self, average: nnx.Module, model: nnx.Module, step: jax.Array) -> None:
        """average += (1 - decay) * (model - average) over the float variables (weights, BatchNorm
        statistics), with TF's warm-up of the decay so early averages are not stuck at the start."""
        decay = jnp.minimum(self.config.ema_decay, (1 + step) / (10 + step))

        def updated(old: jax.Array, new: jax.Array) -> jax.Array:
            return old + (1 - decay) * (new - old) if jnp.issubdtype(new.dtype, jnp.floating) else new

        nnx.update(average, jax.tree.map(updated, nnx.state(average), nnx.state(model)))

    # --- host loops -----------------------------------------------------------------------

    @property
    def model_state(self) -> nnx.State:
        """The state of the model that is validated and kept: the weights, or their average."""
        return self.state[2 if self.config.ema_decay else 0]

    def load_model_state(self, model_state: nnx.State) -> None:
        """Put ``model_state`` (e.g. the best epoch's) where `model_state` reads it."""
        merged: TrainParts = nnx.merge(self.train_graph, self.state)
        parts = list(merged)
        nnx.update(parts[2 if self.config.ema_decay else 0], model_state)
        self.state = nnx.state(tuple(parts))

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

    def steps_per_epoch(self, count: int) -> int:
        return count // self.batch_size(count)

    def train_epoch(
        self,
        data: OnDevices | Streamed,
        epoch: int,
        learning_rate: float,
        resume: dict[str, Any] | None = None,
        checkpoint: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, float]:
        """One pass over the shuffled training set (the last partial batch is dropped), at
        ``learning_rate`` (train.learning_rate as lowered on plateaus) times the schedule.

        Every train.checkpoint_steps steps, ``checkpoint(partial)`` is given where the epoch stands
        (`Progress.partial`: the next step, the loss and accuracy sums so far, the loader's state);
        ``resume``, such a dict, continues the epoch from there with the same result.
        """
        count = len(data.labels)
        batch_size = self.batch_size(count)
        steps = self.steps_per_epoch(count)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(count)[: steps * batch_size]
        rates = learning_rates(self.config, steps, epoch, learning_rate)
        batches = data.batches(order, batch_size, resume["loader"] if resume else None)
        first = 0
        totals: dict[str, Any] = {"loss": 0.0, "correct": 0}  # device arrays from the first step on
        if resume:
            first = resume["step"]
            totals = {"loss": jnp.float32(resume["loss"]), "correct": jnp.int32(resume["correct"])}
        every = self.config.checkpoint_steps
        bar = tqdm(range(first, steps), desc=f"epoch {epoch + 1}", unit="step", leave=False, disable=None)
        for step, (images, labels, indices) in zip(bar, batches, strict=False):
            self.state, metrics = self.train_step(self.state, images, labels, indices, rates[step])
            totals = jax.tree.map(jnp.add, totals, metrics)  # stays on device: no sync per step
            if checkpoint and every and (step + 1) % every == 0 and step + 1 < steps:
                loss, correct = float(totals["loss"]), int(totals["correct"])  # float32 and int32: exact in JSON
                checkpoint({"step": step + 1, "loss": loss, "correct": correct, "loader": batches.get_state()})
        count = steps * batch_size
        return {"loss": float(totals["loss"]) / count, "accuracy": float(totals["correct"]) / count}

    def logits(self, images: jax.Array | Images, model_state: nnx.State | None = None) -> np.ndarray:
        """Logits of a split on the devices (a jax.Array), or streamed in batches laid out as
        training's, by ``model_state`` (default: `model_state`)."""
        sharding = None if isinstance(images, jax.Array) else self.batch_sharding
        state = self.model_state if model_state is None else model_state
        return apply_in_batches(self._logits_step, state, images, self.config.batch_size, sharding=sharding)

    def replicate(self, tree: Any) -> Any:
        """Put the arrays of ``tree`` (any pytree: a dataset, a restored state) on every device of the
        mesh. With several processes, each gives its own devices' copies: no process can put data on another's."""
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(self._replicate_array, tree)

    def _replicate_array(self, array: jax.Array | np.ndarray) -> jax.Array:
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):  # RNG keys travel as their data
            data = self._replicate_array(jax.random.key_data(array))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(array))
        host = np.asarray(array)
        return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])


def check_finite(epoch: int, train_loss: float, val_loss: float, learning_rate: float) -> None:
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


def epoch_logger(live: "Live") -> Callable[[int, dict], None]:
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
    train: tuple[Images, np.ndarray],
    validation: tuple[Images, np.ndarray],
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
    val_images, val_labels = validation
    if len(val_labels) == 0:
        raise UserError("the validation split is empty: raise preprocess.val_fraction")
    stream, reason = streams(config, train[0], val_images)
    print(f"input: {'streamed by Grain' if stream else 'held on the devices'} ({reason})")
    train_data = (Streamed if stream else OnDevices)(trainer, *train)
    if not stream:
        val_images = trainer.replicate(np.asarray(val_images))

    def revalidate(state: nnx.State, best_model_state: nnx.State, progress: Progress) -> str:
        """What a checkpoint's best weights give on validation, unless it is what was recorded."""
        if progress.best_epoch < 0:  # within the first epoch: nothing validated yet
            return ""
        metrics = loss_and_accuracy(trainer.logits(val_images, trainer.replicate(best_model_state)), val_labels)
        recorded = progress.history[progress.best_epoch]["val"]
        return "" if metrics == recorded else f"its best weights give val {metrics}, not the recorded {recorded}"

    checkpoints = Checkpoints(checkpoint_dir)
    best_model_state = jax.tree.map(jnp.copy, trainer.model_state)
    restored = checkpoints.restore(run_id, trainer.state, best_model_state, check=revalidate)
    if restored is None:
        checkpoints.clear()
        progress = Progress(fingerprint=run_id, learning_rate=config.learning_rate)
    else:
        state, best_model_state, progress = restored
        trainer.state, best_model_state = trainer.replicate((state, best_model_state))
        within = f", step {progress.partial['step']} of epoch {progress.epoch + 1}" if progress.partial else ""
        print(f"resuming from the checkpoint after epoch {progress.epoch}{within} in {checkpoint_dir}")
    early_stopping = Plateau(config.early_stopping_patience, **progress.early_stopping)
    reduce_lr = Plateau(config.reduce_lr_patience, **progress.reduce_lr)
    for epoch, metrics in enumerate(progress.history):
        on_epoch(epoch, metrics)
    steps = trainer.steps_per_epoch(len(train[1]))

    def save_partial(partial: dict[str, Any]) -> None:
        progress.partial = partial
        checkpoints.save(progress.epoch * steps + partial["step"], trainer.state, best_model_state, progress)

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
        train_metrics = trainer.train_epoch(
            train_data, epoch, progress.learning_rate, resume=progress.partial, checkpoint=save_partial
        )
        progress.partial = {}
        val_metrics = loss_and_accuracy(trainer.logits(val_images), val_labels)
        check_finite(epoch, train_metrics["loss"], val_metrics["loss"], progress.learning_rate)
        last_rate = float(learning_rates(config, steps, epoch, progress.learning_rate)[-1])
        metrics = {"train": train_metrics, "val": val_metrics, "learning_rate": last_rate}
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
        checkpoints.save(progress.epoch * steps, trainer.state, best_model_state, progress)
    checkpoints.close()

    # Restore the best weights, as Keras' EarlyStopping(restore_best_weights=True) does.
    trainer.load_model_state(best_model_state)
    return progress
