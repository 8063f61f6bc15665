import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxvision import builder
from flaxvision.errors import UserError
from flaxvision.evaluation import loss_and_accuracy
from flaxvision.training import Plateau, Trainer, check_finite, fit
from tests.helpers import augment_config, pattern_images, train_config

CONFIG = train_config(epochs=4, batch_size=8, learning_rate=1e-3, early_stopping_patience=10)
AUGMENT = augment_config(rotation=10.0, horizontal_flip=True)


def make_trainer(config=CONFIG, augment=AUGMENT, model="simple_cnn"):
    net = builder.build_model(
        model,
        num_classes=3,
        input_shape=(32, 32, 3),
        dtype=config.compute_dtype,
        batchnorm_momentum=config.batchnorm_momentum,
        seed=config.seed,
    )
    return Trainer(net, config, augment, builder.preprocessing(model))


@pytest.fixture(scope="module")
def data():
    return pattern_images(48, seed=0), pattern_images(24, seed=1)


def run(tmp_path, data, config=CONFIG, on_epoch=lambda epoch, metrics: None):
    trainer = make_trainer(config)
    progress = fit(trainer, *data, tmp_path / "checkpoints", "run", on_epoch=on_epoch)
    return trainer, progress


@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path, data):
    _, progress = run(tmp_path, data, dataclasses.replace(CONFIG, epochs=6))
    losses = [epoch["train"]["loss"] for epoch in progress.history]
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_sgd_with_nesterov_trains(tmp_path, data):
    config = dataclasses.replace(CONFIG, optimizer="sgd", learning_rate=0.01, nesterov=True, epochs=6)
    _, progress = run(tmp_path, data, config)
    losses = [epoch["train"]["loss"] for epoch in progress.history]
    assert losses[-1] < losses[0], losses


@pytest.mark.slow
def test_same_seed_gives_the_same_metrics(tmp_path, data):
    _, first = run(tmp_path / "a", data)
    _, second = run(tmp_path / "b", data)
    assert first.history == second.history


