"""Training: one jitted update with donated state, Keras-style callbacks, resumable from checkpoints.

Two input paths give the same batches, step by step, and so the same run (`fit` picks one by the
splits' size, train.input forces it): the splits live on the devices as uint8 and each step
gathers its batch by index there, so the host only sends a vector of indices (`OnDevices`); or
Grain streams each batch from data/prepared, read on host threads ahead of the step
(`Streamed`, flaxvision.data.loader), so the data may exceed the devices' and the host's memory.
Either way the step augments and preprocesses the uint8 batch inside the compiled function.
With several devices (all of them, over every host after ``jax.distributed.initialize()``), the
state is replicated and each batch is split over a one-axis ("data") mesh: XLA partitions the
step and averages the gradients, and BatchNorm still sees the whole batch; the step is the
one-device step within float rounding (tests/test_sharding.py says why not bit for bit).
Streaming, each process reads only its own devices' rows of every batch.
Everything random is derived from the seed and the step number (shuffles, augmentation) or
kept in the checkpointed model state (dropout), which makes runs repeatable and lets a killed
run resume from its latest checkpoint with the same result as an uninterrupted one.
"""

import dataclasses
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from tqdm import tqdm

from flaxvision.checkpoints import Checkpoints, Progress
from flaxvision.data import loader
from flaxvision.errors import UserError
from flaxvision.evaluation import gather, loss_and_accuracy, make_predict_step, predict
from flaxvision.models.scaling import preprocess_input
from flaxvision.params import AugmentConfig, TrainConfig
from flaxvision.transforms import augment, mix


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer: clipping and SGD's weight decay, then the optimizer itself, whose
    hyperparameters are injected (last in the chain) so the host sets the learning rate every
    step (`learning_rates`: the schedule, lowered on plateaus)."""

    def kernels(params):  # weight decay on weights that multiply, not on biases and norm scales
        return jax.tree.map(lambda p: p.ndim > 1, params)

    before = [optax.clip_by_global_norm(config.clip_grad_norm)] if config.clip_grad_norm else []
    if config.optimizer == "adamw":
        optimizer = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
            config.learning_rate, weight_decay=config.weight_decay, mask=kernels
        )
    elif config.optimizer == "adam":
        optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=config.learning_rate)
    else:
        if config.weight_decay:
            before.append(optax.add_decayed_weights(config.weight_decay, mask=kernels))
        optimizer = optax.inject_hyperparams(optax.sgd)(
            learning_rate=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov
        )
    return optax.chain(*before, optimizer)


def learning_rates(config: TrainConfig, steps_per_epoch: int, epoch: int, base: float) -> np.ndarray:
    """The learning rate of each step of ``epoch``: ``base`` (train.learning_rate, as lowered on
    plateaus so far) times the schedule's factor, which optax's schedules give per step."""
    warmup, total = round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(1.0, max(total - warmup, 1))
    elif config.schedule == "step":
        decay = optax.exponential_decay(
            1.0, round(config.step_epochs * steps_per_epoch), config.step_factor, staircase=True
        )
    else:
        decay = optax.constant_schedule(1.0)
    schedule = optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), decay], [warmup]) if warmup else decay
    steps = np.arange(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
    return base * np.broadcast_to(np.asarray(schedule(steps), np.float64), steps.shape)  # constant: a scalar


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
        self.train_graph, state = nnx.split((model, optimizer, *averaged))
        self.state = self.replicate(state)
        self.augment_key = jax.random.key(config.seed)
        self.train_step = jax.jit(self._train_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated))
        self._predict_step = make_predict_step(self.eval_graph, preprocessing, self.mesh)

    # --- compiled steps -------------------------------------------------------------------

    def _train_step(self, state, images, labels, indices, learning_rate):
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

            def loss_fn(model):
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

    def _cross_entropy(self, logits, labels):
        if not self.config.label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), self.config.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)

    def _update_average(self, average: nnx.Module, model: nnx.Module, step):
        """average += (1 - decay) * (model - average) over the float variables (weights, BatchNorm
        statistics), with TF's warm-up of the decay so early averages are not stuck at the start."""
        decay = jnp.minimum(self.config.ema_decay, (1 + step) / (10 + step))

        def updated(old, new):
            return old + (1 - decay) * (new - old) if jnp.issubdtype(new.dtype, jnp.floating) else new

        nnx.update(average, jax.tree.map(updated, nnx.state(average), nnx.state(model)))

    # --- host loops -----------------------------------------------------------------------

    @property
    def model_state(self):
        """The state of the model that is validated and kept: the weights, or their average."""
        return self.state[2 if self.config.ema_decay else 0]

    def load_model_state(self, model_state):
        """Put ``model_state`` (e.g. the best epoch's) where `model_state` reads it."""
        parts = list(nnx.merge(self.train_graph, self.state))
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

    def train_epoch(self, data: "OnDevices | Streamed", epoch: int, learning_rate: float, resume=None, checkpoint=None):
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

    def predict(self, images, model_state=None) -> np.ndarray:
        """Logits of a split on the devices (a jax.Array), or streamed in batches laid out as
        training's, by ``model_state`` (default: `model_state`)."""
        sharding = None if isinstance(images, jax.Array) else self.batch_sharding
        state = self.model_state if model_state is None else model_state
        return predict(self._predict_step, state, images, self.config.batch_size, sharding=sharding)

    def replicate(self, tree):
        """Put arrays (a dataset, a restored state) on every device of the mesh. With several
        processes, each gives its own devices' copies: no process can put data on another's."""
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(self._replicate_array, tree)

    def _replicate_array(self, array):
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):  # RNG keys travel as their data
            data = self._replicate_array(jax.random.key_data(array))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(array))
        host = np.asarray(array)
        return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])


