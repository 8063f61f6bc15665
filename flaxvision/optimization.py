"""The optimizer and the learning-rate schedule of params train: optax transformations, with the
learning rate injected so the host sets it every step (the schedule, lowered on plateaus)."""

import jax
import numpy as np
import optax
from flax import nnx

from flaxvision.params import TrainConfig


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer: clipping and SGD's weight decay, then the optimizer itself, whose
    hyperparameters are injected (last in the chain) so the host sets the learning rate every
    step (`learning_rates`: the schedule, lowered on plateaus)."""

    def kernels(params: nnx.State) -> nnx.State:  # weight decay on weights that multiply, not on biases and norm scales
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
