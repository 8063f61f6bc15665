"""What the benchmark measures, and how, shared by every framework's runner.

This module needs only numpy and the standard library: the TF-Keras and PyTorch runners import
it inside their own environments, where neither JAX nor flaxvision is installed.

A workload is one model in one mode (train or infer) at batch size 32 on synthetic images. A
*repeat* runs ``batches`` batches and returns once the results are on the host; a runner times
``warmup`` repeats (the first of which compiles, traces or builds) and then ``repeats`` more,
and reports the median of those as img/s.
"""

import argparse
import dataclasses
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

BATCH_SIZE = 32
LEARNING_RATE = 1e-3  # Adam, as the seeds train


@dataclasses.dataclass(frozen=True)
class Workload:
    model: str  # seed_cnn | resnet50 | mobilenet_v2 | densenet121
    title: str  # the model as the table names it
    mode: str  # train | infer
    input_shape: tuple[int, int, int]  # height, width, channels
    classes: int | None  # None: a keras.applications backbone without its top, average-pooled
    batches: int  # batches per timed repeat (about a second of work for the peers)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.mode}"

    @property
    def images(self) -> int:
        return self.batches * BATCH_SIZE


WORKLOADS = {
    w.key: w
    for w in (
        # Seed 000: the BelgiumTSC CNN, 56×56 grayscale, 62 classes.
        Workload("seed_cnn", "seed 000 CNN", "train", (56, 56, 1), 62, batches=10),
        Workload("seed_cnn", "seed 000 CNN", "infer", (56, 56, 1), 62, batches=20),
        # Seed 004: ResNet50 from scratch on SIGNS, 64×64 RGB, 6 classes.
        Workload("resnet50", "seed 004 ResNet50", "train", (64, 64, 3), 6, batches=3),
        Workload("resnet50", "seed 004 ResNet50", "infer", (64, 64, 3), 6, batches=8),
        # keras.applications backbones (include_top=False, pooling='avg'), as transfer models run them.
        Workload("mobilenet_v2", "MobileNetV2", "infer", (224, 224, 3), None, batches=3),
        Workload("densenet121", "DenseNet121", "infer", (224, 224, 3), None, batches=2),
    )
}

# Issue 11: our img/s over the fastest peer's, at least this on every workload.
TARGETS = {key: 1.2 for key in WORKLOADS}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """End to end: one training epoch of a seed's recipe on cats_vs_dogs' train folder (2000
    JPEGs, 2 classes), JPEG to update: decoding, resizing, augmentation and training, batch 32,
    Adam, no validation; Keras' ImageDataGenerator + flow_from_directory + fit against ours."""

    name: str
    title: str  # the recipe as the report names it
    model: str  # the models registry's name; run_keras.py builds the same layers
    image_size: tuple[int, int]  # flow_from_directory's target_size
    color_mode: str  # grayscale | rgb
    # ImageDataGenerator's arguments (keras name -> value). Shear is in degrees, zoom draws
    # each axis' scale from [1 - zoom, 1 + zoom], shifts are fractions of the size.
    augmentation: dict
    target: float  # issue 11: Keras' epoch over ours, at least this


RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "seed_000",
            "seed 000's CNN at 56×56 grayscale",
            "belgiumtsc_cnn",
            (56, 56),
            "grayscale",
            {
                "rotation_range": 10,
                "width_shift_range": 0.1,
                "height_shift_range": 0.1,
                "shear_range": 0.1,
                "zoom_range": 0.1,
                "horizontal_flip": True,
                "fill_mode": "nearest",
            },
            target=1.2,
        ),
        Recipe(
            "seed_002",
            "seed 002's CNN (tutorial_cnn) at 150×150 RGB",
            "tutorial_cnn",
            (150, 150),
            "rgb",
            {
                "rotation_range": 45,
                "width_shift_range": 0.15,
                "height_shift_range": 0.15,
                "zoom_range": 0.5,
                "horizontal_flip": True,
                "fill_mode": "nearest",  # ImageDataGenerator's default, which the seed keeps
            },
            target=2.0,
        ),
    )
}