class OnDevices:
    """A split held whole on every device: each step gathers its batch there, by index."""

    def __init__(self, trainer: Trainer, images, labels):
        self.images, self.labels = trainer.replicate((np.asarray(images), np.asarray(labels)))

    def batches(self, order: np.ndarray, batch_size: int, state=None):
        """A Grain iterator of (the split, its labels, the step's indices) for each batch of ``order``."""

        def indices(step):
            return self.images, self.labels, jnp.asarray(order[step * batch_size : (step + 1) * batch_size], jnp.int32)

        return loader.iterate(len(order) // batch_size, indices, state, threads=1)


class Streamed:
    """A split on host or disk (data/prepared's shards): Grain reads each batch, this process's
    rows of it, and puts it on the devices ahead of its step."""

    def __init__(self, trainer: Trainer, images, labels):
        self.images, self.labels, self.sharding = images, np.asarray(labels), trainer.batch_sharding

    def batches(self, order: np.ndarray, batch_size: int, state=None):
        """A Grain iterator of (the batch's images, its labels, None) for each batch of ``order``."""
        read = loader.reader((self.images, self.labels), order, batch_size, self.sharding)
        return loader.iterate(len(order) // batch_size, lambda step: (*read(step), None), state)


def streams(config: TrainConfig, *splits) -> tuple[bool, str]:
    """Whether training streams ``splits`` (image arrays) rather than holding them on every
    device, and a line saying why: train.input, or with ``auto`` their size against
    train.device_data_mb (default: half the smallest free memory of a device; on CPU, where
    each device holds its own copy in host memory, the host's available memory shared among them)."""
    size = sum(images.nbytes for images in splits)
    if config.input != "auto":
        return config.input == "stream", f"train.input {config.input}"
    if config.device_data_mb is not None:
        budget, source = config.device_data_mb * 2**20, "train.device_data_mb"
    else:
        budget, source = free_device_memory() / 2, "half a device's free memory"
    verdict = "more" if size > budget else "no more"
    return size > budget, f"{size / 2**20:.0f} MB of images, {verdict} than {budget / 2**20:.0f} MB ({source})"


def free_device_memory() -> int:
    """Bytes free on the fullest local device (on CPU: the host's available memory per device)."""
    stats = [device.memory_stats() for device in jax.local_devices()]
    if all(stats):
        return min(s["bytes_limit"] - s["bytes_in_use"] for s in stats)
    try:
        with open("/proc/meminfo") as meminfo:  # MemAvailable counts the page cache the kernel would give up
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available // jax.local_device_count()


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
    val_images, val_labels = validation
    if len(val_labels) == 0:
        raise UserError("the validation split is empty: raise preprocess.val_fraction")
    stream, reason = streams(config, train[0], val_images)
    print(f"input: {'streamed by Grain' if stream else 'held on the devices'} ({reason})")
    train_data = (Streamed if stream else OnDevices)(trainer, *train)
    if not stream:
        val_images = trainer.replicate(np.asarray(val_images))

    def revalidate(state, best_model_state, progress: Progress) -> str:
        """What a checkpoint's best weights give on validation, unless it is what was recorded."""
        if progress.best_epoch < 0:  # within the first epoch: nothing validated yet
            return ""
        metrics = loss_and_accuracy(trainer.predict(val_images, trainer.replicate(best_model_state)), val_labels)
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

    def save_partial(partial):
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
        val_metrics = loss_and_accuracy(trainer.predict(val_images), val_labels)
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
