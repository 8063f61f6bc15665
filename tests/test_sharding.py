"""Training split over several devices: the same losses as on one (XLA's host-platform devices)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import PROJECT_ROOT

pytestmark = pytest.mark.slow

# Three epochs of seed 000's CNN (BatchNorm, dropout) with augmentation, printing the losses and
# whether the compiled step really communicates between devices (an all-reduce of the gradients).
SCRIPT = """
import json
import jax
from flax import nnx
from flaxvision import models
from flaxvision.training import OnDevices, TrainConfig, Trainer
from flaxvision.transforms import AugmentConfig
from tests.helpers import pattern_images

images, labels = pattern_images(32, size=16)
model = models.create_model("belgiumtsc_cnn", num_classes=3, input_shape=(16, 16, 3), rngs=nnx.Rngs(0))
trainer = Trainer(model, TrainConfig(batch_size=8), AugmentConfig(rotation=10.0, horizontal_flip=True), "unit")
data = OnDevices(trainer, images, labels)
losses = [trainer.train_epoch(data, epoch, 1e-3)["loss"] for epoch in range(3)]
step = trainer.train_step.lower(trainer.state, data.images, data.labels, jax.numpy.arange(8), 1e-3).compile()
print(json.dumps({"devices": jax.device_count(), "losses": losses, "all_reduce": "all-reduce" in step.as_text()}))
"""


def train_on(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_training_split_over_four_devices_gets_the_losses_of_one():
    one, four = train_on(1), train_on(4)
    assert (one["devices"], four["devices"]) == (1, 4)
    assert four["all_reduce"] and not one["all_reduce"]
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-4)
