"""What a source reads from data/raw: RawDataset and its split types, shared by every layout."""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from flaxvision.data.images import Example

PROVENANCE_FILE = "PROVENANCE.json"  # data/raw's provenance (download_dataset), beside the dataset's own files


@dataclasses.dataclass(frozen=True)
class FileSplit:
    """A predefined split made of image files (paths relative to the working directory)."""

    origin: str
    files: Sequence[Path]
    labels: Sequence[int]
    raw: Path

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Example]:
        for path, label in zip(self.files, self.labels, strict=True):
            yield Example(path.relative_to(self.raw).as_posix(), str(path), label)


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A predefined split held as decoded images: any sequence of arrays, e.g. a tfds data source."""

    origin: str
    images: Sequence[np.ndarray] | np.ndarray
    labels: Sequence[int] | np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Example]:
        for index in range(len(self)):
            yield Example(f"{self.origin}[{index}]", self.images[index], int(self.labels[index]))


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
    """A split of a ``tfds.data_source``: records are decoded one at a time, as they are used."""

    origin: str
    source: Sequence[dict]
    image_key: str
    label_key: str

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Example]:
        for index in range(len(self)):
            record = self.source[index]
            yield Example(f"{self.origin}[{index}]", record[self.image_key], int(record[self.label_key]))


@dataclasses.dataclass(frozen=True)
class RawDataset:
    """What preprocess reads from data/raw: class names and the predefined splits."""

    classes: list[str]
    splits: Mapping[str, FileSplit | ArraySplit | TfdsSplit]  # keys among train, validation, test
    ignored: list[dict] = dataclasses.field(default_factory=list)  # {"file", "reason"}: not images
    empty_classes: list[str] = dataclasses.field(default_factory=list)


def ignored_file(raw: Path, path: Path, reason: str) -> dict:
    """An entry of RawDataset.ignored: ``path``, relative to ``raw``, and why it is not used."""
    return {"file": path.relative_to(raw).as_posix(), "reason": reason}
