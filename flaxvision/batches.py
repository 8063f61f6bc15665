"""Where each train step's batch comes from: the two input paths, which give the same batches,
and which of them a run takes (`streams`).

`OnDevices` holds a split on every device as uint8, and each step gathers its batch by index
there, so the host only sends a vector of indices; `Streamed` has Grain read each batch from
data/prepared on host threads ahead of the step (flaxvision.data.loader), so the data may exceed
the devices' and the host's memory. Streaming, each process reads only its own devices' rows.
"""

import os
from typing import Any, Protocol

import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from flaxvision.data import Images, loader
from flaxvision.params import TrainConfig


class Placement(Protocol):
    """Where a step's data goes (flaxvision.training.Trainer): every device, or split over them."""

    batch_sharding: NamedSharding

    def replicate(self, tree: Any) -> Any: ...


class OnDevices:
    """A split held whole on every device: each step gathers its batch there, by index."""

    def __init__(self, trainer: Placement, images: Images, labels: np.ndarray) -> None:
        self.images: jax.Array
        self.labels: jax.Array
        self.images, self.labels = trainer.replicate((np.asarray(images), np.asarray(labels)))

    def batches(self, order: np.ndarray, batch_size: int, state: dict[str, Any] | None = None) -> grain.DatasetIterator:
        """A Grain iterator of (the split, its labels, the step's indices) for each batch of ``order``."""

        def indices(step: int) -> tuple[jax.Array, jax.Array, jax.Array]:
            return self.images, self.labels, jnp.asarray(order[step * batch_size : (step + 1) * batch_size], jnp.int32)

        return loader.iterate(len(order) // batch_size, indices, state, threads=1)


class Streamed:
    """A split on host or disk (data/prepared's shards): Grain reads each batch, this process's
    rows of it, and puts it on the devices ahead of its step."""

    def __init__(self, trainer: Placement, images: Images, labels: np.ndarray) -> None:
        self.images, self.labels, self.sharding = images, np.asarray(labels), trainer.batch_sharding

    def batches(self, order: np.ndarray, batch_size: int, state: dict[str, Any] | None = None) -> grain.DatasetIterator:
        """A Grain iterator of (the batch's images, its labels, None) for each batch of ``order``."""
        read = loader.reader((self.images, self.labels), order, batch_size, self.sharding)
        return loader.iterate(len(order) // batch_size, lambda step: (*read(step), None), state)


def streams(config: TrainConfig, *splits: Images) -> tuple[bool, str]:
    """Whether training streams ``splits`` (image arrays) rather than holding them on every
    device, and a line saying why: train.input, or with ``auto`` their size against
    train.device_data_mb (default: half the smallest free memory of a device; on CPU, where
    each device holds its own copy in host memory, the host's available memory shared among them)."""
    size = sum(images.nbytes for images in splits)
    if config.input != "auto":
        return config.input == "stream", f"train.input {config.input}"
    if config.device_data_mb is not None:
        budget, source = config.device_data_mb * 2**20, "train.device_data_mb"
    else:
        budget, source = free_device_memory() / 2, "half a device's free memory"
    verdict = "more" if size > budget else "no more"
    return size > budget, f"{size / 2**20:.0f} MB of images, {verdict} than {budget / 2**20:.0f} MB ({source})"


def free_device_memory() -> int:
    """Bytes free on the fullest local device (on CPU: the host's available memory per device)."""
    stats = [device.memory_stats() for device in jax.local_devices()]
    if all(stats):
        return min(s["bytes_limit"] - s["bytes_in_use"] for s in stats)
    try:
        with open("/proc/meminfo") as meminfo:  # MemAvailable counts the page cache the kernel would give up
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available // jax.local_device_count()