@dataclasses.dataclass(frozen=True)
class Protocol:
    warmup: int = 1  # untimed repeats; the first one's time is reported as first_call_s
    repeats: int = 5  # timed repeats; img/s is their median
    batches_scale: float = 1.0  # scales every workload's batches per repeat (small for smoke runs)
    end_to_end_epochs: int = 3  # the first compiles or traces; the others are timed

    def batches(self, workload: Workload) -> int:
        return max(1, round(workload.batches * self.batches_scale))


def synthetic_batch_set(workload: Workload, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random uint8 images [N, H, W, C] and int32 labels, the same for every framework."""
    rng = np.random.default_rng(0)
    count = batches * BATCH_SIZE
    images = rng.integers(0, 256, (count, *workload.input_shape), dtype=np.uint8)
    labels = rng.integers(0, workload.classes or 1, count, dtype=np.int32)
    return images, labels


def measure(run_repeat: Callable[[], object], images_per_repeat: int, protocol: Protocol) -> dict:
    """Time ``run_repeat`` (which must return only once its work is done) by the protocol."""
    start = time.perf_counter()
    run_repeat()
    first_call = time.perf_counter() - start
    for _ in range(protocol.warmup - 1):
        run_repeat()
    times = []
    for _ in range(protocol.repeats):
        start = time.perf_counter()
        run_repeat()
        times.append(time.perf_counter() - start)
    return summarize(first_call, times, images_per_repeat)


def summarize(first_call: float, times: list[float], images_per_repeat: int) -> dict:
    """The reported figures of a first call and the timed repeats after the warm-up."""
    median = statistics.median(times)
    return {
        "img_per_s": images_per_repeat / median,
        "first_call_s": first_call,
        # What the first repeat took beyond a steady one: compilation, tracing, allocation.
        "compile_s": max(first_call - median, 0.0),
        "repeat_s": times,
        "images_per_repeat": images_per_repeat,
    }


def epoch_figures(times: list[float]) -> dict:
    """An end-to-end run's epochs: the first (it compiles or traces) apart, the median of the rest."""
    return {"epoch_s": statistics.median(times[1:] or times), "first_epoch_s": times[0], "epoch_times_s": times}


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


RESULT_PREFIX = "BENCHMARK_RESULT "  # marks the runner's one JSON line among library chatter on stdout


def runner_main(
    framework: str,
    versions: dict,
    measure_workload: Callable[[Workload, Protocol], dict],
    end_to_end: Callable[[Path, Recipe, Protocol], dict] | None = None,
):
    """A framework runner's command line: measure the named workloads, print one JSON result.

    A workload that fails is reported with its error and the others still run.
    """
    parser = argparse.ArgumentParser(description=f"{framework}: the benchmark workloads, as JSON on stdout")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated keys of WORKLOADS")
    parser.add_argument("--warmup", type=int, default=Protocol.warmup)
    parser.add_argument("--repeats", type=int, default=Protocol.repeats)
    parser.add_argument("--batches-scale", type=float, default=Protocol.batches_scale)
    parser.add_argument("--epochs", type=int, default=Protocol.end_to_end_epochs)
    parser.add_argument("--end-to-end", type=Path, help="cats_vs_dogs as the download stage leaves it")
    args = parser.parse_args()
    protocol = Protocol(args.warmup, args.repeats, args.batches_scale, args.epochs)

    result = {"framework": framework, "versions": versions, "workloads": {}}
    for key in filter(None, args.workloads.split(",")):
        print(f"[{framework}] {key}", file=sys.stderr, flush=True)
        result["workloads"][key] = _reported(measure_workload, WORKLOADS[key], protocol)
    if args.end_to_end and end_to_end:
        result["end_to_end"] = {}
        for recipe in RECIPES.values():
            print(f"[{framework}] end-to-end epoch, {recipe.name}", file=sys.stderr, flush=True)
            result["end_to_end"][recipe.name] = _reported(end_to_end, args.end_to_end, recipe, protocol)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _reported(fn, *args) -> dict:
    try:
        return fn(*args)
    except Exception as error:  # reported in the table; the traceback goes to the log
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
