"""The training recipes' knobs (params train.* and augment.*): schedules, AdamW's decay mask,
clipping, label smoothing, the weights' EMA, random-resized crops, colour jitter, mixup and CutMix."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxvision.errors import UserError
from flaxvision.optimization import learning_rates, make_optimizer
from flaxvision.params import TrainConfig
from flaxvision.training import fit
from flaxvision.transforms import augment, mix
from tests.helpers import augment_config, pattern_images, train_config
from tests.test_training import make_trainer

# --- learning rate, optimizer ----------------------------------------------------------------


def test_the_constant_schedule_is_the_learning_rate_itself():
    rates = learning_rates(train_config(learning_rate=1e-3), steps_per_epoch=5, epoch=3, base=1e-3)
    assert rates.tolist() == [1e-3] * 5


def test_warmup_then_cosine_rises_to_the_peak_and_decays_to_zero():
    config = train_config(epochs=10, schedule="cosine", warmup_epochs=2)
    rates = np.concatenate([learning_rates(config, 4, epoch, base=0.1) for epoch in range(10)])
    assert rates[0] == 0 and rates[8] == pytest.approx(0.1)  # the peak right after 2 epochs of 4 steps
    assert np.all(np.diff(rates[:9]) > 0) and np.all(np.diff(rates[8:]) < 0)
    assert rates[-1] == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 31 / 32)), rel=1e-5)


def test_the_step_schedule_multiplies_by_the_factor_every_step_epochs():
    config = train_config(epochs=9, schedule="step", step_epochs=3, step_factor=0.5)
    per_epoch = [learning_rates(config, 2, epoch, base=0.1)[0] for epoch in range(9)]
    assert per_epoch == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3)


def one_update(config: TrainConfig, params: dict, grads: dict) -> dict:
    optimizer = make_optimizer(config)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)


def test_adamw_decays_kernels_but_not_biases():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zero = jax.tree.map(jnp.zeros_like, params)
    config = train_config(optimizer="adamw", learning_rate=0.1, weight_decay=0.5)
    updated = one_update(config, params, zero)
    np.testing.assert_allclose(updated["kernel"], 1 - 0.1 * 0.5)
    np.testing.assert_array_equal(updated["bias"], params["bias"])


def test_clipping_bounds_the_gradients_global_norm():
    params = {"kernel": jnp.zeros((2, 2))}
    grads = {"kernel": jnp.full((2, 2), 100.0)}
    config = train_config(optimizer="sgd", momentum=0.0, learning_rate=1.0, clip_grad_norm=2.0)
    step = one_update(config, params, grads)["kernel"]
    assert float(jnp.linalg.norm(step)) == pytest.approx(2.0, rel=1e-6)


def test_weight_decay_with_plain_adam_is_refused():
    with pytest.raises(UserError, match="weight_decay needs optimizer adamw"):
        train_config(weight_decay=0.1)


# --- the train step ---------------------------------------------------------------------------


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    trainer = make_trainer(train_config(label_smoothing=0.1))
    logits, labels = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([0])
    expected = optax.softmax_cross_entropy(logits, jnp.array([[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]]))
    np.testing.assert_allclose(trainer._cross_entropy(logits, labels), expected, rtol=1e-6)


@pytest.mark.slow
def test_the_kept_weights_are_their_moving_average():
    images, labels = (jax.device_put(array) for array in pattern_images(16))
    trainer = make_trainer(train_config(batch_size=8, ema_decay=0.9), augment_config())

    def weights(model_state) -> list[np.ndarray]:
        return [
            np.asarray(w) for w in jax.tree.leaves(nnx.state(nnx.merge(trainer.eval_graph, model_state), nnx.Param))
        ]

    average = weights(trainer.model_state)
    for step in (1, 2):  # TF's warm-up of the decay: min(0.9, (1 + step) / (10 + step))
        indices = jnp.arange(8 * (step - 1), 8 * step)
        trainer.state, _ = trainer.train_step(trainer.state, images, labels, indices, np.float32(1e-2))
        decay = min(0.9, (1 + step) / (10 + step))
        current = weights(trainer.state[0])
        average = [a + (1 - decay) * (w - a) for a, w in zip(average, current, strict=True)]
        for expected, kept in zip(average, weights(trainer.model_state), strict=True):
            np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-7)
    assert any(not np.array_equal(a, w) for a, w in zip(average, current, strict=True))  # it lags


@pytest.mark.slow
def test_a_full_recipe_trains_and_repeats_bit_for_bit(tmp_path):
    config = train_config(
        epochs=3,
        batch_size=8,
        optimizer="adamw",
        weight_decay=0.05,
        schedule="cosine",
        warmup_epochs=1,
        clip_grad_norm=1.0,
        label_smoothing=0.1,
        ema_decay=0.9,
    )
    recipe = augment_config(
        horizontal_flip=True,
        crop_scale=(0.5, 1.0),
        crop_ratio=(0.75, 1.333),
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.05,
        mixup=0.2,
        cutmix=1.0,
    )
    data = pattern_images(48, seed=0), pattern_images(24, seed=1)

    def train(folder):
        trainer = make_trainer(config, recipe)
        progress = fit(trainer, *data, tmp_path / folder, "run")
        return progress, nnx.to_pure_dict(nnx.state(trainer.model, nnx.Param))

    (first, weights), (second, again) = train("a"), train("b")
    assert first.history == second.history
    jax.tree.map(np.testing.assert_array_equal, weights, again)
    rates = [epoch["learning_rate"] for epoch in first.history]
    # Each epoch logs its last step's rate: 6 steps an epoch, warmup over the first 6, cosine over 12.
    assert rates == pytest.approx(
        [1e-3 * 5 / 6, 1e-3 * 0.5 * (1 + np.cos(np.pi * 5 / 12)), 1e-3 * 0.5 * (1 + np.cos(np.pi * 11 / 12))], rel=1e-5
    )
    assert all(np.isfinite(epoch["train"]["loss"]) for epoch in first.history)


# --- augmentation -----------------------------------------------------------------------------


def columns_image(size: int = 32) -> jax.Array:
    """One float image whose every pixel holds its column index."""
    return jnp.broadcast_to(jnp.arange(size, dtype=jnp.float32)[None, :, None], (1, size, size, 3))


@pytest.mark.slow
def test_a_random_resized_crop_spans_its_share_of_the_image():
    config = augment_config(crop_scale=(0.25, 0.25))  # square crops of half the width
    images = jnp.repeat(columns_image(), 16, axis=0)
    cropped = augment(images, jax.random.key(0), config)
    spans = cropped[..., 0].max(axis=(1, 2)) - cropped[..., 0].min(axis=(1, 2))
    np.testing.assert_allclose(spans, 31 * 0.5, atol=0.01)
    assert float(cropped.min()) >= 0 and float(cropped.max()) <= 31  # inside the image
    assert len({round(float(low), 3) for low in cropped[..., 0].min(axis=(1, 2))}) > 1  # at different places


@pytest.mark.slow
def test_colour_jitter_shifts_brightness_within_its_range_and_clips():
    images = jnp.full((64, 4, 4, 3), 128.0)
    bright = augment(images, jax.random.key(1), augment_config(brightness=0.2))
    deltas = bright[:, 0, 0, 0] - 128
    assert float(jnp.abs(deltas).max()) <= 0.2 * 255 + 1e-3 and float(jnp.std(deltas)) > 5
    assert float(augment(images + 120, jax.random.key(1), augment_config(brightness=0.2)).max()) <= 255


@pytest.mark.slow
def test_saturation_and_hue_need_rgb():
    with pytest.raises(ValueError, match="need RGB images"):
        augment(jnp.zeros((2, 4, 4, 1)), jax.random.key(0), augment_config(hue=0.1))


def test_mixup_blends_each_image_with_the_reversed_batch():
    images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3)) * 255
    mixed, share = mix(images, jax.random.key(1), augment_config(mixup=0.4))
    assert 0 <= float(share) <= 1
    np.testing.assert_allclose(mixed, share * images + (1 - share) * images[::-1], rtol=1e-5)


def test_cutmix_pastes_a_box_and_reports_the_share_kept():
    images = jnp.stack([jnp.zeros((16, 16, 3)), jnp.ones((16, 16, 3))])
    mixed, share = mix(images, jax.random.key(3), augment_config(cutmix=1.0))
    from_partner = float(jnp.mean(mixed[0] == 1))  # image 0 is zeros; its partner (reversed batch) is ones
    assert from_partner == pytest.approx(1 - float(share)) and 0 < from_partner < 1
    assert set(np.unique(np.asarray(mixed))) <= {0.0, 1.0}


@pytest.mark.slow
def test_the_recipe_knobs_leave_the_affine_draws_unchanged():
    """Crop and colours draw from keys of their own: adding them keeps the rest of a run's randomness."""
    images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3)) * 255
    plain = augment_config(rotation=30.0, horizontal_flip=True)
    with_colour = dataclasses.replace(plain, contrast=1e-9)  # on, and almost the identity
    np.testing.assert_allclose(
        augment(images, jax.random.key(5), plain), augment(images, jax.random.key(5), with_colour), atol=1e-3
    )
