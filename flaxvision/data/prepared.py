"""data/prepared: decoded, resized, split arrays, written by preprocess and read by training.

Layout (all written at once: the folder is replaced atomically):

* ``<split>_images-00000.npy``, ``-00001``, …: uint8 [n, H, W, C] (C = 3 for rgb, 1 for
  grayscale), the split's images in order, in shards of at most ``SHARD_BYTES``, and
  ``<split>_labels.npy`` int32 [N], for split in train, validation, test. Shards keep every file
  a size that copies and streams well; `ShardedImages` reads rows of any of them by offset.
* ``dataset.json``: data, classes (in label order), image_size, color_mode, split sizes and
  where each split came from;
* ``report.json``: counts per split and class, skipped (undecodable or too large) files with
  the reason, ignored (non-image) files, empty classes, and warnings about classes with too
  few images in a split (flaxvision.data.splits.thin_class_warnings);
* ``SHA256SUMS``: the digest of every file above, checked whenever the folder is loaded.
"""

import bisect
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from flaxvision.data.datasets import ArraySplit, FileSplit, RawDataset, TfdsSplit
from flaxvision.data.images import ImageDecoder
from flaxvision.data.splits import SPLITS, plan_splits, thin_class_warnings
from flaxvision.errors import UserError
from flaxvision.files import atomic_directory, verify_checksums, write_checksums, write_json
from flaxvision.params import PreprocessConfig

