"""SIGNS: the hand-sign h5 files, one per split, checked when fetched and read as decoded arrays."""

import dataclasses
from pathlib import Path

import numpy as np

from flaxvision.data.datasets.dataset import ArraySplit, RawDataset
from flaxvision.data.download import FileRecord, RemoteFile, fetch, identify_files, link_or_copy
from flaxvision.errors import UserError


def check_signs(path: Path) -> str:
    """Content check of a SIGNS h5 file: its keys, shapes and labels."""
    _read_signs(path)
    return "h5 keys and shapes ok"


def _signs_split(name: str) -> str:
    return name.split("_")[0]  # train_signs.h5 -> train


def _read_signs(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    import h5py  # only SIGNS needs it

    split = _signs_split(path.name)
    try:
        with h5py.File(path, "r") as h5:
            x, y, classes = (h5[key][()] for key in (f"{split}_set_x", f"{split}_set_y", "list_classes"))
    except (OSError, KeyError) as error:
        raise UserError(f"{path}: not a SIGNS h5 file ({error})") from None
    y = y.reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) != len(y):
        got = f"{x.shape} {x.dtype}, {y.shape}"
        raise UserError(f"{path}: expected {split}_set_x uint8 [N,H,W,3] and N labels, got {got}")
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes.reshape(-1)]
    lookup = {value: i for i, value in enumerate(classes.reshape(-1).tolist())}
    if unknown := set(y.tolist()) - set(lookup):
        raise UserError(f"{path}: labels {sorted(unknown)[:5]} are not in list_classes {names}")
    return names, x, np.array([lookup[v] for v in y.tolist()], dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class SignsSource:
    """The SIGNS h5 files (``<split>_set_x``, ``<split>_set_y``, ``list_classes``), linked into data/raw."""

    files: tuple[RemoteFile, ...]

    def download(self, raw: Path) -> list[FileRecord]:
        records = []
        for file in self.files:
            path, record = fetch(file)
            check_signs(path)
            link_or_copy(path, raw / file.name)
            records.append(record)
        return records

    def identify(self) -> list[dict]:
        return identify_files(self.files)

    def read(self, raw: Path) -> RawDataset:
        splits, all_classes = {}, []
        for file in self.files:
            path = raw / file.name
            if not path.is_file():
                raise UserError(f"{path} not found: run `dvc repro download`")
            classes, images, labels = _read_signs(path)
            all_classes.append(classes)
            splits[_signs_split(file.name)] = ArraySplit(file.name, images, labels)
        if any(c != all_classes[0] for c in all_classes):
            raise UserError(f"{raw}: the SIGNS files disagree on list_classes: {all_classes}")
        return RawDataset(all_classes[0], splits)
