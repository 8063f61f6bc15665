"""The datasets that params ``data`` can name, how to download each, and how to read data/raw.

``data`` is one of

* ``cats_vs_dogs``: Google's cats_and_dogs_filtered.zip (train/ and validation/ folders);
* ``belgiumtsc``: BelgiumTSC_Training.zip and BelgiumTSC_Testing.zip (PPM images in one
  folder per class, ``GT-<class>.csv`` beside them);
* ``signs``: the SIGNS hand-sign h5 files (no public URL: placed by hand in the mirror);
* ``dog_breeds``: Kaggle's dog-breed-identification.zip (no public URL: placed by hand in the
  mirror): ``labels.csv`` (id,breed) names the class of each ``train/<id>.jpg``; Kaggle's
  ``test/`` is unlabelled and not used;
* ``folder:<path>``: your own ``<class>/<image>`` tree (a relative path is relative to the
  project's root, also in ``dvc exp run --temp`` and queued experiments),
  optionally split into ``train/``, ``validation/`` (or ``val/``) and ``test/`` folders;
  snapshotted into data/raw (hardlinks where possible; links to folders and files are
  followed, a link loop or a link to nothing is an error);
* ``tfds:<name>`` or ``tfds:<name>:<version>``: a TFDS dataset already prepared (ArrayRecord)
  in $TFDS_DATA_DIR or tfds's default data dir, read with ``tfds.data_source``.

The layouts and where their files come from are modules of this package: ``folders`` (and a
user's tree), ``labels_csv``, ``archives`` (zip files), ``signs`` (h5) and ``tfds``; ``dataset``
holds what they all read into (RawDataset).
"""

import dataclasses
import json
from pathlib import Path
from typing import Protocol

from flaxvision.data.datasets.archives import ArchiveSource
from flaxvision.data.datasets.dataset import PROVENANCE_FILE, ArraySplit, FileSplit, RawDataset, TfdsSplit
from flaxvision.data.datasets.folders import IMAGE_SUFFIXES, FolderSource, scan_tree
from flaxvision.data.datasets.labels_csv import scan_labels_csv
from flaxvision.data.datasets.signs import SignsSource, check_signs
from flaxvision.data.datasets.tfds import TfdsSource
from flaxvision.data.download import FileRecord, RemoteFile, check_zip
from flaxvision.errors import UserError
from flaxvision.files import atomic_directory, write_json

__all__ = [
    "DATASETS",
    "IMAGE_SUFFIXES",
    "RAW_DIR",
    "PROVENANCE_FILE",
    "SOURCE_IDENTITY",
    "ArchiveSource",
    "ArraySplit",
    "FileSplit",
    "FolderSource",
    "RawDataset",
    "SignsSource",
    "TfdsSource",
    "TfdsSplit",
    "download_dataset",
    "get_source",
    "identify_dataset",
    "read_dataset",
    "scan_labels_csv",
    "scan_tree",
]


class DataSource(Protocol):
    """What params ``data`` names: a dataset's files, where they come from and how to read them."""

    def identify(self) -> list[dict]: ...

    def download(self, raw: Path) -> list[FileRecord]: ...

    def read(self, raw: Path) -> RawDataset: ...


RAW_DIR = Path("data/raw")
SOURCE_IDENTITY = Path("data/source.json")  # written by the source stage: see identify_dataset
VALID_FORMS = "cats_vs_dogs, signs, belgiumtsc, dog_breeds, folder:<path>, tfds:<name> or tfds:<name>:<version>"


def identify_dataset(data: str) -> dict:
    """What the files of ``data`` are, by content (sizes and SHA-256), wherever they were found.

    Files of a URL are downloaded into the cache first. The result does not depend on where the
    files are mounted, so it changes exactly when the data does.
    """
    return {"data": data, "files": get_source(data).identify()}


def download_dataset(data: str, raw: Path = RAW_DIR) -> list[FileRecord]:
    """Replace ``raw`` atomically with the raw files of ``data`` and their PROVENANCE.json."""
    source = get_source(data)
    with atomic_directory(raw) as tmp:
        records = source.download(tmp)
        sources = {"data": data, "files": [dataclasses.asdict(r) for r in records]}
        write_json(tmp / PROVENANCE_FILE, sources)
    return records


def read_dataset(data: str, raw: Path = RAW_DIR) -> RawDataset:
    """The dataset in ``raw``, checked to be the one ``data`` names and to be usable."""
    try:
        downloaded = json.loads((raw / PROVENANCE_FILE).read_text())["data"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"{raw}/{PROVENANCE_FILE} not found or unreadable: run `dvc repro download`") from None
    if downloaded != data:
        raise UserError(f"{raw} holds {downloaded!r}, params.yaml data is {data!r}: run `dvc repro download`")
    dataset = get_source(data).read(raw)
    if not any(len(split) for split in dataset.splits.values()):
        raise UserError(f"{raw}: dataset {data!r} has no images")
    if len(dataset.classes) < 2:
        raise UserError(f"{raw}: dataset {data!r} has only the class {dataset.classes}; a classifier needs two")
    return dataset


def get_source(data: str) -> DataSource:
    """The dataset named by params ``data`` (see the module docstring for the forms)."""
    if data in DATASETS:
        return DATASETS[data]
    kind, _, rest = data.partition(":")
    if kind == "folder" and rest:
        return FolderSource(rest)
    if kind == "tfds" and rest:
        return TfdsSource(*rest.split(":", 1)) if ":" in rest else TfdsSource(rest)
    raise UserError(f"params.yaml: unknown data {data!r}; valid forms: {VALID_FORMS}")


CATS_VS_DOGS = RemoteFile(
    name="cats_and_dogs_filtered.zip",
    url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
    known_copies={
        "a59c4d9e15e90ca67f9aa3d2d17db9e8e4929fa8a615ab2e87ccdbbc969e396d": "re-zip in shared/datasets",
    },
    size=68_606_236,
    check=check_zip,
)
BELGIUMTSC = tuple(
    RemoteFile(name, f"https://btsd.ethz.ch/shareddata/BelgiumTSC/{name}", check=check_zip)
    for name in ("BelgiumTSC_Training.zip", "BelgiumTSC_Testing.zip")
)
DOG_BREEDS = RemoteFile(
    name="dog-breed-identification.zip",
    url=None,
    check=check_zip,
    manual=(
        "Kaggle's dog breed data has no public URL: download dog-breed-identification.zip from "
        "https://www.kaggle.com/c/dog-breed-identification/data (signed in, rules accepted), "
        "put it in a folder and set DATA_MIRROR to it"
    ),
)
SIGNS_MANUAL = (
    "SIGNS has no public download: put train_signs.h5 and test_signs.h5 in a folder and set DATA_MIRROR to it"
)
SIGNS = tuple(
    RemoteFile(name, None, known_copies={digest: "shared/datasets copy"}, check=check_signs, manual=SIGNS_MANUAL)
    for name, digest in (
        ("train_signs.h5", "9d98dfc49ea313a134e72391664159de18b9005fe0344d65050f8b18d8efa712"),
        ("test_signs.h5", "539fb746ed9e947eb244cfca73f4d1b03f9bf5524d609eeed2cd76ddb1b179be"),
    )
)
DATASETS: dict[str, DataSource] = {
    "cats_vs_dogs": ArchiveSource((CATS_VS_DOGS,), root="cats_and_dogs_filtered"),
    "belgiumtsc": ArchiveSource(BELGIUMTSC, root="."),
    "signs": SignsSource(SIGNS),
    "dog_breeds": ArchiveSource((DOG_BREEDS,), root=".", layout=scan_labels_csv),
}
