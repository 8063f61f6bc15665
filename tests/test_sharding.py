"""Training split over several devices and processes: the one-device step, within float rounding.

Not bit for bit: the gradients and BatchNorm's statistics are sums over the batch, and split over
D devices each device sums its own rows before an all-reduce adds the D partial sums, another
association than one device's; XLA also fuses the partitioned program's elementwise work
differently (where a multiply-add becomes one FMA). So one step is compared, at a tolerance that
rounding meets and a wrong split does not (a per-device BatchNorm statistic, a dropout mask or
augmentation drawn per device, a gradient not summed over devices all move the weights by 1e-3 or
more); later steps amplify rounding like any perturbation of the weights. Processes are devices
in other address spaces: two processes of one device give the bits of one process with two.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow

# seed 000's CNN (BatchNorm, dropout) with either convolutions, and the default model and convolutions
CASES = ("belgiumtsc_cnn:xla", "belgiumtsc_cnn:onednn", "simple_cnn:onednn")
TOLERANCE = 1e-5  # of the largest magnitude among a leaf's values, at least 1

# One step of 32 images for each case (oneDNN's only where it exists), with BatchNorm, dropout,
# augmentation, mixup and the weights' EMA on, and SGD (an optimizer that does not rescale
# near-zero gradients to the learning rate, as Adam's first step does); each writes its state
# to an .npz.
SCRIPT = """
import json, sys
import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from flaxvision import models
from flaxvision.ops import onednn
from flaxvision.models.layers import use_convolutions
from flaxvision.runtime import setup_jax
from flaxvision.batches import OnDevices
from flaxvision.training import Trainer
from tests.helpers import augment_config, pattern_images, train_config

setup_jax()  # joins the other processes under FLAXVISION_DISTRIBUTED=1
images, labels = pattern_images(32, size=32)
augmentation = augment_config(
    rotation=10.0, horizontal_flip=True, zoom=0.1, crop_scale=(0.5, 1.0), brightness=0.2, mixup=0.2
)
config = train_config(batch_size=32, optimizer="sgd", momentum=0.0, learning_rate=0.1, ema_decay=0.9)
report = {"devices": jax.device_count(), "processes": jax.process_count(), "all_reduce": [], "onednn_rows": []}
for case in sys.argv[2:]:
    name, convolutions = case.split(":")
    if convolutions == "onednn" and not onednn.SUPPORTED:
        continue
    model = models.create_model(name, num_classes=3, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
    trainer = Trainer(use_convolutions(model, convolutions), config, augmentation, "unit")
    data = OnDevices(trainer, images, labels)
    arguments = (trainer.state, data.images, data.labels, jax.numpy.arange(32), np.float64(0.1))
    trainer.train_step = trainer.train_step.lower(*arguments).compile()  # the step train_epoch runs
    text = trainer.train_step.as_text()
    report["all_reduce"].append("all-reduce" in text)
    report["onednn_rows"] += sorted({
        int(line.split("custom-call(")[0].split("f32[")[1].split(",")[0])
        for line in text.splitlines() if "flaxvision_onednn_conv_Forward" in line and "custom-call(" in line
    })
    trainer.train_epoch(data, 0, config.learning_rate)
    leaves = [x for x in jax.tree.leaves(trainer.state) if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
    arrays = [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in leaves]
    if jax.process_index() == 0:
        np.savez(f"{sys.argv[1]}-{name}-{convolutions}.npz", *arrays)
print(json.dumps(report))
"""


def train_step(out: Path, devices: int = 1, processes: int = 1) -> dict:
    """Run SCRIPT on ``devices`` devices in each of ``processes`` processes; the report of process 0."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    if processes > 1:
        with socket.socket() as probe:  # a free port for the coordinator
            probe.bind(("localhost", 0))
            port = probe.getsockname()[1]
        env |= {"FLAXVISION_DISTRIBUTED": "1", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}"}
        env |= {"JAX_NUM_PROCESSES": str(processes)}
    command = [sys.executable, "-c", SCRIPT, str(out), *CASES]
    runs = [
        subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env | {"JAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def states(out: Path) -> dict[str, list[np.ndarray]]:
    """The .npz files of a run: '<model>-<convolutions>' -> the state's leaves."""
    return {
        file.name.removeprefix(f"{out.name}-").removesuffix(".npz"): [
            array for _, array in sorted(np.load(file).items(), key=lambda item: int(item[0][4:]))
        ]
        for file in sorted(out.parent.glob(f"{out.name}-*.npz"))
    }


def test_a_step_over_two_or_four_devices_or_two_processes_is_the_one_device_step(tmp_path):
    one = train_step(tmp_path / "one")
    assert (one["devices"], one["all_reduce"]) == (1, [False] * len(one["all_reduce"]))
    reference = states(tmp_path / "one")
    assert len(reference) == len(one["all_reduce"]) and "belgiumtsc_cnn-xla" in reference
    split = {}
    for devices, processes in [(2, 1), (4, 1), (1, 2)]:
        out = tmp_path / f"devices-{devices}-processes-{processes}"
        report = train_step(out, devices, processes)
        assert (report["devices"], report["processes"]) == (devices * processes, processes)
        assert all(report["all_reduce"])  # the gradients are summed over the devices
        # each device runs oneDNN's convolutions on its own rows of the batch, not on all of them
        assert {32 // (devices * processes)} >= set(report["onednn_rows"])
        split[devices, processes] = states(out)
        for key, leaves in split[devices, processes].items():
            for other, own in zip(leaves, reference[key], strict=True):
                scale = max(1.0, float(np.max(np.abs(own), initial=0)))
                np.testing.assert_allclose(
                    other, own, rtol=0, atol=TOLERANCE * scale, err_msg=f"{key}, {devices}×{processes}"
                )
    # two processes of one device are one process of two devices
    for key, leaves in split[2, 1].items():
        assert all(np.array_equal(a, b) for a, b in zip(leaves, split[1, 2][key], strict=True)), key
