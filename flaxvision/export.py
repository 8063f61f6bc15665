"""export: a trained model folder as files that run without flaxvision (nor Flax, for ONNX).

    uv run flaxvision export artifacts/model --output exported/

writes, replacing the folder as a whole (the three files always come from one model):

- ``model.onnx``: an ONNX model (jax2onnx), for onnxruntime or any ONNX runtime;
- ``model.stablehlo``: the serialized `jax.export.Exported` (StableHLO), for `jax.export.deserialize`;
- ``metadata.json``: the classes in label order, the input's shape, dtype and colour mode, the output.

Both models take uint8 images [batch, height, width, channels] at the model's size and colour mode,
for any batch size, and return float32 logits [batch, classes]: the model's preprocessing (its
models.scaling mode) is inside, and the network is in eval mode, so they compute what
`flaxvision.inference.model_logits` computes. Decoding and resizing stay outside, as in the
pipeline (`flaxvision.data.images.load_image`: Pillow, converted to the colour mode, bilinear).
"""

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from jax import export as jax_export
from jax import lax
from jax2onnx import to_onnx

from flaxvision.errors import ArgumentParser, UserError
from flaxvision.files import atomic_directory, write_bytes, write_json
from flaxvision.jax_internals import give_jax2onnx_closed_jaxpr
from flaxvision.model_folder import WEIGHT_KINDS, ModelInfo, load_trained, read_info
from flaxvision.models.scaling import preprocess_input
from flaxvision.predict import DEFAULT_MODEL

ONNX = "model.onnx"
STABLEHLO = "model.stablehlo"
METADATA = "metadata.json"
FILES = (ONNX, STABLEHLO, METADATA)
FORMAT = 1  # metadata.json's layout
INPUT, OUTPUT = "images", "logits"  # the ONNX model's input and output names
DEFAULT_OUTPUT = Path("exported")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        read_info(args.model)  # a missing or unreadable model, before any work
        try:
            check_output(args.output)
            written = export(args.model, args.output)
        except OSError as error:  # load_trained words its own: the output's, checked (a name too long) or written
            raise UserError(f"--output {args.output}: cannot write it ({error.strerror})") from None
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(", ".join(f"{args.output / name} ({size / 1e6:.1f} MB)" for name, size in written.items()))
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="flaxvision export",
        description="Write a trained model as ONNX and serialized StableHLO (jax.export), preprocessing included.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        type=Path,
        default=DEFAULT_MODEL,
        help=f"a trained model folder (weights.msgpack, model.json); default: {DEFAULT_MODEL}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"the folder to write {', '.join(FILES)} in, replaced as a whole; default: {DEFAULT_OUTPUT}",
    )
    return parser.parse_args(argv)


def check_output(output: Path) -> None:
    """Refuse an output that is not a folder export may replace: a file, or a folder with other files."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file: name a folder")
    if output.is_dir() and (others := sorted(entry.name for entry in output.iterdir() if entry.name not in FILES)):
        raise UserError(
            f"--output {output} holds other files than an export's ({', '.join(others[:3])}), "
            "which writing it would delete: name a new folder"
        )


def export(model_dir: Path, output: Path) -> dict[str, int]:
    """Write the trained model in ``model_dir`` to ``output`` (see the module doc); the files' sizes in bytes."""
    return export_model(*load_trained(model_dir), output)


def export_model(model: nnx.Module, info: ModelInfo, output: Path) -> dict[str, int]:
    """`export` of a model in memory, in eval mode."""
    images = image_spec(info)
    exported = jax_export.export(jax.jit(logits_function(model, info.preprocessing, barrier=True)))(images)
    onnx = onnx_model(logits_function(model, info.preprocessing, barrier=False), images, info.model)
    contents = {ONNX: onnx, STABLEHLO: bytes(exported.serialize())}
    with atomic_directory(output) as folder:
        for name, data in contents.items():
            write_bytes(folder / name, data)
        write_json(folder / METADATA, metadata(info, exported.platforms))
    return {name: (output / name).stat().st_size for name in FILES}


def logits_function(model: nnx.Module, preprocessing: str, *, barrier: bool) -> Callable[[jax.Array], jax.Array]:
    """uint8 images → float32 logits, as the pipeline's logits step computes them: scaled by
    ``preprocessing`` inside, the model as it is (`load_trained` gives it in eval mode).

    With ``barrier``, the weights, constants here, pass an optimization barrier, for XLA: it would
    fold constants into each other (a BatchNorm into the convolution before it), which rounds
    differently from the pipeline, whose weights are arguments (ResNet50's logits move by 1e-4).
    Not for ONNX: jax2onnx writes the barrier as Identity nodes, which its graph optimisation
    takes quadratic time over (stacked: minutes), and onnxruntime's kernels round differently anyway.
    """
    graph, weights, *other_state = nnx.split(model, WEIGHT_KINDS, ...)  # other_state: the dropout RNGs

    def logits(images: jax.Array) -> jax.Array:
        model = nnx.merge(graph, lax.optimization_barrier(weights) if barrier else weights, *other_state)
        return model(preprocess_input(images.astype(jnp.float32), preprocessing))

    return logits


def onnx_model(logits: Callable[[jax.Array], jax.Array], images: jax.ShapeDtypeStruct, name: str) -> bytes:
    """``logits`` as a serialized ONNX model, without annotations of its intermediate tensors' shapes.

    jax2onnx (0.17.1) annotates some tensors around the convolutions it lays out NCHW with their
    NHWC shapes, which onnx's checker rejects and onnxruntime warns about, and warns itself of
    shape tensors it left untyped. The annotations are optional (runtimes infer them): none are
    written, and its warnings about them are not shown.
    """
    give_jax2onnx_closed_jaxpr()  # jax2onnx (0.17.1) reads a name jax 0.12 dropped
    serde = logging.getLogger("onnx_ir.serde")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        model = to_onnx(logits, [images], model_name=name, input_names=[INPUT], output_names=[OUTPUT])
    finally:
        serde.setLevel(level)
    del model.graph.value_info[:]
    return model.SerializeToString()


def image_spec(info: ModelInfo) -> jax.ShapeDtypeStruct:
    """uint8 [batch, height, width, channels] with a symbolic batch size: one export serves any batch."""
    (batch,) = jax_export.symbolic_shape("batch")
    return jax.ShapeDtypeStruct((batch, *info.input_shape), jnp.uint8)


def metadata(info: ModelInfo, platforms: tuple[str, ...]) -> dict:
    """metadata.json: what a consumer needs to feed the files and read their output, without flaxvision."""
    return {
        "format": FORMAT,
        "model": info.model,
        "classes": list(info.classes),
        "input": {
            "name": INPUT,
            "shape": ["batch", *info.input_shape],
            "dtype": "uint8",
            "layout": "NHWC",
            "color_mode": info.color_mode,
        },
        "output": {"name": OUTPUT, "shape": ["batch", len(info.classes)], "dtype": "float32", "kind": "logits"},
        "files": {"onnx": ONNX, "stablehlo": STABLEHLO},
        "stablehlo_platforms": list(platforms),
    }
