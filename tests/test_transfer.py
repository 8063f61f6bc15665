"""Transfer models (models.transfer): freezing, cached features, presets, save and load."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxvision import builder
from flaxvision.errors import UserError
from flaxvision.features import extract_features
from flaxvision.model_folder import ModelInfo, load_trained, save_trained
from flaxvision.models.transfer import Frozen
from flaxvision.training import Trainer
from tests.helpers import augment_config, train_config, transfer_config

SMALL = transfer_config(backbones=("mobilenet_v2",), alpha=0.35, hidden_units=(8,), input_size=(32, 32))


def build(config=SMALL, name="transfer", shape=(32, 32, 3), classes=3, seed=0):
    transfer = builder.transfer_config(name, config or SMALL)
    return builder.build_model(name, num_classes=classes, input_shape=shape, transfer=transfer, seed=seed)


def images(count=8, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


@pytest.mark.slow
def test_trainable_layers_are_the_backbones_last_layers_with_weights():
    model = build(dataclasses.replace(SMALL, trainable_layers=3, cache_features=False))
    layers = list(model.backbones[0].keras_layers().items())
    trainable = [name for name, layer in layers if nnx.state(layer, nnx.Param)]
    frozen = [name for name, layer in layers if nnx.state(layer, Frozen)]
    assert trainable == [name for name, _ in layers[-3:]] == ["block_16_project_BN", "Conv_1", "Conv_1_bn"]
    assert len(frozen) == len(layers) - 3 and not set(frozen) & set(trainable)


@pytest.mark.slow
def test_a_train_step_leaves_frozen_weights_and_frozen_batchnorm_statistics_alone():
    model = build(dataclasses.replace(SMALL, trainable_layers=2, cache_features=False))
    before = weights(model)
    trainer = Trainer(model, train_config(batch_size=4, learning_rate=0.1), augment_config(), "none")
    batch, labels = jnp.asarray(images(4)), jnp.arange(4, dtype=jnp.int32) % 3
    trainer.state, _ = trainer.train_step(trainer.state, batch, labels, jnp.arange(4), jnp.float32(0.1))
    after = weights(trainer.model)

    changed = {path for path, value in before.items() if not np.array_equal(value, after[path])}
    assert changed, "nothing trained"
    backbone_changes = {path for path in changed if path[0] == "backbones"}
    # Only Conv_1 and Conv_1_bn (weights and moving statistics) changed in the backbone.
    assert {path[-1] for path in backbone_changes} == {"kernel", "scale", "bias", "mean", "var"}
    assert len(backbone_changes) == 5
    assert any(path[0] == "head" for path in changed)


def weights(model) -> dict:
    return {
        path: np.array(variable.get_value())
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Not(nnx.RngState)))
    }


@pytest.mark.slow
def test_cached_features_give_the_full_models_logits():
    model = build()
    batch = images(5)
    features = extract_features(model, batch, batch_size=2, desc=None)
    assert features.shape == (5, 1280)
    model.eval()
    np.testing.assert_allclose(model.head(jnp.asarray(features)), model(jnp.asarray(batch, jnp.float32)), atol=1e-5)


@pytest.mark.slow
def test_stacked_backbones_concatenate_pooled_features():
    config = dataclasses.replace(SMALL, backbones=("mobilenet_v2", "vgg16"), alpha=0.35)
    model = build(config)
    assert extract_features(model, images(2), batch_size=2, desc=None).shape == (2, 1280 + 512)


@pytest.mark.slow
def test_a_preset_head_runs_on_the_feature_map():
    model = build(name="mobilenet_v2_finetune", shape=(56, 56, 3), classes=4, config=None)
    model.eval()
    assert model(jnp.asarray(images(2, (56, 56, 3)), jnp.float32)).shape == (2, 4)


@pytest.mark.slow
def test_saved_transfer_model_loads_with_the_same_outputs(tmp_path):
    config = dataclasses.replace(SMALL, trainable_layers=1, cache_features=False)
    model = build(config)
    save_trained(
        tmp_path,
        model,
        ModelInfo(
            model="transfer",
            transfer=config,
            classes=("a", "b", "c"),
            input_shape=(32, 32, 3),
            color_mode="rgb",
            preprocessing="none",
        ),
    )
    loaded, _ = load_trained(tmp_path)
    model.eval()
    batch = jnp.asarray(images(3), jnp.float32)
    np.testing.assert_array_equal(loaded(batch), model(batch))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"backbones": ["resnet18"]}, "unknown backbone 'resnet18'"),
        ({"backbones": ["vgg16"], "alpha": 0.5}, "alpha applies to mobilenet_v2 only"),
        ({"trainable_layers": 2}, "cache_features needs frozen backbones"),
    ],
)
def test_bad_transfer_params_are_one_line_errors(values, message):
    with pytest.raises(UserError, match=message):
        builder.transfer_config("transfer", transfer_config(**values))
