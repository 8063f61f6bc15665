"""predict: the most probable classes of image files, from a trained model folder alone.

    uv run flaxvision predict photo.jpg more_photos/ [--model artifacts/model] [--top-k 3] [--output out.csv]

Each image is decoded, converted and resized exactly as preprocess did for training
(`flaxvision.data.images.load_image`, with the model's input size and colour mode) and scaled
with the model's preprocessing mode, all read from the model folder's model.json: neither DVC
nor the data folder is needed. Folders are searched recursively for image files. A file that
cannot be decoded gets a one-line error on stderr (and in CSV/JSON output); the others are
still predicted, and the exit status is then 1.
"""

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flaxvision.classifier import InvalidInput, load
from flaxvision.data.datasets import IMAGE_SUFFIXES
from flaxvision.errors import ArgumentParser, UserError
from flaxvision.files import write_bytes

DEFAULT_MODEL = Path("artifacts/model")  # the workspace's latest trained model
FORMATS = ("text", "csv", "json")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        output_format = args.format or output_format_of(args.output)  # both checked before the work
        # os.path's tests: Path's raise for a name the system refuses (too long), which writing reports.
        if args.output and (os.path.isdir(args.output) or not os.path.isdir(args.output.absolute().parent)):
            raise UserError(
                f"--output {args.output}: not a file in an existing folder: create the folder or name another file"
            )
        results = predict_files(args.inputs, args.model, args.top_k, args.batch_size)
        report = FORMATTERS[output_format](results)
        if args.output:
            try:
                write_bytes(args.output, report.encode())
            except OSError as error:
                raise UserError(f"--output {args.output}: cannot write it ({error.strerror})") from None
        else:
            sys.stdout.write(report)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = [result for result in results if "error" in result]
    for result in failed:
        print(f"error: {result['file']}: {result['error']}", file=sys.stderr)
    return 1 if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="flaxvision predict", description="Print the most probable classes of images, by a trained model."
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders searched recursively for image files",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help=f"a trained model folder (weights.msgpack, model.json); default: {DEFAULT_MODEL}",
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes per image (default 3)")
    parser.add_argument("--output", type=Path, help="write to this .csv or .json file instead of stdout")
    parser.add_argument(
        "--format", choices=FORMATS, help="output format (default: from the --output suffix, else text)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    args = parser.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        parser.error("--top-k and --batch-size must be at least 1")
    return args


def predict_files(inputs: list[Path], model_dir: Path, top_k: int, batch_size: int) -> list[dict]:
    """One result per image, in input order: {file, predictions: [{class, probability}]} or {file, error}."""
    classifier = load(model_dir)
    results: list[dict[str, Any]] = []
    decoded: dict[int, np.ndarray] = {}  # result index -> uint8 pixels
    for path in find_images(inputs):
        results.append({"file": str(path)})
        try:
            decoded[len(results) - 1] = classifier.decode(path)
        except InvalidInput as error:  # a file that cannot be decoded: report it, go on with the others
            results[-1]["error"] = "a folder without image files" if os.path.isdir(path) else error.problem
    if decoded:
        probabilities = classifier.probabilities(np.stack(list(decoded.values())), batch_size)
        for index, row in zip(decoded, probabilities, strict=True):
            prediction = classifier.prediction(row, top_k)
            results[index]["predictions"] = [
                {"class": name, "probability": probability}
                for name, probability in zip(prediction.classes, prediction.probabilities, strict=True)
            ]
    return results


def find_images(inputs: list[Path]) -> list[Path]:
    """The files named, and the image files (by suffix) under the folders named, in order.

    A file named is kept whatever its suffix (decoding decides whether it is an image), and so
    are a missing path and a folder without images, to be reported.
    """
    files = []
    for path in inputs:
        found = os.path.isdir(path) and sorted(  # os.path's test: Path's raises for a name the system refuses
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        files += found or [path]
    return files


def output_format_of(output: Path | None) -> str:
    if output is None:
        return "text"
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in ("csv", "json"):
        raise UserError(f"--output {output}: name a .csv or .json file (or give --format)")
    return suffix


def as_text(results: list[dict]) -> str:
    """One line per predicted image: ``file: class 97.1%, class 2.5%, ...`` (errors go to stderr)."""
    lines = [
        f"{result['file']}: " + ", ".join(f"{p['class']} {p['probability']:.1%}" for p in result["predictions"])
        for result in results
        if "predictions" in result
    ]
    return "".join(line + "\n" for line in lines)


def as_csv(results: list[dict]) -> str:
    """One row per image: file, class_1, probability_1, ..., error (empty when predicted)."""
    k = max((len(result.get("predictions", [])) for result in results), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    ranked = [f"{name}_{rank}" for rank in range(1, k + 1) for name in ("class", "probability")]
    writer.writerow(["file", *ranked, "error"])
    for result in results:
        cells = [cell for p in result.get("predictions", []) for cell in (p["class"], f"{p['probability']:.6f}")]
        writer.writerow([result["file"], *cells, *[""] * (len(ranked) - len(cells)), result.get("error", "")])
    return buffer.getvalue()


def as_json(results: list[dict]) -> str:
    return json.dumps(results, indent=2) + "\n"


FORMATTERS = {"text": as_text, "csv": as_csv, "json": as_json}
