"""Kaggle's labels.csv layout (dog_breeds): ``labels.csv`` (id,breed) names the class of each ``train/<id>.jpg``.

It has one pool, train/, which preprocess splits. Class names are the breeds, sorted. An id of
labels.csv without its image is an error; images that labels.csv does not name, and the other
entries beside it (test/, sample_submission.csv), are ignored and listed.
"""

import csv
from pathlib import Path

from flaxvision.data.datasets.dataset import PROVENANCE_FILE, FileSplit, RawDataset, ignored_file
from flaxvision.data.datasets.folders import visible_files
from flaxvision.errors import UserError

LABELS_CSV = "labels.csv"
LABELS_HEADER = ["id", "breed"]
LABELLED_FOLDER = "train"


def scan_labels_csv(raw: Path, root: str) -> RawDataset:
    """Read Kaggle's dog-breed-identification layout at ``raw/root`` (see the module docstring)."""
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
    ignored = [ignored_file(raw, p, f"not in {LABELS_CSV}") for p in visible_files(images) if p not in labelled]
    unused = f"not used: only {LABELS_CSV} and {LABELLED_FOLDER}/ are"
    # PROVENANCE.json sits beside labels.csv when root is data/raw itself; it is ours, not the dataset's.
    for entry in sorted(base.iterdir()):
        if entry.name in (LABELS_CSV, LABELLED_FOLDER, PROVENANCE_FILE) or entry.name.startswith("."):
            continue
        if entry.is_dir():  # one line for Kaggle's test/, not 10,357
            files = len(visible_files(entry))
            ignored.append({"file": f"{entry.relative_to(raw).as_posix()}/", "reason": f"{files} files, {unused}"})
        else:
            ignored.append(ignored_file(raw, entry, unused))
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
