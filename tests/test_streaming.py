"""Streaming input (flaxvision.data.loader, flaxvision.batches.Streamed): sharded prepared data read by
Grain, the same run as on the devices, bounded memory, mid-epoch resume after SIGKILL, and
training over several processes with jax.distributed.

The end-to-end cases run the train stage (`python -m stages.train`) as its own process in a
folder holding only params.yaml and data/prepared, as preprocess would leave them.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from flax import nnx

from flaxvision.batches import streams
from flaxvision.data import loader, prepared
from flaxvision.data.prepared import load_prepared
from flaxvision.features import write_features
from flaxvision.files import write_checksums
from flaxvision.training import fit
from tests.helpers import CLASSES, PROJECT_ROOT, pattern_images, prepare, train_config, write_tree
from tests.test_training import AUGMENT, make_trainer


@pytest.mark.slow
def test_preprocess_shards_a_split_and_reads_it_as_one_array(offline_project, monkeypatch):
    write_tree(Path("shapes"), {"circle": 10, "square": 10, "star": 10})
    prepare("folder:shapes", image_size=(8, 8))
    whole = load_prepared().splits["train"][0]
    assert len(whole.files) == 1
    monkeypatch.setattr(prepared, "SHARD_BYTES", 5 * 8 * 8 * 3)  # 5 images per shard
    prepare("folder:shapes", image_size=(8, 8))
    images, labels = load_prepared().splits["train"]

    assert [f.name for f in images.files] == [f"train_images-{i:05d}.npy" for i in range(4)]  # 18 = 5+5+5+3
    assert np.array_equal(np.concatenate([np.load(f) for f in images.files]), np.asarray(whole))
    assert images.shape == (18, 8, 8, 3) and len(labels) == 18 and images.nbytes == 18 * 192
    rows = np.array([17, 0, 9, 4, 5, 9])
    expected = np.asarray(whole)
    assert np.array_equal(images[rows], expected[rows])
    assert np.array_equal(images[3:12:2], expected[3:12:2]) and np.array_equal(images[-1], expected[-1])
    assert np.array_equal(images[labels == 1], expected[labels == 1])


def test_loader_batches_follow_the_order_and_resume_from_their_state():
    images, labels = pattern_images(40, size=8)
    order = np.random.default_rng(0).permutation(40)[:32]
    iterator = loader.batches((images, labels), order, 8)
    first = next(iterator)
    state = iterator.get_state()
    rest = list(iterator)
    assert len(rest) == 3 and np.array_equal(first[0], images[order[:8]])
    assert all(np.array_equal(b[1], labels[order[8 * (i + 1) : 8 * (i + 2)]]) for i, b in enumerate(rest))
    resumed = list(loader.batches((images, labels), order, 8, state=state))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(rest, resumed, strict=True))


def test_auto_streams_what_exceeds_the_device_budget():
    images = np.zeros((100, 32, 32, 3), np.uint8)  # 0.29 MB
    assert streams(train_config(device_data_mb=0.25), images) == (
        True,
        "0 MB of images, more than 0 MB (train.device_data_mb)",
    )
    assert not streams(train_config(device_data_mb=1), images)[0]
    assert not streams(train_config(), images)[0]  # half of this machine's free memory
    assert streams(train_config(input="stream"), images) == (True, "train.input stream")
    assert streams(train_config(input="device", device_data_mb=0), images) == (False, "train.input device")


@pytest.mark.slow
def test_streamed_training_is_the_on_device_training(tmp_path):
    """The same batches, step by step: identical history and weights, EMA and augmentation included."""
    train, validation = pattern_images(50, size=32, seed=0), pattern_images(20, size=32, seed=1)
    runs = {}
    for path in ("device", "stream"):
        config = train_config(epochs=2, batch_size=8, ema_decay=0.9, input=path)
        trainer = make_trainer(config, AUGMENT)
        progress = fit(trainer, train, validation, tmp_path / path, "run")
        runs[path] = progress.history, jax.tree.leaves(nnx.state(trainer.model, nnx.Not(nnx.RngState)))
    (device_history, device_weights), (stream_history, stream_weights) = runs.values()
    assert device_history == stream_history
    assert all(np.array_equal(a, b) for a, b in zip(device_weights, stream_weights, strict=True))


# --- the train stage as its own process ---------------------------------------------------------


def stage_folder(root: Path, train: int, size: int = 32, **params) -> Path:
    """params.yaml (belgiumtsc_cnn, batch 16; ``params`` update train) and data/prepared of
    ``train`` pattern images (and 32 validation, 16 test) at ``size``."""
    folder = root / "data" / "prepared"
    folder.mkdir(parents=True)
    counts = {"train": train, "validation": 32, "test": 16}
    for seed, (split, count) in enumerate(counts.items()):
        images, labels = pattern_images(count, size=size, seed=seed)
        np.save(folder / f"{split}_images-00000.npy", images)
        np.save(folder / f"{split}_labels.npy", labels)
    info = {"data": "folder:x", "classes": CLASSES, "image_size": [size, size], "color_mode": "rgb"}
    (folder / "dataset.json").write_text(json.dumps({**info, "splits": counts, "split_sources": {}}))
    write_checksums(folder)
    write_features(root / "data" / "features", None, {"model": "belgiumtsc_cnn"})
    config = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    config["model"] = "belgiumtsc_cnn"
    config["train"].update({"epochs": 2, "batch_size": 16, **params})
    (root / "params.yaml").write_text(yaml.safe_dump(config))
    return root


def stage_env(root: Path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "FLAXVISION_CACHE": str(root.parent / "cache"), **extra}


# The stage, run as `python -m stages.train` would, printing its peak RSS as it exits. Not
# ru_maxrss: Linux carries that over from the forking process (pytest, gigabytes by now) through
# exec; /proc/self/status's VmHWM is the peak of the stage's own memory.
PEAK_RSS_PREFIX = "peak RSS kB "
TRAIN_STAGE = (
    "import atexit, re, runpy\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read()\n"
    f"    print({PEAK_RSS_PREFIX!r} + re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1), flush=True)\n"
    "atexit.register(peak)\n"
    "runpy.run_module('stages.train', run_name='__main__', alter_sys=True)\n"
)


def start_train(root: Path, log: str = "train.log", **env) -> subprocess.Popen:
    with (root / log).open("w") as output:
        command = [sys.executable, "-c", TRAIN_STAGE]
        return subprocess.Popen(command, cwd=root, env=stage_env(root, **env), stdout=output, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, root: Path, log: str = "train.log") -> tuple[str, int]:
    """Wait for a started stage: its output, and its peak resident memory in bytes."""
    process.wait()
    output = (root / log).read_text()
    assert process.returncode == 0, output
    peak = next(line for line in output.splitlines() if line.startswith(PEAK_RSS_PREFIX))
    return output, int(peak.removeprefix(PEAK_RSS_PREFIX)) * 1024


def run_train(root: Path) -> tuple[str, int]:
    return finish(start_train(root), root)


def outputs(root: Path) -> dict:
    """The stage's results: the weights' digest and the per-epoch curves."""
    curves = root / "results" / "train" / "plots" / "metrics"
    return {
        "weights": hashlib.sha256((root / "artifacts" / "model" / "weights.msgpack").read_bytes()).hexdigest(),
        "metrics": json.loads((root / "results" / "train" / "metrics.json").read_text()),
        "curves": {str(f.relative_to(curves)): f.read_text() for f in sorted(curves.rglob("*.tsv"))},
    }


def epoch_losses(root: Path) -> list[float]:
    rows = (root / "results" / "train" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[-1]) for row in rows]


@pytest.mark.slow
def test_a_streaming_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    params = {"input": "stream", "checkpoint_steps": 3, "epochs": 2}
    reference = stage_folder(tmp_path / "reference", 160, **params)  # 10 steps per epoch
    run_train(reference)
    killed = stage_folder(tmp_path / "killed", 160, **params)
    process = start_train(killed, "first.log")
    checkpoints = killed / "checkpoints"
    deadline = time.monotonic() + 600
    # Epoch 2, steps 3 or 6, whole: its SHA256SUMS is written last.
    while not any((checkpoints / step / "SHA256SUMS").exists() for step in ("13", "16")):
        assert process.poll() is None and time.monotonic() < deadline, (killed / "first.log").read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    output, _ = run_train(killed)
    assert "resuming from the checkpoint after epoch 1, step " in output and "of epoch 2" in output
    assert outputs(killed) == outputs(reference)


@pytest.mark.slow
def test_four_processes_train_as_one(tmp_path):
    """jax.distributed over localhost with gloo collectives: each process reads its quarter of
    every global batch; the losses are the one-process run's. (Two processes of one device each
    give the bits of one of two devices: tests/test_sharding.py.)"""
    params = {"input": "stream", "epochs": 2, "learning_rate": 1e-4}
    one = stage_folder(tmp_path / "one", 96, **params)
    run_train(one)
    count = 4
    root = stage_folder(tmp_path / "processes", 96, **params)
    with socket.socket() as probe:  # a free port for the coordinator
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {
        "FLAXVISION_DISTRIBUTED": "1",
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "JAX_NUM_PROCESSES": str(count),
    }
    processes = [start_train(root, f"process-{i}.log", JAX_PROCESS_ID=str(i), **env) for i in range(count)]
    try:
        logs = [finish(process, root, f"process-{i}.log")[0] for i, process in enumerate(processes)]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                process.wait()
    assert all("input: streamed by Grain" in log for log in logs)
    np.testing.assert_allclose(epoch_losses(root), epoch_losses(one), rtol=1e-4)


@pytest.mark.slow
def test_a_checkpoint_of_another_device_count_is_not_resumed_and_said_so(tmp_path):
    """Orbax cannot restore arrays laid out on 2 devices onto 1 (a 70-line traceback): the run's
    fingerprint holds the device count, so the 1-device run starts over, in one line."""
    root = stage_folder(tmp_path / "project", 64, epochs=1)
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    finish(start_train(root, "two.log", **two_devices), root, "two.log")
    output, _ = run_train(root)
    assert "checkpoints holds another run's checkpoints (other params, data, code or devices): starting over" in output
    assert "Traceback" not in output and "resuming" not in output
