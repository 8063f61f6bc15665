"""The export command (flaxvision.export): its ONNX and StableHLO files, run by onnxruntime and
jax.export in a process without the project's code, give the pipeline's logits, for every model."""

import dataclasses
import json
import re
import subprocess
import sys
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from flax import nnx
from PIL import Image

from flaxvision import builder
from flaxvision.data.images import load_image
from flaxvision.export import FILES, METADATA, export_model, main
from flaxvision.inference import model_logits
from flaxvision.models import densenet, resnet
from flaxvision.models.backbones import BACKBONES
from flaxvision.models.scaling import preprocess_input
from tests.helpers import PROJECT_ROOT, STAGES, model_info, pattern_images, save_model, shared_file

PHOTOS = [f"{kind}s/{kind}.{number}.jpg" for kind in ("cat", "dog") for number in range(2000, 2016)]  # validation
# Near the smallest inputs each model takes (cheap to export), not square (a swapped axis fails).
SHAPES = {
    "belgiumtsc_cnn": (12, 16, 1),
    "simple_cnn": (24, 28, 3),
    "tutorial_cnn": (16, 20, 3),
    "resnet50": (40, 48, 3),
    "small_resnet": (40, 48, 3),
    "small_vgg": (16, 20, 3),
    **{name: (32, 40, 3) for name in (*builder.TRANSFER_PRESETS, "transfer")},
}
# Keras's deep backbones repeat a few kinds of block many times. With one block per stage they
# keep every layer kind and join (projections, dense-block concatenations, transitions) and
# export in seconds, where jax2onnx takes minutes over the whole graph.
SHALLOW_BACKBONES = {
    "resnet50": dataclasses.replace(BACKBONES["resnet50"], build=partial(resnet.ResNet, (1, 1, 1, 1), preact=False)),
    "resnet50v2": dataclasses.replace(BACKBONES["resnet50v2"], build=partial(resnet.ResNet, (1, 1, 1, 1), preact=True)),
    "densenet121": dataclasses.replace(BACKBONES["densenet121"], build=partial(densenet.DenseNet, (1, 1, 1, 1))),
}
# The transfer model on params' own backbones: the two Keras families the presets do not export.
TRANSFER = {"backbones": ("resnet50", "vgg16")}
# Runs both files on images.npy, at its batch size and at 1, into outputs.npz.
CONSUMER = """
import sys

import numpy as np
import onnxruntime
from jax import export

folder, images = sys.argv[1], np.load("images.npy")
session = onnxruntime.InferenceSession(f"{folder}/model.onnx")
with open(f"{folder}/model.stablehlo", "rb") as file:
    stablehlo = export.deserialize(file.read())
outputs = {}
for batch in (len(images), 1):
    outputs[f"onnx {batch}"] = session.run(["logits"], {"images": images[:batch]})[0]
    outputs[f"stablehlo {batch}"] = np.asarray(stablehlo.call(images[:batch]))
np.savez("outputs.npz", **outputs)
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    archive = shared_file("cats_and_dogs_filtered.zip")
    folder = tmp_path_factory.mktemp("photos")
    with zipfile.ZipFile(archive) as files:
        for name in PHOTOS:
            (folder / Path(name).name).write_bytes(files.read(f"cats_and_dogs_filtered/validation/{name}"))
    return [folder / Path(name).name for name in PHOTOS]


def run_without_the_project(script: str, *args: str, cwd: Path) -> str:
    """``script``'s stdout, run by this Python isolated (-I: no PYTHONPATH, no script folder on
    sys.path) in ``cwd`` outside the project; it fails if flaxvision or models was imported."""
    check = (
        "\nimport sys\n"
        "assert not {'flaxvision', 'models'} & {name.split('.')[0] for name in sys.modules}, 'project code imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", script + check, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def with_batch_statistics(model: nnx.Module, images: np.ndarray, preprocessing: str) -> nnx.Module:
    """``model`` in eval mode, its BatchNorm statistics those of ``images``, as training leaves them.

    With the initial statistics, random weights shrink deep networks' logits towards 0 (MobileNetV2's
    to 1e-16), where 1e-4 is no test of float32 arithmetic; with the images' own, every normalised
    layer has unit scale on them. Take dozens: with a few, some channels have nearly no variance,
    and their normalisation amplifies rounding; with other images' (noise), ResNet50's logits of
    the photos reach 100.
    """
    model.eval()
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.BatchNorm):
            module.use_running_average, module.momentum = False, 0.0  # the statistics become the batch's
    nnx.jit(lambda model, images: model(preprocess_input(images, preprocessing)))(model, images)
    model.eval()
    return model


@pytest.mark.slow  # each model built, exported, compiled thrice
@pytest.mark.parametrize("name", builder.MODEL_NAMES)
def test_the_exported_files_give_the_pipelines_logits(name, photos, tmp_path, monkeypatch):
    for backbone, shallow in SHALLOW_BACKBONES.items():
        monkeypatch.setitem(BACKBONES, backbone, shallow)
    info = model_info(name, SHAPES[name], **(TRANSFER if name == "transfer" else {}))
    height, width, _ = info.input_shape
    images = np.stack([load_image(photo, (height, width), info.color_mode) for photo in photos])
    model = info.build()
    with_batch_statistics(model, images, info.preprocessing)
    expected = model_logits(model, info.preprocessing, images, batch_size=len(images))
    assert 0.1 < np.abs(expected).max() < 10  # logits of the size a trained model's have

    export_model(model, info, tmp_path / "exported")  # as `export` does once load_trained has read the folder
    np.save(tmp_path / "images.npy", images)
    run_without_the_project(CONSUMER, str(tmp_path / "exported"), cwd=tmp_path)

    with np.load(tmp_path / "outputs.npz") as outputs:
        differences = {key: float(np.abs(outputs[key] - expected[: int(key.split()[1])]).max()) for key in outputs}
    print(name, f"largest logit {np.abs(expected).max():.2f}", differences)  # pytest -s shows them
    # 1e-4 of logits of unit size. Float32 rounds differently in onnxruntime's kernels and XLA's:
    # the random ResNet50 amplifies that to 2e-4 with logits of 4.5 (even with ORT's graph optimisations off).
    assert max(differences.values()) <= 1e-4 * max(1, np.abs(expected).max()), differences


@pytest.mark.slow  # a process of its own
def test_the_export_command_and_the_readme_example(tmp_path, capsys):
    model = save_model(tmp_path / "model", "belgiumtsc_cnn", (12, 16, 1), classes=["cats", "dogs"])
    output = tmp_path / "exported"

    assert main([str(model), "--output", str(output)]) == 0

    assert sorted(path.name for path in output.iterdir()) == sorted(FILES)
    assert capsys.readouterr().out.startswith(f"{output / 'model.onnx'} (")
    metadata = json.loads((output / METADATA).read_text())
    assert metadata["classes"] == ["cats", "dogs"] and metadata["input"]["color_mode"] == "grayscale"
    assert metadata["input"]["shape"] == ["batch", 12, 16, 1] and metadata["input"]["dtype"] == "uint8"
    assert metadata["output"] == {"name": "logits", "shape": ["batch", 2], "dtype": "float32", "kind": "logits"}

    # The docs' example, as written, where it expects the files and a photo.
    page = (PROJECT_ROOT / "docs" / "predict.md").read_text()
    example = re.search(r"## Export\n.*?```python\n(.*?)```", page, re.S).group(1)
    Image.fromarray(pattern_images(1, size=40)[0][0]).save(tmp_path / "photo.jpg")
    lines = run_without_the_project(example, cwd=tmp_path).splitlines()
    assert len(lines) == 1 and lines[0].split()[0] in ("cats", "dogs"), lines

    # Another run replaces the export; a folder with other files is refused, and left as it was.
    assert main([str(model), "--output", str(output)]) == 0
    assert main([str(model), "--output", str(tmp_path)]) == 2
    assert main([str(tmp_path / "missing"), "--output", str(tmp_path / "new")]) == 2
    assert main([str(model), "--output", str(tmp_path / "photo.jpg" / "exported")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"error: --output {tmp_path} holds other files than an export's (exported, model, photo.jpg), "
        "which writing it would delete: name a new folder",
        f"error: no trained model in {tmp_path / 'missing'}: run `dvc repro train` first",
        f"error: --output {tmp_path / 'photo.jpg' / 'exported'}: cannot write it (File exists)",
    ]
    assert (tmp_path / "photo.jpg").is_file() and not (tmp_path / "new").exists()


def test_help_does_no_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output", str(tmp_path / "exported"), "--help"])
    assert exit_info.value.code == 0 and "--output" in capsys.readouterr().out
    assert not (tmp_path / "exported").exists()


def test_the_trained_model_is_a_dvc_artifact():
    """`dvc artifacts get` finds the train stage's model by the name the docs give."""
    artifacts = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["artifacts"]
    assert list(artifacts) == ["image-classifier"] and artifacts["image-classifier"]["type"] == "model"
    assert artifacts["image-classifier"]["path"] in STAGES["train"]["outs"]
    assert "dvc artifacts get . image-classifier" in (PROJECT_ROOT / "docs" / "predict.md").read_text()
