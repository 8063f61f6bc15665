"""The folder layout (cats_vs_dogs, belgiumtsc, folder:): ``<class>/<image>`` trees, and a user's tree.

Class names are folder names, labels are their sorted order (for BelgiumTSC the folder 00042 is
ClassId 42 of its GT csv files; as in the seed, the csv files and their ROIs are not used). A class
is the class folder of train; class folders of the other splits must be among them. A class
without any image in any split is left out (reported as empty), so a model never has an output
that no image can train. Files without an image suffix (BelgiumTSC's GT csv files, notes) are
ignored and listed.
"""

import dataclasses
import os
from pathlib import Path

from flaxvision.data.datasets.dataset import FileSplit, RawDataset, ignored_file
from flaxvision.data.download import FileRecord, snapshot_tree, tree_digest, visible_tree
from flaxvision.errors import UserError
from flaxvision.paths import project_root

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
}  # fmt: skip
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation",
    "test": "test", "testing": "test",
}  # fmt: skip


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
    found: dict[str, dict[str, list[Path]]] = {}  # split -> class -> image paths
    for split, folder in split_folders.items():
        class_folders = _subfolders(folder)
        if not class_folders:
            raise UserError(f"{folder}: no class folders (expected {folder}/<class>/<image>)")
        found[split] = {}
        for class_folder in class_folders:
            files = visible_files(class_folder)
            found[split][class_folder.name] = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            non_images = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
            ignored += [ignored_file(raw, p, "not an image file name") for p in non_images]
        strays = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        ignored += [ignored_file(raw, p, "not in a class folder") for p in strays]

    for split, split_classes in found.items():
        if unknown := sorted(set(split_classes) - set(found["train"])):
            raise UserError(f"{split_folders[split]}: classes {unknown} are not in {split_folders['train']}")
    classes = [c for c in found["train"] if any(found[s].get(c) for s in found)]
    empty = [c for c in found["train"] if c not in classes]
    index = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split, by_class in found.items():
        labelled = [(path, index[c]) for c, paths in by_class.items() if c in index for path in paths]
        origin = split_folders[split].relative_to(raw).as_posix()
        splits[split] = FileSplit(origin, [f for f, _ in labelled], [label for _, label in labelled], raw)
    return RawDataset(classes, splits, ignored, empty)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def visible_files(folder: Path) -> list[Path]:
    """Every visible file under ``folder``, through links as the snapshot sees them."""
    return sorted(parent / name for parent, names in visible_tree(folder) for name in names)


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
