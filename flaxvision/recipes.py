"""`flaxvision recipe NAME`: a seed notebook's experiment, run by name as a DVC experiment.

recipes.yaml holds each recipe as the ``-S`` settings of ``dvc exp run`` (dotted params keys);
every recipe sets each param that decides the trained weights, so it means the same experiment
whatever params.yaml's defaults are.
"""

import json
import os
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from flaxvision.errors import ArgumentParser, UserError
from flaxvision.params import PARAMS_FILE, Params, from_dict, read_mapping

RECIPES_FILE = Path("recipes.yaml")
CHECKOUT = Path(__file__).resolve().parents[1]  # the project this flaxvision/ is part of


def load_recipes(path: Path = RECIPES_FILE) -> dict[str, dict[str, Any]]:
    """Recipe name -> its settings (dotted params key -> value); shared blocks (``.name``) left out."""
    try:
        recipes = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the command from the project root") from None
    return {name: settings for name, settings in recipes.items() if not name.startswith(".")}


def plain_params(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A whole params.yaml mapping with the `.keras` settings of recipes.yaml (Adam at 0.001, no
    augmentation or regularisation), then ``changes`` merged section by section: what tests and
    benchmarks start from, whatever the default experiment is."""
    params = read_mapping(CHECKOUT / PARAMS_FILE)
    shared = yaml.safe_load((CHECKOUT / RECIPES_FILE).read_text())[".keras"]
    for key, value in [*shared.items(), *_dotted(changes or {})]:
        section, _, name = key.rpartition(".")
        (params[section] if section else params)[name] = value
    return params


def plain_section(section: str, **changes: Any) -> Any:
    """Section ``section`` of `plain_params`, with ``changes``, as its schema (e.g. TrainConfig)."""
    schema = typing.get_type_hints(Params)[section]
    return from_dict({**plain_params()[section], **changes}, schema, prefix=section)


def _dotted(changes: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (f"{key}.{name}", item) if isinstance(value, dict) else (key, value)
        for key, value in changes.items()
        for name, item in (value.items() if isinstance(value, dict) else [(None, value)])
    ]


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