@pytest.mark.slow
def test_killed_run_resumes_from_its_latest_checkpoint(tmp_path, data):
    _, reference = run(tmp_path / "reference", data)

    def crash_in_third_epoch(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt  # as if killed before the epoch's checkpoint was written

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", data, on_epoch=crash_in_third_epoch)
    # A save killed part-way, of a step this run never saves over (a longer run's).
    unfinished = tmp_path / "resumed" / "checkpoints" / "9.orbax-checkpoint-tmp"
    (unfinished / "state").mkdir(parents=True)
    replayed = []
    _, resumed = run(tmp_path / "resumed", data, on_epoch=lambda epoch, metrics: replayed.append(epoch))
    assert replayed == [0, 1, 2, 3]  # epochs 0-1 replayed from the checkpoint, 2-3 trained
    assert resumed.history == reference.history
    assert not unfinished.exists()


@pytest.mark.slow
def test_checkpoint_of_another_run_is_not_resumed(tmp_path, data):
    trainer = make_trainer()
    fit(trainer, *data, tmp_path / "checkpoints", "first-run")
    epochs = []
    fit(make_trainer(), *data, tmp_path / "checkpoints", "other-run", on_epoch=lambda e, m: epochs.append(e))
    assert epochs == [0, 1, 2, 3]


@pytest.mark.slow
def test_best_weights_are_restored(tmp_path, data):
    trainer, progress = run(tmp_path, data, dataclasses.replace(CONFIG, epochs=5, learning_rate=0.05))
    val_losses = [epoch["val"]["loss"] for epoch in progress.history]
    assert progress.best_epoch == int(np.argmin(val_losses))
    images, labels = data[1]
    loss = loss_and_accuracy(trainer.logits(images), labels)["loss"]
    assert loss == pytest.approx(min(val_losses), rel=1e-4)


@pytest.mark.slow
def test_learning_rate_is_reduced_on_plateau(tmp_path, data):
    config = dataclasses.replace(
        CONFIG, epochs=6, learning_rate=0.05, reduce_lr_patience=1, reduce_lr_factor=0.5, min_learning_rate=0.01
    )
    _, progress = run(tmp_path, data, config)
    # Replay the rule on the recorded val losses: the logged rates must follow it.
    expected, plateau, lr = [], Plateau(patience=1), config.learning_rate
    for epoch in progress.history:
        expected.append(lr)
        if not plateau.update(epoch["val"]["loss"]) and plateau.exhausted:
            lr, plateau.wait = max(lr * 0.5, 0.01), 0
    assert [epoch["learning_rate"] for epoch in progress.history] == expected


@pytest.mark.slow
def test_a_diverged_run_stops_at_that_epoch_and_saves_nothing(tmp_path, data):
    """The issue's `-S train.optimizer=sgd -S train.learning_rate=1e6`: an error, never a 'best' epoch."""
    config = dataclasses.replace(CONFIG, optimizer="sgd", learning_rate=1e6)
    logged = []
    with pytest.raises(UserError) as error:
        run(tmp_path, data, config, on_epoch=lambda epoch, metrics: logged.append(epoch))
    message = str(error.value)
    assert "\n" not in message and message.startswith("training diverged in epoch 1 ")
    assert all(param in message for param in ("train.learning_rate", "train.batchnorm_momentum", "train.compute_dtype"))
    assert logged == [] and not list((tmp_path / "checkpoints").glob("[0-9]*"))


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_is_never_accepted(loss):
    with pytest.raises(UserError, match="diverged in epoch 3"):
        check_finite(2, 0.5, loss, 1e-3)
    assert not Plateau(patience=3).update(float("nan"))


def test_plateau_counts_epochs_without_improvement():
    plateau = Plateau(patience=2)
    assert plateau.update(1.0) and not plateau.exhausted
    assert not plateau.update(1.5) and not plateau.exhausted
    assert not plateau.update(1.0) and plateau.exhausted
    assert plateau.update(0.5) and plateau.wait == 0


def test_batchnorm_momentum_is_set_on_every_batchnorm_layer():
    config = dataclasses.replace(CONFIG, batchnorm_momentum=0.9)
    trainer = make_trainer(config, model="belgiumtsc_cnn")
    model = nnx.merge(trainer.train_graph, trainer.state)[0]
    momenta = [m.momentum for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert momenta == [0.9, 0.9, 0.9]


@pytest.mark.parametrize(
    "bad", [{"epochs": 0}, {"learning_rate": -1.0}, {"reduce_lr_factor": 1.5}, {"batchnorm_momentum": 1.0}]
)
def test_bad_train_params_are_rejected(bad):
    with pytest.raises(UserError, match=f"^params.yaml: train: {next(iter(bad))} must be"):
        train_config(**bad)


@pytest.mark.slow
def test_bfloat16_compute_trains_with_float32_weights(tmp_path, data):
    config = dataclasses.replace(CONFIG, compute_dtype="bfloat16", epochs=6)
    trainer, progress = run(tmp_path, data, config)
    losses = [epoch["train"]["loss"] for epoch in progress.history]
    assert losses[-1] < 0.7 * losses[0], losses
    _, float32 = run(tmp_path / "float32", data, dataclasses.replace(config, compute_dtype="float32"))
    assert abs(losses[0] - float32.history[0]["train"]["loss"]) < 0.05  # bf16 rounding, not another model

    leaves = jax.tree.leaves(trainer.state)  # parameters, BatchNorm statistics, optimizer moments
    assert {leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype("float32")}
    images, labels = (jnp.asarray(a) for a in data[0])
    step = trainer.train_step.lower(trainer.state, images, labels, jnp.arange(8), 1e-3).as_text()
    assert "bf16" in step and "f32" in step  # bf16 convolutions and matmuls; float32 updates
