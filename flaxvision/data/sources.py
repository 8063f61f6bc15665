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

Folder layouts (cats_vs_dogs, belgiumtsc, folder:) are read the same way: class names are
folder names, labels are their sorted order (for BelgiumTSC the folder 00042 is ClassId 42 of
its GT csv files; as in the seed, the csv files and their ROIs are not used). A class is the class folder of train; class
folders of the other splits must be among them. A class without any image in any split is
left out (reported as empty), so a model never has an output that no image can train.
Files without an image suffix (BelgiumTSC's GT csv files, notes) are ignored and listed.

The labels.csv layout (dog_breeds) has one pool, train/, which preprocess splits. Class names
are the breeds, sorted. An id of labels.csv without its image is an error; images that
labels.csv does not name, and the other entries beside it (test/, sample_submission.csv),
are ignored and listed.
"""

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from flaxvision.data.download import (
    FileRecord,
    RemoteFile,
    check_zip,
    extract_zip,
    fetch,
    link_or_copy,
    project_root,
    snapshot_tree,
    tree_digest,
    visible_tree,
)
from flaxvision.data.images import Example
from flaxvision.errors import UserError
from flaxvision.files import atomic_directory, write_json

RAW_DIR = Path("data/raw")
SOURCE_IDENTITY = Path("data/source.json")  # written by the source stage: see identify_dataset
SOURCES_FILE = "SOURCES.json"
TFDS_MANIFEST = "tfds.json"
VALID_FORMS = (
    "cats_vs_dogs, signs, belgiumtsc, dog_breeds, folder:<path>, tfds:<name> or tfds:<name>:<version>"
)
IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
}  # fmt: skip
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation",
    "test": "test", "testing": "test",
}  # fmt: skip


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
    images: Sequence[np.ndarray]
    labels: Sequence[int]

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
    splits: dict[str, FileSplit | ArraySplit | TfdsSplit]  # keys among train, validation, test
    ignored: list[dict] = dataclasses.field(default_factory=list)  # {"file", "reason"}: not images
    empty_classes: list[str] = dataclasses.field(default_factory=list)


def identify_dataset(data: str) -> dict:
    """What the files of ``data`` are, by content (sizes and SHA-256), wherever they were found.

    Files of a URL are downloaded into the cache first. The result does not depend on where the
    files are mounted, so it changes exactly when the data does.
    """
    return {"data": data, "files": get_source(data).identify()}


def _identify_files(files: Sequence[RemoteFile]) -> list[dict]:
    records = (fetch(file)[1] for file in files)
    return [{"name": r.name, "url": r.url, "size": r.size, "sha256": r.sha256} for r in records]


def download_dataset(data: str, raw: Path = RAW_DIR) -> list[FileRecord]:
    """Replace ``raw`` atomically with the raw files of ``data`` and their SOURCES.json."""
    source = get_source(data)
    with atomic_directory(raw) as tmp:
        records = source.download(tmp)
        sources = {"data": data, "files": [dataclasses.asdict(r) for r in records]}
        write_json(tmp / SOURCES_FILE, sources)
    return records


def read_dataset(data: str, raw: Path = RAW_DIR) -> RawDataset:
    """The dataset in ``raw``, checked to be the one ``data`` names and to be usable."""
    try:
        downloaded = json.loads((raw / SOURCES_FILE).read_text())["data"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"{raw}/{SOURCES_FILE} not found or unreadable: run `dvc repro download`") from None
    if downloaded != data:
        raise UserError(f"{raw} holds {downloaded!r}, params.yaml data is {data!r}: run `dvc repro download`")
    dataset = get_source(data).read(raw)
    if not any(len(split) for split in dataset.splits.values()):
        raise UserError(f"{raw}: dataset {data!r} has no images")
    if len(dataset.classes) < 2:
        raise UserError(f"{raw}: dataset {data!r} has only the class {dataset.classes}; a classifier needs two")
    return dataset


def get_source(data: str):
    """The dataset named by params ``data`` (see the module docstring for the forms)."""
    if data in DATASETS:
        return DATASETS[data]
    kind, _, rest = data.partition(":")
    if kind == "folder" and rest:
        return FolderSource(rest)
    if kind == "tfds" and rest:
        return TfdsSource(*rest.split(":", 1)) if ":" in rest else TfdsSource(rest)
    raise UserError(f"params.yaml: unknown data {data!r}; valid forms: {VALID_FORMS}")


# --- folder layouts -----------------------------------------------------------------------


def scan_tree(raw: Path, root: str) -> RawDataset:
    """Read the ``<class>/<image>`` tree at ``raw/root``, split into train/... folders or not."""
    base = raw / root
    if not base.is_dir():
        raise UserError(f"{base} not found: run `dvc repro download`")
    folders = _subfolders(base)
    split_folders = {SPLIT_FOLDERS[f.name.lower()]: f for f in folders if f.name.lower() in SPLIT_FOLDERS}
    if not split_folders:
        split_folders = {"train": base}
    elif len(split_folders) < len([f for f in folders if f.name.lower() in SPLIT_FOLDERS]):
        raise UserError(f"{base}: two folders name the same split ({', '.join(f.name for f in folders)})")
    elif others := [f.name for f in folders if f.name.lower() not in SPLIT_FOLDERS]:
        raise UserError(f"{base}: split folders mixed with other folders ({', '.join(others)}): move them")
    elif "train" not in split_folders:
        names = ", ".join(f.name for f in split_folders.values())
        raise UserError(f"{base}: has {names} but no train/ folder")

    ignored = []
    found = {}  # split -> class -> image paths
    for split, folder in split_folders.items():
        class_folders = _subfolders(folder)
        if not class_folders:
            raise UserError(f"{folder}: no class folders (expected {folder}/<class>/<image>)")
        found[split] = {}
        for class_folder in class_folders:
            files = _visible_files(class_folder)
            found[split][class_folder.name] = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
            ignored += [_ignore(raw, p, "not an image file name") for p in others]
        strays = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        ignored += [_ignore(raw, p, "not in a class folder") for p in strays]

    for split, classes in found.items():
        if unknown := sorted(set(classes) - set(found["train"])):
            raise UserError(f"{split_folders[split]}: classes {unknown} are not in {split_folders['train']}")
    classes = [c for c in found["train"] if any(found[s].get(c) for s in found)]
    empty = [c for c in found["train"] if c not in classes]
    index = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split, by_class in found.items():
        files = [(path, index[c]) for c, paths in by_class.items() if c in index for path in paths]
        origin = split_folders[split].relative_to(raw).as_posix()
        splits[split] = FileSplit(origin, [f for f, _ in files], [label for _, label in files], raw)
    return RawDataset(classes, splits, ignored, empty)


def _ignore(raw: Path, path: Path, reason: str) -> dict:
    return {"file": path.relative_to(raw).as_posix(), "reason": reason}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _visible_files(folder: Path) -> list[Path]:
    """Every visible file under ``folder``, through links as the snapshot sees them."""
    return sorted(parent / name for parent, names in visible_tree(folder) for name in names)


# --- Kaggle's labels.csv layout -----------------------------------------------------------

LABELS_CSV = "labels.csv"
LABELS_HEADER = ["id", "breed"]
LABELLED_FOLDER = "train"


def scan_labels_csv(raw: Path, root: str) -> RawDataset:
    """Read Kaggle's dog-breed-identification layout at ``raw/root`` (module docstring)."""
    base = raw / root
    labels_file, images = base / LABELS_CSV, base / LABELLED_FOLDER
    expected = f"expected Kaggle's layout, {LABELS_CSV} (id,breed) beside {LABELLED_FOLDER}/<id>.jpg"
    if not labels_file.is_file():
        raise UserError(f"{labels_file} not found: {expected}")
    breeds = _read_labels_csv(labels_file)
    if not images.is_dir():
        raise UserError(f"{images} not found: {expected}")
    if missing := [i for i in breeds if not (images / f"{i}.jpg").is_file()]:
        more = f" (and {len(missing) - 1} more ids without an image)" if len(missing) > 1 else ""
        raise UserError(f"{labels_file}: id {missing[0]} has no image {images / missing[0]}.jpg{more}")

    classes = sorted(set(breeds.values()))
    index = {name: i for i, name in enumerate(classes)}
    ids = sorted(breeds)
    origin = images.relative_to(raw).as_posix()
    pool = FileSplit(origin, [images / f"{i}.jpg" for i in ids], [index[breeds[i]] for i in ids], raw)
    labelled = set(pool.files)
    ignored = [_ignore(raw, p, f"not in {LABELS_CSV}") for p in _visible_files(images) if p not in labelled]
    unused = f"not used: only {LABELS_CSV} and {LABELLED_FOLDER}/ are"
    # SOURCES.json sits beside labels.csv when root is data/raw itself; it is ours, not the dataset's.
    for entry in sorted(base.iterdir()):
        if entry.name in (LABELS_CSV, LABELLED_FOLDER, SOURCES_FILE) or entry.name.startswith("."):
            continue
        if entry.is_dir():  # one line for Kaggle's test/, not 10,357
            files = len(_visible_files(entry))
            ignored.append({"file": f"{entry.relative_to(raw).as_posix()}/", "reason": f"{files} files, {unused}"})
        else:
            ignored.append(_ignore(raw, entry, unused))
    return RawDataset(classes, {"train": pool}, ignored)


def _read_labels_csv(path: Path) -> dict[str, str]:
    """id -> breed from ``path``, checked: the header, two values a row, each id once."""
    breeds = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a BOM, as spreadsheets write
            rows = csv.reader(f)
            header = [name.strip() for name in next(rows, [])]
            if header != LABELS_HEADER:
                found = ",".join(header) or "none"
                raise UserError(f"{path}: header is {found!r}, expected {','.join(LABELS_HEADER)!r}")
            for row in rows:
                values = [value.strip() for value in row]
                if not values:
                    continue  # a blank line
                if len(values) != 2 or not all(values) or Path(values[0]).name != values[0]:
                    raise UserError(f"{path} line {rows.line_num}: expected <id>,<breed>, got {','.join(row)!r}")
                if values[0] in breeds:
                    raise UserError(f"{path} line {rows.line_num}: id {values[0]} is listed twice")
                breeds[values[0]] = values[1]
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: not a readable UTF-8 csv file ({error})") from None
    return breeds


# --- where the layouts come from: zip archives, a user's folder ----------------------------


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
    """Zip archives whose extracted files form a layout under ``root``, read by ``layout``."""

    files: tuple[RemoteFile, ...]
    root: str
    layout: Callable[[Path, str], RawDataset] = scan_tree

    def download(self, raw: Path) -> list[FileRecord]:
        records = []
        for file in self.files:
            path, record = fetch(file)
            extract_zip(path, raw)
            records.append(record)
        names = " and ".join(f.name for f in self.files)
        if not (raw / self.root).is_dir():
            raise UserError(f"{names}: no folder {self.root}/ inside, so not the official archive: "
                            "delete it and get the official one")
        try:
            self.layout(raw, self.root)  # fail now, not at preprocess, if the layout is wrong
        except UserError as error:  # name the archives, not the temp folder they went to
            problem = str(error).replace(f"{raw}/", "").replace(str(raw), ".")
            raise UserError(f"{names}: {problem}") from None
        return records

    def identify(self) -> list[dict]:
        return _identify_files(self.files)

    def read(self, raw: Path) -> RawDataset:
        return self.layout(raw, self.root)


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """A user's image tree, snapshotted into data/raw/<its folder name> so DVC versions it."""

    path: str

    @property
    def root(self) -> str:
        return Path(os.path.abspath(self._folder())).name or "images"

    def _folder(self) -> Path:
        return project_root() / self.path

    def _checked_folder(self) -> Path:
        src = self._folder()
        if not src.exists():
            raise UserError(f"params.yaml data: folder {self.path} does not exist (looked at {src.absolute()})")
        if not src.is_dir():
            raise UserError(f"params.yaml data: {self.path} is not a folder")
        scan_tree(src.parent, src.name)
        return src

    def identify(self) -> list[dict]:
        files, size, digest = tree_digest(self._checked_folder())
        return [{"name": self.root, "files": files, "size": size, "sha256": digest}]

    def download(self, raw: Path) -> list[FileRecord]:
        files, size = snapshot_tree(self._checked_folder(), raw / self.root)
        return [FileRecord(self.root, None, self.path, size, "", f"snapshot of {files} files")]

    def read(self, raw: Path) -> RawDataset:
        return scan_tree(raw, self.root)


# --- SIGNS (h5) ---------------------------------------------------------------------------

SIGNS_MANUAL = (
    "SIGNS has no public download: put train_signs.h5 and test_signs.h5 in a folder and set DATA_MIRROR to it"
)


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
        return _identify_files(self.files)

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


# --- TFDS ---------------------------------------------------------------------------------

TFDS_SPLITS = {
    "train": "train", "validation": "validation", "valid": "validation", "val": "validation", "test": "test",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A dataset prepared by ``tfds build`` (ArrayRecord), read without TensorFlow."""

    name: str
    version: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name

    def identify(self) -> list[dict]:
        return [self._manifest(self._builder(os.environ.get("TFDS_DATA_DIR")))]

    def download(self, raw: Path) -> list[FileRecord]:
        builder = self._builder(os.environ.get("TFDS_DATA_DIR"))
        write_json(raw / TFDS_MANIFEST, self._manifest(builder))
        return []

    def read(self, raw: Path) -> RawDataset:
        try:
            recorded = json.loads((raw / TFDS_MANIFEST).read_text())
        except (OSError, ValueError):
            raise UserError(f"{raw}/{TFDS_MANIFEST} not found or unreadable: run `dvc repro download`") from None
        builder = self._builder(recorded["data_dir"])
        if self._manifest(builder) != recorded:
            raise UserError(f"tfds dataset {self.spec!r} changed since download: run `dvc repro download`")
        features = builder.info.features
        keys = builder.info.supervised_keys
        image_key, label_key = keys if _is_key_pair(keys) else ("image", "label")
        if not {image_key, label_key} <= set(features.keys()) or not hasattr(features[label_key], "names"):
            raise UserError(f"tfds dataset {self.spec!r}: needs an image feature and a ClassLabel feature "
                            f"({image_key!r}, {label_key!r}); it has {list(features.keys())}")
        try:
            sources = _import_tfds().data_source(self.spec, data_dir=recorded["data_dir"])
        except Exception as error:  # e.g. prepared as tfrecord, which data_source cannot read
            raise UserError(f"tfds.data_source({self.spec!r}) failed: {error}".replace("\n", " ")) from None
        splits = {
            TFDS_SPLITS[name]: TfdsSplit(f"{self.name}/{name}", source, image_key, label_key)
            for name, source in sources.items()
            if name in TFDS_SPLITS
        }
        if "train" not in splits:
            raise UserError(f"tfds dataset {self.spec!r} has no train split (it has {sorted(sources)})")
        other = "not a train/validation/test split"
        ignored = [{"file": f"{self.name}/{name}", "reason": other} for name in sources if name not in TFDS_SPLITS]
        return RawDataset(list(features[label_key].names), splits, ignored)

    def _builder(self, data_dir: str | None):
        how = (
            f"prepare it with `tfds build {self.name}` (on a machine with TensorFlow, "
            "--file_format=array_record), then set TFDS_DATA_DIR to its data dir"
        )
        try:
            builder = _import_tfds().builder(self.spec, data_dir=data_dir)
        except Exception as error:  # tfds raises many kinds (DatasetNotFoundError, ValueError, ...)
            problem = type(error).__name__
            raise UserError(f"tfds dataset {self.spec!r} not available ({problem}): {how}") from None
        if not builder.is_prepared():
            raise UserError(f"tfds dataset {self.spec!r} is not prepared in {builder.data_dir_root}: {how}")
        return builder

    def _manifest(self, builder) -> dict:
        """What identifies the prepared dataset; DVC sees a change through these sizes."""
        folder = Path(builder.data_dir)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return {
            "name": self.name,
            "version": str(builder.info.version),
            "data_dir": str(builder.data_dir_root),
            "splits": {name: split.num_examples for name, split in sorted(builder.info.splits.items())},
            "files": {p.relative_to(folder).as_posix(): p.stat().st_size for p in files},
        }


def _is_key_pair(keys) -> bool:
    return isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)


def _import_tfds():
    import tensorflow_datasets as tfds  # slow, and only tfds: datasets need it

    return tfds



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
SIGNS = tuple(
    RemoteFile(name, None, known_copies={digest: "shared/datasets copy"}, check=check_signs, manual=SIGNS_MANUAL)
    for name, digest in (
        ("train_signs.h5", "9d98dfc49ea313a134e72391664159de18b9005fe0344d65050f8b18d8efa712"),
        ("test_signs.h5", "539fb746ed9e947eb244cfca73f4d1b03f9bf5524d609eeed2cd76ddb1b179be"),
    )
)
DATASETS = {
    "cats_vs_dogs": ArchiveSource((CATS_VS_DOGS,), root="cats_and_dogs_filtered"),
    "belgiumtsc": ArchiveSource(BELGIUMTSC, root="."),
    "signs": SignsSource(SIGNS),
    "dog_breeds": ArchiveSource((DOG_BREEDS,), root=".", layout=scan_labels_csv),
}
