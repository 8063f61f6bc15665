"""dvc.yaml as the one table of what each stage's code is.

A stage's deps in dvc.yaml list every project module it imports, transitively
(tests/test_dvc_deps.py checks this against the import graph); the train stage hashes the
same files into its run fingerprint, so a checkpoint is resumed only by the same code.
"""

from pathlib import Path

import yaml

from flaxvision.errors import UserError

DVC_FILE = Path(__file__).resolve().parents[1] / "dvc.yaml"  # the project this code is part of
CODE_ROOTS = ("flaxvision", "models", "stages")


def stage_deps(stage: str, dvc_file: Path = DVC_FILE) -> list[str]:
    try:
        return yaml.safe_load(dvc_file.read_text())["stages"][stage]["deps"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise UserError(
            f"{dvc_file}: cannot read stage {stage}'s deps ({type(error).__name__}): "
            "run the stages from a checkout of the project"
        ) from None


def code_files(stage: str, dvc_file: Path = DVC_FILE) -> list[Path]:
    """The Python files among ``stage``'s deps (folders expanded), in a stable order."""
    files: set[Path] = set()
    for dep in stage_deps(stage, dvc_file):
        path = dvc_file.parent / dep
        if Path(dep).parts[0] not in CODE_ROOTS:
            continue  # data
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(files)
