"""flaxvision runner: our models through the code paths the pipeline runs.

Training is ``flaxvision.training.Trainer.train_epoch`` (its jitted, donated train step: the
on-device batch gather, preprocessing and update) over a device-resident uint8 set, with
augmentation off; inference is ``flaxvision.inference.apply_in_batches`` over the jitted logits step.
Both return host values, so a repeat ends when its work has. Models come from the registry
(``models.create_model``) or, for the keras.applications backbones, from
``flaxvision.conversion.build_backbone`` with random weights. The stages' JAX setup applies
(flaxvision.runtime), except the persistent compilation cache: the first call's time includes a
cold compile.
"""

import dataclasses
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from benchmarks import peers
from benchmarks.workloads import (
    BATCH_SIZE,
    LEARNING_RATE,
    Protocol,
    Recipe,
    Workload,
    epoch_figures,
    measure,
    runner_main,
    synthetic_batch_set,
    timed,
)
from flaxvision import builder, models
from flaxvision.batches import OnDevices
from flaxvision.conversion import build_backbone
from flaxvision.data import load_prepared, prepare, read_dataset
from flaxvision.inference import apply_in_batches, make_logits_step
from flaxvision.jax_internals import unroll_threefry_on_cpu
from flaxvision.models.backbones import BACKBONES
from flaxvision.models.layers import use_convolutions
from flaxvision.params import load_params
from flaxvision.recipes import plain_section
from flaxvision.training import Trainer

PRESETS = {"seed_cnn": "belgiumtsc_cnn", "resnet50": "resnet50"}  # workload model -> models registry name
# ImageDataGenerator's arguments as params augment fields (same units).
AUGMENT_FIELDS = {
    "rotation_range": "rotation",
    "width_shift_range": "width_shift",
    "height_shift_range": "height_shift",
    "shear_range": "shear",
    "zoom_range": "zoom",
    "horizontal_flip": "horizontal_flip",
    "fill_mode": "fill_mode",
}
TRAIN_CONFIG = plain_section("train", batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE)
# What our convolutions run with: params.yaml's `convolutions`, unless this variable names
# another; benchmarks.run puts it in the report's command.
CONVOLUTIONS = os.environ.get("FLAXVISION_CONVOLUTIONS") or builder.convolutions(
    load_params(peers.ROOT / "params.yaml")
)
unroll_threefry_on_cpu()  # as every stage runs (flaxvision.runtime.setup_jax)


def build(workload: Workload) -> tuple[nnx.Module, str]:
    """The model (in training mode) and its preprocess_input mode."""
    if workload.model in PRESETS:
        name = PRESETS[workload.model]
        model = models.create_model(
            name, num_classes=workload.classes, input_shape=workload.input_shape, rngs=nnx.Rngs(0)
        )
        return model, models.preprocessing(name)
    model, _ = build_backbone(
        workload.model, weights=None, input_shape=workload.input_shape, pooling="avg", rngs=nnx.Rngs(0)
    )
    return model, BACKBONES[workload.model].preprocessing


def forward_gflop_per_image(model: nnx.Module, input_shape) -> float:
    """XLA's count of the inference forward pass's floating-point operations, per image."""
    model.eval()
    graph, state = nnx.split(model)
    images = jax.ShapeDtypeStruct((BATCH_SIZE, *input_shape), np.float32)
    cost = jax.jit(lambda state, x: nnx.merge(graph, state)(x)).lower(state, images).cost_analysis()
    model.train()
    return cost["flops"] / BATCH_SIZE / 1e9


def workload_repeat(workload: Workload, batches: int) -> tuple[Callable[[], object], dict]:
    """One repeat of ``workload`` over ``batches`` batches, ready to call, and what was built."""
    (model, preprocessing), build_s = timed(lambda: build(workload))
    info = {
        "params": sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat))),
        "build_s": build_s,
        "forward_gflop_per_image": forward_gflop_per_image(model, workload.input_shape),  # XLA counts its own
        "convolutions": CONVOLUTIONS,
    }
    use_convolutions(model, CONVOLUTIONS)
    images, labels = synthetic_batch_set(workload, batches)
    if workload.mode == "train":
        trainer = Trainer(model, TRAIN_CONFIG, plain_section("augment"), preprocessing)
        data = OnDevices(trainer, images, labels)  # on every device, as fit puts them
        return lambda: trainer.train_epoch(data, 0, LEARNING_RATE), info
    model.eval()
    graph, state = nnx.split(model)
    logits_step = make_logits_step(graph, preprocessing)
    images = jax.device_put(images)
    return lambda: apply_in_batches(logits_step, state, images, BATCH_SIZE), info


def measure_workload(workload: Workload, protocol: Protocol) -> dict:
    batches = protocol.batches(workload)
    repeat, info = workload_repeat(workload, batches)
    return measure(repeat, batches * BATCH_SIZE, protocol) | info


def end_to_end(raw: Path, recipe: Recipe, protocol: Protocol) -> dict:
    """The pipeline's way: preprocess (decode, resize, split) once into uint8 arrays, then epochs
    of Trainer.train_epoch with the seed's augmentation inside the compiled step."""
    prepared = raw.parent / f"prepared-{recipe.name}"
    config = plain_section("preprocess", image_size=recipe.image_size, color_mode=recipe.color_mode)
    _, preprocess_s = timed(lambda: prepare("cats_vs_dogs", read_dataset("cats_vs_dogs", raw), config, prepared))
    data = load_prepared(prepared)
    model = models.create_model(
        recipe.model, num_classes=len(data.classes), input_shape=data.image_shape, rngs=nnx.Rngs(0)
    )
    use_convolutions(model, CONVOLUTIONS)
    augment = plain_section("augment", **{AUGMENT_FIELDS[k]: v for k, v in recipe.augmentation.items()})
    trainer = Trainer(model, TRAIN_CONFIG, augment, models.preprocessing(recipe.model))

    def put_on_devices():
        train = OnDevices(trainer, *data.splits["train"])
        jax.block_until_ready(train.images)
        return train

    train, device_put_s = timed(put_on_devices)
    times = [
        timed(partial(trainer.train_epoch, train, epoch, LEARNING_RATE))[1]
        for epoch in range(protocol.end_to_end_epochs)
    ]
    steps = len(train.labels) // BATCH_SIZE  # train_epoch drops the last partial batch
    return epoch_figures(times) | {
        "preprocess_s": preprocess_s,
        "device_put_s": device_put_s,
        "images_per_epoch": steps * BATCH_SIZE,
        "augment": dataclasses.asdict(augment),
    }


if __name__ == "__main__":
    import flax
    import jaxlib

    versions = {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    runner_main("flaxvision", versions, measure_workload, end_to_end)
