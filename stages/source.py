"""DVC stage `source`: find the files of the dataset params `data` names; record what they are.

DVC cannot see what download reads (the offline mirror, the download cache, a folder: tree), so
this stage runs at every `dvc repro` (dvc.yaml: always_changed) and writes data/source.json: the
files' sizes and SHA-256, not where they were found. download depends on it, so it re-runs
exactly when the data changed, and DVC's run-cache never restores data/raw made of other files.
A file that only has a URL is downloaded into the cache here, once.
"""

from flaxvision.data import SOURCE_IDENTITY, identify_dataset
from flaxvision.dvc_stage import stage_main
from flaxvision.files import write_json
from flaxvision.params import Params


@stage_main
def main(params: Params) -> None:
    identity = identify_dataset(params.data)
    SOURCE_IDENTITY.parent.mkdir(parents=True, exist_ok=True)
    write_json(SOURCE_IDENTITY, identity)
    for file in identity["files"]:
        details = ", ".join(f"{key} {file[key]}" for key in ("files", "size", "sha256") if key in file)
        print(f"{file['name']}: {details or 'recorded'}")


if __name__ == "__main__":
    main()
