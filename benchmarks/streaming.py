"""Streaming against in-memory input: training img/s, host cost and peak memory by dataset size.

    uv run python -m benchmarks.streaming                 # cats_vs_dogs at 1x, 4x and 16x (~15 min on 2 cores)
    uv run python -m benchmarks.streaming --sizes 1,4     # fewer sizes

The default experiment's training (simple_cnn at 96x96 rgb, its augmentation, batch 32) runs one
epoch of cats_vs_dogs' prepared train split, and of that split repeated 4 and 16 times, through
each input path of flaxvision.training: ``device`` (the split on the device, batches gathered
there) and ``stream`` (Grain reads each batch from the shard files). Each run is its own
process, so its peak RSS (ru_maxrss) is its own. The host cost of streaming is Grain's reading
alone, per image (its threads, with nothing else running), and the extra process CPU time per
image of the streamed epoch over the in-memory one. The first step (compilation) is not timed.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import peers
from benchmarks.run import WORK_DIR, download_cats_vs_dogs, machine_info

FOLDER = WORK_DIR / "streaming"
PATHS = ("device", "stream")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16", help="comma-separated multiples of cats_vs_dogs' train split")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(prepared_copy(int(args.child[0])), args.child[1])), flush=True)
        return
    machine = machine_info()
    prepared_copy(1, download_cats_vs_dogs(machine))
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        prepared_copy(size)
        for path in PATHS:
            rows.append({"size": size, "path": path, **child(size, path)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    machine["load_average_after"] = os.getloadavg()
    report = render(machine, rows)
    (FOLDER / "latest.md").write_text(report)
    (FOLDER / "latest.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(report)


def prepared_copy(size: int, raw: Path | None = None) -> Path:
    """data/prepared of cats_vs_dogs at the default params (preprocessed once, from ``raw``),
    its train split repeated ``size`` times (shard files of the 1x split's bytes, concatenated)."""
    from flaxvision.data import prepare, read_dataset
    from flaxvision.params import load_params

    one = FOLDER / "prepared-1x"
    if raw is not None and not (one / "dataset.json").is_file():
        config = dataclasses.replace(load_params(peers.ROOT / "params.yaml").preprocess, image_size=(96, 96))
        prepare("cats_vs_dogs", read_dataset("cats_vs_dogs", raw), config, one)
    folder = FOLDER / f"prepared-{size}x"
    if size > 1 and not (folder / "dataset.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for file in one.iterdir():
            if not file.name.startswith("train_"):
                (folder / file.name).write_bytes(file.read_bytes())
        images, labels = np.load(one / "train_images-00000.npy", mmap_mode="r"), np.load(one / "train_labels.npy")
        for copy in range(size):
            np.save(folder / f"train_images-{copy:05d}.npy", images)
        np.save(folder / "train_labels.npy", np.tile(labels, size))
    return folder


def child(size: int, path: str) -> dict:
    """One run in its own process: its result, and its peak RSS."""
    command = [sys.executable, "-m", "benchmarks.streaming", "--child", str(size), path]
    process = subprocess.Popen(command, cwd=peers.ROOT, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    return result | {"peak_rss_mb": usage.ru_maxrss / 1024}


def measure(folder: Path, path: str) -> dict:
    """One epoch of the default experiment's training on ``folder`` through input ``path``."""
    import jax

    from flaxvision import batches, builder, training
    from flaxvision.data import load_prepared, loader
    from flaxvision.params import load_params

    params = load_params(peers.ROOT / "params.yaml")
    config = dataclasses.replace(params.train, input=path)
    data = load_prepared(folder)
    model = builder.build_model(params.model, num_classes=len(data.classes), input_shape=data.image_shape, seed=0)
    trainer = training.Trainer(model, config, params.augment, builder.preprocessing(params.model))
    images, labels = data.splits["train"]
    source = (batches.Streamed if path == "stream" else batches.OnDevices)(trainer, images, labels)
    batch = next(source.batches(np.arange(config.batch_size), config.batch_size))
    trainer.state, _ = trainer.train_step(trainer.state, *batch, 1e-3)  # compiles
    jax.block_until_ready(trainer.state)

    steps = len(labels) // config.batch_size
    cpu, start = time.process_time(), time.perf_counter()
    trainer.train_epoch(source, 0, config.learning_rate)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    result = {
        "images": steps * config.batch_size,
        "dataset_mb": images.nbytes / 2**20,
        "epoch_s": seconds,
        "img_per_s": steps * config.batch_size / seconds,
        "cpu_us_per_image": 1e6 * cpu_seconds / (steps * config.batch_size),
    }
    if path == "stream":  # Grain's reading alone, onto the device, over the same epoch
        order = np.random.default_rng(0).permutation(len(labels))[: steps * config.batch_size]
        start = time.perf_counter()
        for images_batch, _ in loader.batches((images, labels), order, config.batch_size):
            images_batch.block_until_ready()
        result["read_us_per_image"] = 1e6 * (time.perf_counter() - start) / len(order)
    return result


def render(machine: dict, rows: list[dict]) -> str:
    by = {(row["size"], row["path"]): row for row in rows}
    lines = [
        f"Streaming against in-memory input, one training epoch of the default experiment (simple_cnn, "
        f"96x96 rgb, batch 32, its augmentation) on {machine['cpu']}; load average "
        f"{machine['load_average_before'][0]:.2f} before, {machine['load_average_after'][0]:.2f} after "
        "(`uv run python -m benchmarks.streaming`).",
        "",
        "| cats_vs_dogs train | images | MB | in memory img/s | streamed img/s | streamed / in memory "
        "| peak RSS in memory | peak RSS streamed | Grain read µs/image | extra CPU µs/image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sorted({row["size"] for row in rows}):
        device, stream = by[size, "device"], by[size, "stream"]
        lines.append(
            f"| {size}× | {device['images']} | {device['dataset_mb']:.0f} | {device['img_per_s']:.1f} "
            f"| {stream['img_per_s']:.1f} | {stream['img_per_s'] / device['img_per_s']:.3f} "
            f"| {device['peak_rss_mb']:.0f} MB | {stream['peak_rss_mb']:.0f} MB | {stream['read_us_per_image']:.0f} "
            f"| {stream['cpu_us_per_image'] - device['cpu_us_per_image']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
