"""Streaming input: Grain reads each batch from random-access arrays while the devices compute.

A batch is the rows ``order[step * batch_size : (step + 1) * batch_size]`` of every array given,
the very rows the in-memory path gathers on the devices, so the two paths see the same batches.
Grain's worker threads read them (from data/prepared's shards, `ShardedImages`, or any array) and
put them on the devices ahead of the step that needs them. With several processes
(jax.distributed), each reads only the rows of every global batch that its own devices hold.
The iterator's state (`get_state`) is small JSON: a checkpoint keeps it to resume mid-epoch.
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grain
import jax
import numpy as np
from jax.sharding import Sharding

READ_THREADS = 4  # batches read at once: enough to hide the reads behind a step
PREFETCH = 8  # batches read ahead, at most: the host memory streaming needs is about this many batches


class Rows(Protocol):
    """A random-access array: a numpy array, or data/prepared's shards (`ShardedImages`)."""

    def __getitem__(self, rows: np.ndarray, /) -> np.ndarray: ...


def batches(
    arrays: Sequence[Rows],
    order: np.ndarray,
    batch_size: int,
    sharding: Sharding | None = None,
    state: dict[str, Any] | None = None,
) -> grain.DatasetIterator:
    """A Grain iterator over the batches of ``order`` (a whole number of them): tuples of
    jax.Arrays of ``arrays``' rows, laid out by ``sharding`` (a batch axis first; None: the default
    device), of which this process read only its own rows. ``state``: an earlier iterator's
    ``get_state()``, to continue where it stopped."""
    return iterate(len(order) // batch_size, reader(arrays, order, batch_size, sharding), state)


def reader(
    arrays: Sequence[Rows], order: np.ndarray, batch_size: int, sharding: Sharding | None = None
) -> Callable[[int], tuple[jax.Array, ...]]:
    """``read(step)``: the step's batch of every array, this process's rows of it, on the devices."""
    if len(order) % batch_size:
        raise ValueError(f"{len(order)} rows are not a whole number of batches of {batch_size}")
    local = _local_rows(sharding, batch_size)

    def read(step: int) -> tuple[jax.Array, ...]:
        rows = order[step * batch_size : (step + 1) * batch_size][local]
        if sharding is None:
            return tuple(jax.device_put(array[rows]) for array in arrays)
        return tuple(jax.make_array_from_process_local_data(sharding, array[rows]) for array in arrays)

    return read


def iterate(
    steps: int,
    read: Callable[[int], tuple[jax.Array | None, ...]],
    state: dict[str, Any] | None = None,
    threads: int = READ_THREADS,
) -> grain.DatasetIterator:
    """A Grain iterator over ``read(step)`` for every step, computed ``threads`` at a time ahead of
    use, in order; ``state`` (an earlier iterator's ``get_state()``) continues where that one was."""
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=PREFETCH if threads > 1 else 1)
    iterator = iter(grain.MapDataset.range(steps).map(read).to_iter_dataset(options))
    if state is not None:
        iterator.set_state(state)
    return iterator


def _local_rows(sharding: Sharding | None, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold (contiguous on a data mesh)."""
    if sharding is None:
        return slice(None)
    held = [index[0] for index in sharding.addressable_devices_indices_map((batch_size,)).values() if index]
    start, stop = min(s.start or 0 for s in held), max(batch_size if s.stop is None else s.stop for s in held)
    return slice(start, stop)
