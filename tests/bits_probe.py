"""The bits of the first steps of the default experiment's training, as a sha256 of the weights.

The model, its convolutions, and the train and augment sections come from the project's
params.yaml, on generated images, through the train stage's own code (Trainer, OnDevices); the
numerics are what importing flaxvision sets (FLAXVISION_NUMERICS). tests/test_portable_bits.py runs it natively and as
another CPU (qemu-user) and compares the hashes with each other and with BITS_SHA256 there.

Usage: python -m tests.bits_probe [steps]
"""

import hashlib
import sys

import jax
import numpy as np

from flaxvision import builder
from flaxvision.batches import OnDevices
from flaxvision.models.layers import use_convolutions
from flaxvision.params import load_params
from flaxvision.training import Trainer
from tests.helpers import PROJECT_ROOT, pattern_images

IMAGE_SIZE = 80  # the default model's own: smaller maps and dots leave some kernels' splits untried
CLASSES = 2


def weights_sha256(steps: int) -> str:
    params = load_params(PROJECT_ROOT / "params.yaml")
    model_name, config = params.model, params.train
    model = builder.build_model(
        model_name,
        num_classes=CLASSES,
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        dtype=config.compute_dtype,
        batchnorm_momentum=config.batchnorm_momentum,
        seed=config.seed,
    )
    use_convolutions(model, builder.convolutions(params))
    trainer = Trainer(model, config, params.augment, builder.preprocessing(model_name))
    images, labels = pattern_images(steps * config.batch_size, size=IMAGE_SIZE, classes=CLASSES)
    trainer.train_epoch(OnDevices(trainer, images, labels), epoch=0, learning_rate=config.learning_rate)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(trainer.state):  # weights, BatchNorm statistics, optimizer, RNG state
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    print(weights_sha256(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
