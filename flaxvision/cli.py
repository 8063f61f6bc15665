"""The `flaxvision` command: one entry point whose subcommands are the project's tools.

Each subcommand's module is imported only when it runs, so `flaxvision recipe` starts without
JAX, and its ``main(argv)`` parses the rest of the command line.
"""

import argparse
import importlib
import sys

from flaxvision import interrupts
from flaxvision.errors import ArgumentParser

# subcommand -> (its module, what it does)
SUBCOMMANDS = {
    "predict": ("flaxvision.predict", "print the most probable classes of images, by a trained model"),
    "export": ("flaxvision.export", "write a trained model as ONNX and serialized StableHLO"),
    "recipe": ("flaxvision.recipes", "run a seed notebook's experiment by name, as a DVC experiment"),
    "params": ("flaxvision.reference", "print or write the params reference (docs/params.md)"),
}


@interrupts.command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(
        prog="flaxvision",
        description="flaxvision's tools; `dvc repro` and `dvc exp run` run the pipeline itself.",
        epilog="\n".join(f"  {name:8} {summary}" for name, (_, summary) in SUBCOMMANDS.items())
        + "\n\n`flaxvision COMMAND --help` says more.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=SUBCOMMANDS, metavar="COMMAND", help="one of the commands below")
    parser.add_argument("arguments", nargs="*", metavar="ARGUMENTS", help="the command's own")
    command = parser.parse_args(argv[:1]).command
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return module.main(argv[1:])