PREPARED_DIR = Path("data/prepared")
COPY_ROWS = 1024  # rows copied at a time from the decoded arrays to the split files
SHARD_BYTES = 256 << 20  # images per shard file: as many as fit in this


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The prepared dataset as training reads it; images are read from their shards on demand."""

    data: str
    classes: list[str]
    image_shape: tuple[int, int, int]  # height, width, channels
    color_mode: Literal["rgb", "grayscale"]
    splits: dict[str, tuple["ShardedImages", np.ndarray]]  # split -> (uint8 images, int32 labels)
    checksums: str  # SHA256SUMS, verified: the content of every file, for the train stage's fingerprint


class ShardedImages:
    """A split's images across its shard files, as one random-access uint8 array [N, H, W, C].

    Rows are read with ``os.preadv`` into a new array: nothing is memory-mapped, so reading a batch
    costs that batch's memory only (the page cache is the kernel's), and threads may read at once.
    ``np.asarray(images)`` reads them all.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._fds, self._offsets, starts = [], [], [0]
        shapes = []
        for file in files:
            with open(file, "rb") as f:
                version = np.lib.format.read_magic(f)
                header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = header(f)
                if fortran or dtype != np.uint8 or len(shape) != 4:
                    raise ValueError(f"{file} is not a C-ordered uint8 [N, H, W, C] array")
                self._offsets.append(f.tell())
            shapes.append(shape)
            starts.append(starts[-1] + shape[0])
            self._fds.append(os.open(file, os.O_RDONLY))
        if len({shape[1:] for shape in shapes}) > 1:
            raise ValueError(f"the shards {files[0].name}… differ in image shape")
        self._starts = starts
        self.shape = (starts[-1], *shapes[0][1:]) if shapes else (0, 0, 0, 0)
        self.dtype = np.dtype(np.uint8)
        self._row_bytes = int(np.prod(self.shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return len(self) * self._row_bytes

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images at ``rows`` (indices, in any order), as a new array."""
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for position, row in enumerate(np.asarray(rows, np.int64).tolist()):
            shard = bisect.bisect_right(self._starts, row) - 1
            offset = self._offsets[shard] + (row - self._starts[shard]) * self._row_bytes
            if os.preadv(self._fds[shard], [out[position]], offset) != self._row_bytes:
                raise OSError(f"{self.files[shard]} is shorter than its header says: run `dvc repro preprocess`")
        return out

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.arange(len(self))[key]
        return self.read(rows) if rows.ndim else self.read([int(rows)])[0]

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        images = self.read(np.arange(len(self)))
        return images if dtype is None else images.astype(dtype)

    def __del__(self) -> None:
        for fd in self._fds:
            os.close(fd)


Images = np.ndarray | ShardedImages  # uint8 [N, H, W, C]: in memory, or read from the shards on demand


@dataclasses.dataclass(frozen=True)
class _Decoded:
    images: np.ndarray  # rows of the images that decoded, in order
    labels: np.ndarray
    skipped: list[dict]


def prepare(data: str, dataset: RawDataset, config: PreprocessConfig, out: Path = PREPARED_DIR) -> tuple[dict, dict]:
    """Decode, split and write ``dataset`` to ``out`` (atomically); returns (dataset.json, report.json)."""
    image_size = cast(tuple[int, int], config.image_size)  # resolved by the stage
    with atomic_directory(out) as tmp, ImageDecoder(image_size, config.color_mode) as decoder:
        decoded = {name: _decode(decoder, name, split, tmp, config) for name, split in dataset.splits.items()}
        origins = {name: split.origin for name, split in dataset.splits.items()}
        plans = plan_splits(
            {name: d.labels for name, d in decoded.items()},
            origins,
            config.val_fraction,
            config.test_fraction,
            config.split_seed,
        )
        report: dict[str, Any] = {"splits": {}, "skipped": [s for d in decoded.values() for s in d.skipped]}
        for name, plan in plans.items():
            if not len(plan.indices):
                raise UserError(f"the {name} split is empty ({plan.description}): add images or change fractions")
            labels = _write_split(tmp, name, decoded[plan.source], plan.indices)
            counts = np.bincount(labels, minlength=len(dataset.classes))
            per_class = dict(zip(dataset.classes, counts.tolist(), strict=True))
            report["splits"][name] = {"count": len(labels), "per_class": per_class}
        for leftover in tmp.glob(".*.decoded.npy"):
            leftover.unlink()
        per_class = {name: split["per_class"] for name, split in report["splits"].items()}
        fractions = {"validation": config.val_fraction, "test": config.test_fraction}
        report |= {
            "ignored": dataset.ignored,
            "empty_classes": dataset.empty_classes,
            "warnings": thin_class_warnings(per_class, plans, origins, fractions),
        }
        info = {
            "data": data,
            "classes": dataset.classes,
            "image_size": list(image_size),
            "color_mode": config.color_mode,
            "splits": {name: report["splits"][name]["count"] for name in SPLITS},
            "split_sources": {name: plan.description for name, plan in plans.items()},
        }
        for filename, value in (("dataset.json", info), ("report.json", report)):
            write_json(tmp / filename, value)
        write_checksums(tmp)
    return info, report


def _decode(
    decoder: ImageDecoder, name: str, split: FileSplit | ArraySplit | TfdsSplit, tmp: Path, config: PreprocessConfig
) -> _Decoded:
    """Decode one predefined split into a temporary memory-mapped array; skip what fails."""
    total = len(split)
    shape = (total, *cast(tuple[int, int], config.image_size), config.channels)  # resolved by the stage
    images = _new_array(tmp / f".{name}.decoded.npy", shape)
    labels: list[int] = []
    skipped: list[dict] = []
    for result in decoder.map(split, total, desc=f"{name} ({split.origin})"):
        if result.pixels is None:
            skipped.append({"file": result.key, "split": name, "reason": result.error})
        else:
            images[len(labels)] = result.pixels
            labels.append(result.label)
    if total and len(skipped) / total > config.max_bad_fraction:
        shown = ", ".join(f"{s['file']} ({s['reason']})" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise UserError(
            f"{split.origin}: {len(skipped)} of {total} images unreadable, more than max_bad_fraction "
            f"{config.max_bad_fraction}: {shown}{more}"
        )
    return _Decoded(images[: len(labels)], np.array(labels, dtype=np.int32), skipped)


def _write_split(tmp: Path, name: str, decoded: _Decoded, indices: np.ndarray) -> np.ndarray:
    image_shape = decoded.images.shape[1:]
    per_shard = max(1, SHARD_BYTES // int(np.prod(image_shape)))
    for shard, first in enumerate(range(0, len(indices), per_shard)):
        rows = indices[first : first + per_shard]
        images = _new_array(tmp / f"{name}_images-{shard:05d}.npy", (len(rows), *image_shape))
        for start in range(0, len(rows), COPY_ROWS):
            images[start : start + COPY_ROWS] = decoded.images[rows[start : start + COPY_ROWS]]
        images.flush()
        del images
    labels = decoded.labels[indices]
    np.save(tmp / f"{name}_labels.npy", labels)
    return labels


def _new_array(path: Path, shape: tuple) -> np.memmap:
    """A uint8 .npy file of ``shape``, memory-mapped for writing, its disk space reserved first:
    a full disk is then an OSError here, not a SIGBUS at the first write to a page it lacks."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    with open(path, "r+b") as file:
        os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
    return array


def load_prepared(path: str | Path = PREPARED_DIR) -> Prepared:
    """Read data/prepared (written by ``dvc repro preprocess``); images are read on demand."""
    path = Path(path)
    if not (path / "dataset.json").is_file():
        raise UserError(f"{path} is missing or incomplete (no dataset.json): run `dvc repro preprocess`")
    checksums = verify_checksums(path, "run `dvc repro --force preprocess`")
    try:
        info = json.loads((path / "dataset.json").read_text())
        splits = {
            name: (
                ShardedImages(sorted(path.glob(f"{name}_images-[0-9][0-9][0-9][0-9][0-9].npy"))),
                np.load(path / f"{name}_labels.npy"),
            )
            for name in SPLITS
        }
    except (OSError, ValueError) as error:
        problem = type(error).__name__
        raise UserError(f"{path} is missing or incomplete ({problem}): run `dvc repro preprocess`") from None
    height, width = info["image_size"]
    shape = (height, width, 3 if info["color_mode"] == "rgb" else 1)
    for name, (images, labels) in splits.items():
        if labels.shape != images.shape[:1] or (len(labels) and images.shape[1:] != shape):
            raise UserError(f"{path}/{name}_*.npy do not match dataset.json: run `dvc repro preprocess`")
    return Prepared(info["data"], info["classes"], shape, info["color_mode"], splits, checksums)
