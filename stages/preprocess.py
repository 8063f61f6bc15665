"""DVC stage `preprocess`: decode data/raw into fixed-size uint8 arrays in data/prepared/.

Reads params `data` and `preprocess` (and `model`, whose input size applies when
preprocess.image_size is null); writes train/validation/test images and labels,
dataset.json and report.json (see flaxvision.data.prepared; how each dataset's splits are
formed is documented in flaxvision.data.splits).
"""

import dataclasses
import sys
import time

from flaxvision import builder
from flaxvision.data import PREPARED_DIR, RAW_DIR, prepare, read_dataset
from flaxvision.dvc_stage import stage_main
from flaxvision.params import Params


@stage_main
def main(params: Params) -> None:
    config = params.preprocess
    start = time.perf_counter()
    dataset = read_dataset(params.data, RAW_DIR)
    height, width = config.image_size or builder.input_size(params.model, params.transfer)
    config = dataclasses.replace(config, image_size=(height, width))
    info, report = prepare(params.data, dataset, config, PREPARED_DIR)

    sizes = ", ".join(f"{name} {count}" for name, count in info["splits"].items())
    classes = len(info["classes"])
    print(f"{PREPARED_DIR}: {params.data}, {classes} classes, {height}x{width} {config.color_mode}: {sizes}")
    for name, source in info["split_sources"].items():
        print(f"  {name}: {source}")
    if skipped := report["skipped"]:
        examples = ", ".join(f"{s['file']} ({s['reason']})" for s in skipped[:3])
        print(
            f"warning: skipped {len(skipped)} unreadable files, listed in {PREPARED_DIR}/report.json: {examples}",
            file=sys.stderr,
        )
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if dataset.ignored or dataset.empty_classes:
        print(
            f"note: ignored {len(dataset.ignored)} files (listed in {PREPARED_DIR}/report.json); "
            f"left out classes without images: {dataset.empty_classes}"
        )
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
