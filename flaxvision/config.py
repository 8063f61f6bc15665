"""Typed access to params.yaml: each stage reads its sections once, as frozen dataclasses.

Unknown keys and values of the wrong type are UserErrors that name the key, so a typo in
``dvc exp run -S train.lr=...`` fails at once instead of being silently ignored.
"""

import dataclasses
import re
import types
import typing
from pathlib import Path

import yaml

from flaxvision.errors import UserError

PARAMS_FILE = Path("params.yaml")


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading floats as YAML 1.2 does: `dvc exp run -S lr=0.00001` writes
    ``1e-05``, which YAML 1.1 reads as a string (it wants a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"
        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def load_params(path: Path = PARAMS_FILE) -> dict:
    try:
        with open(path) as f:
            params = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise UserError(f"{path} not found: run the stage from the project root") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise UserError(f"{path} must be a mapping of sections")
    return params


def require(params: dict, key: str, kind: type = str):
    """A top-level scalar parameter such as ``model`` or ``data``."""
    if key not in params:
        raise UserError(f"params.yaml: missing top-level key '{key}'")
    value = params[key]
    if not isinstance(value, kind):
        raise UserError(f"params.yaml: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def section(params: dict, name: str, schema: type):
    """Build the dataclass ``schema`` from ``params[name]``, checking keys and types."""
    values = params.get(name) or {}
    if not isinstance(values, dict):
        raise UserError(f"params.yaml: '{name}' must be a mapping, got {values!r}")
    return from_dict(values, schema, prefix=name)


def from_dict(values: dict, schema: type, prefix: str, file: str = "params.yaml"):
    """The dataclass ``schema`` from ``values`` (the mapping at key ``prefix`` of ``file``; "": the
    whole file), checking keys and types; nested dataclasses are read the same way."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - set(fields))

    def key(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if unknown:
        raise UserError(f"{file}: unknown key '{key(unknown[0])}'; valid keys: {', '.join(fields)}")
    kwargs = {name: _coerce(value, hints[name], key(name), file) for name, value in values.items()}
    try:
        return schema(**kwargs)
    except ValueError as error:  # a schema's __post_init__ rejects a value
        raise UserError(f"{file}: {prefix + ': ' if prefix else ''}{error}") from None


def _coerce(value, hint, key, file):
    if dataclasses.is_dataclass(hint):
        if value is not None and not isinstance(value, dict):
            raise UserError(f"{file}: '{key}' must be a mapping, got {value!r}")
        return from_dict(value or {}, hint, key, file)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, file)
            except UserError:
                pass
        raise UserError(f"{file}: '{key}' has the wrong type: {value!r} (expected {hint})")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise UserError(f"{file}: '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        (item,) = set(typing.get_args(hint)) - {Ellipsis}
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{file}: '{key}' must be a list, got {value!r}")
        return origin(_coerce(v, item, key, file) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise UserError(f"{file}: '{key}' must be true or false, got {value!r}")
    if hint in (int, float, str) and (not isinstance(value, hint) or isinstance(value, bool) and hint is not bool):
        raise UserError(f"{file}: '{key}' must be a {hint.__name__}, got {value!r}")
    return value
