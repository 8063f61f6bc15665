"""`flaxvision recipe NAME`: a seed notebook's experiment, run by name as a DVC experiment.

recipes.yaml holds each recipe as the ``-S`` settings of ``dvc exp run`` (dotted params keys);
every recipe sets each param that decides the trained weights, so it means the same experiment
whatever params.yaml's defaults are.
"""

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from flaxvision.errors import ArgumentParser, UserError

RECIPES_FILE = Path("recipes.yaml")


def load_recipes(path: Path = RECIPES_FILE) -> dict[str, dict[str, Any]]:
    """Recipe name -> its settings (dotted params key -> value); shared blocks (``.name``) left out."""
    try:
        recipes = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the command from the project root") from None
    return {name: settings for name, settings in recipes.items() if not name.startswith(".")}


def settings_arguments(settings: dict[str, Any]) -> list[str]:
    """``-S key=value`` for each setting, the value as YAML (and so as DVC) reads it back."""
    arguments = []
    for key in sorted(settings, key=lambda key: key not in ("model", "data")):  # stable: the model first
        value = settings[key]
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        arguments += ["-S", f"{key}={text}"]
    return arguments


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="flaxvision recipe",
        description="Run a seed notebook's experiment, as recipes.yaml sets it, as `dvc exp run -n NAME -S ...`.",
        epilog="Other arguments go to dvc exp run, e.g. --queue, --temp or -f (replace an experiment of that name).",
    )
    parser.add_argument("name", nargs="?", help="the recipe (see --list)")
    parser.add_argument("--list", action="store_true", help="list the recipes and what they set")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command, do not run it")
    args, dvc_arguments = parser.parse_known_args(argv)
    try:
        recipes = load_recipes()
        if args.list or args.name is None:
            for name, settings in recipes.items():
                print(f"{name}: model={settings['model']} data={settings['data']}")
            return 0 if args.list else 2
        if args.name not in recipes:
            raise UserError(f"no recipe '{args.name}' in {RECIPES_FILE}; recipes: {', '.join(recipes)}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = ["dvc", "exp", "run", "-n", args.name, *settings_arguments(recipes[args.name]), *dvc_arguments]
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    os.execv(sys.executable, [sys.executable, "-m", *command])  # DVC itself: its signals, its exit status
