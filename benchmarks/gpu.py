"""The accelerator measurement: one command that writes its results as files.

    uv run --locked --extra cuda python -m benchmarks.gpu --output gpu-results

1. ResNet50 training at 224×224×3, 1000 classes, bfloat16 compute, batch 256, three ways:
   ``device``   the compiled train step called back to back on one batch already on the device
                (what the device alone can do);
   ``resident`` ``Trainer.train_epoch`` over a training set held on the device (the pipeline's
                host loop added: the per-step index upload, the learning rate, the metric sums);
   ``streamed`` ``Trainer.train_epoch`` fed by the streaming loader from prepared shards on disk
                (the pipeline's input pipeline added: Grain's reads and the uploads).
   Equal figures mean neither the host loop nor the input pipeline limits training. With
   ``--trace`` a jax.profiler trace of a few resident steps is kept as well.
2. The benchmark's six workloads (benchmarks.run_flaxvision) on the default device.
3. The default pipeline's wall time, stage by stage: ``dvc repro`` in a scratch copy of this
   checkout with an empty cache (or, where DVC is not installed, each stage's command from
   dvc.yaml in order).

Writes OUT/gpu.json (every figure) and OUT/gpu.md (the tables). Runs on any backend: on CPU,
``--quick`` makes it a smoke test of a minute or two.
"""

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from benchmarks.run_flaxvision import measure_workload
from benchmarks.workloads import WORKLOADS, Protocol, measure
from flaxvision import models
from flaxvision.batches import OnDevices, Streamed
from flaxvision.data.prepared import ShardedImages
from flaxvision.files import write_bytes
from flaxvision.recipes import plain_section
from flaxvision.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
TRACE_STEPS = 3


