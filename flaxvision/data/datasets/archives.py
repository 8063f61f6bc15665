"""Zip archives (cats_vs_dogs, belgiumtsc, dog_breeds) extracted into data/raw and read by their layout."""

import dataclasses
from collections.abc import Callable
from pathlib import Path

from flaxvision.data.datasets.dataset import RawDataset
from flaxvision.data.datasets.folders import scan_tree
from flaxvision.data.download import FileRecord, RemoteFile, extract_zip, fetch, identify_files
from flaxvision.errors import UserError


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
            raise UserError(
                f"{names}: no folder {self.root}/ inside, so not the official archive: "
                "delete it and get the official one"
            )
        try:
            self.layout(raw, self.root)  # fail now, not at preprocess, if the layout is wrong
        except UserError as error:  # name the archives, not the temp folder they went to
            problem = str(error).replace(f"{raw}/", "").replace(str(raw), ".")
            raise UserError(f"{names}: {problem}") from None
        return records

    def identify(self) -> list[dict]:
        return identify_files(self.files)

    def read(self, raw: Path) -> RawDataset:
        return self.layout(raw, self.root)
