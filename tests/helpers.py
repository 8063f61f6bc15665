"""Small generated data shared by the tests."""

import numpy as np


def pattern_images(count: int, size: int = 32, classes: int = 3, seed: int = 0):
    """uint8 images whose class is the colour of a bright square on a noisy background.

    Learnable in a few steps, so tests can check that training makes progress.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
    colours = np.eye(3, dtype=np.uint8)[np.arange(classes) % 3] * 200 + 40
    for image, label in zip(images, labels):
        top, left = rng.integers(0, size // 2, size=2)
        image[top:top + size // 2, left:left + size // 2] = colours[label]
    return images, labels.astype(np.int32)