def resnet50_training(image_size: int, batch_size: int, steps: int, trace: Path | None) -> dict:
    """ResNet50 training img/s on device-resident batches, through train_epoch, and streamed."""
    shape = (image_size, image_size, 3)
    model = models.create_model("resnet50", num_classes=1000, input_shape=shape, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    config = plain_section("train", batch_size=batch_size, learning_rate=1e-3, compute_dtype="bfloat16")
    trainer = Trainer(model, config, plain_section("augment"), models.preprocessing("resnet50"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * batch_size, *shape), dtype=np.uint8)
    labels = rng.integers(0, 1000, len(images), dtype=np.int32)
    resident = OnDevices(trainer, images, labels)

    indices = jnp.arange(batch_size, dtype=jnp.int32)
    rate = jnp.float32(config.learning_rate)

    def device_steps():
        metrics = None
        for _ in range(steps):
            trainer.state, metrics = trainer.train_step(trainer.state, resident.images, resident.labels, indices, rate)
        jax.block_until_ready(metrics)

    images_per_repeat, protocol = steps * batch_size, Protocol(repeats=3)

    def img_per_s(run):
        return measure(run, images_per_repeat, protocol)

    result = {"image_size": image_size, "batch_size": batch_size, "steps": steps, "devices": jax.device_count()}
    result["device"] = img_per_s(device_steps)
    result["resident"] = img_per_s(lambda: trainer.train_epoch(resident, 0, config.learning_rate))
    with tempfile.TemporaryDirectory() as folder:
        shards = _write_shards(Path(folder), images)
        streamed = Streamed(trainer, ShardedImages(shards), labels)
        result["streamed"] = img_per_s(lambda: trainer.train_epoch(streamed, 0, config.learning_rate))
    if trace is not None:
        traced = OnDevices(trainer, images[: TRACE_STEPS * batch_size], labels[: TRACE_STEPS * batch_size])
        with tempfile.TemporaryDirectory() as folder:
            with jax.profiler.trace(folder):
                trainer.train_epoch(traced, 0, config.learning_rate)
            # The trace lies folders deep (plugins/profile/<run>/): keep its files flat, compressed.
            for file in Path(folder).rglob("*.pb"):
                write_bytes(trace.parent / f"{trace.name}-{file.name}.gz", gzip.compress(file.read_bytes()))
    return result


def _write_shards(folder: Path, images: np.ndarray, rows_per_shard: int = 1024) -> list[Path]:
    files = []
    for shard, first in enumerate(range(0, len(images), rows_per_shard)):
        files.append(folder / f"train_images-{shard:05d}.npy")
        np.save(files[-1], images[first : first + rows_per_shard])
    return files


def workloads(protocol: Protocol) -> dict:
    return {key: measure_workload(workload, protocol) for key, workload in WORKLOADS.items()}


# Not copied into the pipeline's scratch copy: environments, DVC's cache (its run cache would
# restore outputs instead of running the stages) and what earlier runs left.
LEFT_BEHIND = {
    ".venv", ".dvc/cache", ".dvc/tmp", "data", "artifacts", "checkpoints", "dvc_plots", "exported",
    "benchmarks/.peers", "benchmarks/.work",
}  # fmt: skip


def pipeline(out: Path) -> dict:
    """The default experiment's wall time, each stage timed, in a scratch copy of this checkout
    (its working tree as it is), with an empty cache as on a fresh machine."""
    scratch = Path(tempfile.mkdtemp(prefix="flaxvision-pipeline-"))
    try:
        copy = scratch / "main"
        left_behind = {ROOT / path for path in LEFT_BEHIND} | {out.resolve()}
        shutil.copytree(ROOT, copy, ignore=lambda folder, names: [n for n in names if Path(folder, n) in left_behind])
        if not (copy / ".git").is_dir():  # DVC needs a git repository
            for command in (
                ["init", "-q"],
                ["add", "-A"],
                ["-c", "user.name=gpu", "-c", "user.email=gpu@localhost", "commit", "-qm", "copy"],
            ):
                subprocess.run(["git", *command], cwd=copy, check=True)
        environment = os.environ | {"FLAXVISION_CACHE": str(scratch / "cache")}
        mirror = ROOT.parent / "shared" / "datasets"
        if "DATA_MIRROR" not in environment and mirror.is_dir():
            environment["DATA_MIRROR"] = str(mirror)
        stages = list(yaml.safe_load((copy / "dvc.yaml").read_text())["stages"].items())
        dvc = shutil.which("dvc")
        times, started = {}, time.perf_counter()
        with open(out / "pipeline.log", "w") as log:
            for name, stage in stages:
                command = [dvc, "repro", "--force", "--single-item", name] if dvc else ["bash", "-c", stage["cmd"]]
                start = time.perf_counter()
                process = subprocess.run(command, cwd=copy, env=environment, stdout=log, stderr=subprocess.STDOUT)
                times[name] = time.perf_counter() - start
                if process.returncode:
                    return {"error": f"stage {name} exited with {process.returncode} (pipeline.log)", "stage_s": times}
        metrics = json.loads((copy / "results" / "evaluate" / "metrics.json").read_text())
        return {
            "runner": "dvc repro" if dvc else "dvc.yaml's commands",
            "wall_s": time.perf_counter() - started,
            "stage_s": times,
            "test_accuracy": metrics["test"]["accuracy"],
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(results: dict) -> str:
    lines = [
        f"# Accelerator measurement, {results['when']}",
        "",
        f"- Devices: {', '.join(results['devices'])}; jax {results['versions']['jax']}, "
        f"flax {results['versions']['flax']}, Python {results['versions']['python']}.",
        f"- Command: `{results['command']}`",
        "",
    ]
    training = results.get("resnet50")
    if training:
        lines += [
            f"ResNet50 training, {training['image_size']}×{training['image_size']}×3, bfloat16, "
            f"batch {training['batch_size']}, {training['steps']} steps per repeat:",
            "",
            "| fed by | img/s | first call s |",
            "|---|---|---|",
        ]
        for way in ("device", "resident", "streamed"):
            lines.append(f"| {way} | {training[way]['img_per_s']:.0f} | {training[way]['first_call_s']:.1f} |")
        lines.append("")
    if results.get("workloads"):
        lines += ["| workload | img/s | first call s |", "|---|---|---|"]
        for key, figures in results["workloads"].items():
            lines.append(f"| {key} | {figures['img_per_s']:.1f} | {figures['first_call_s']:.1f} |")
        lines.append("")
    run = results.get("pipeline")
    if run:
        if "error" in run:
            lines.append(f"Pipeline: {run['error']}")
        else:
            stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in run["stage_s"].items())
            lines.append(
                f"Default pipeline ({run['runner']}): {run['wall_s']:.0f} s, test accuracy "
                f"{run['test_accuracy']:.3f}; {stages}."
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="folder for gpu.json, gpu.md and logs")
    parser.add_argument("--quick", action="store_true", help="a CPU smoke test: small ResNet50 run, short repeats")
    parser.add_argument("--trace", action="store_true", help="keep a jax.profiler trace of a few training steps")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: resnet50, workloads, pipeline")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    if unknown := skip - {"resnet50", "workloads", "pipeline"}:
        parser.error(f"--skip {','.join(sorted(unknown))}: not a part (resnet50, workloads, pipeline)")
    import flax

    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.gpu", *sys.argv[1:]]),
        "devices": [str(d) for d in jax.devices()],
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version()},
    }

    def save():
        write_bytes(args.output / "gpu.json", json.dumps(results, indent=2).encode())
        write_bytes(args.output / "gpu.md", report(results).encode())

    parts = {
        "resnet50": lambda: resnet50_training(
            64 if args.quick else 224,
            8 if args.quick else 256,
            2 if args.quick else 16,
            args.output / "resnet50-trace" if args.trace else None,
        ),
        "workloads": lambda: workloads(
            Protocol(repeats=2, batches_scale=0.2) if args.quick else Protocol(batches_scale=4)
        ),
        "pipeline": lambda: pipeline(args.output),
    }
    for name, run_part in parts.items():
        if name in skip:
            continue
        print(f"[gpu] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        results[name] = run_part()
        print(f"[gpu] {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        save()  # each part as it ends: a run cut short still brings back what it measured
    print(report(results))


if __name__ == "__main__":
    main()
