"""TFDS: a dataset prepared by ``tfds build`` (ArrayRecord), read with ``tfds.data_source``."""

import dataclasses
import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from flaxvision.data.datasets.dataset import RawDataset, TfdsSplit
from flaxvision.data.download import FileRecord
from flaxvision.errors import UserError
from flaxvision.files import write_json

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

TFDS_MANIFEST = "tfds.json"
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
            raise UserError(
                f"tfds dataset {self.spec!r}: needs an image feature and a ClassLabel feature "
                f"({image_key!r}, {label_key!r}); it has {list(features.keys())}"
            )
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

    def _builder(self, data_dir: str | None) -> "tfds.core.DatasetBuilder":
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

    def _manifest(self, builder: "tfds.core.DatasetBuilder") -> dict:
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


def _is_key_pair(keys: object) -> bool:
    return isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)


def _import_tfds() -> ModuleType:
    import tensorflow_datasets as tfds  # slow, and only tfds: datasets need it

    return tfds
