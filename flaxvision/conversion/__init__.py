"""Pretrained Keras weights in the Flax backbones (models.backbones): resolve, read, assign, cache.

`build_backbone(name, weights=...)` builds a backbone and fills it from ``weights``:

* ``'imagenet'``: Keras's official file for that backbone, top, width and input size
  (`weights.imagenet_weights`), from the offline mirror, the download cache or its URL, checked
  against Keras's published md5 (flaxvision.data.download);
* the path of a Keras .h5 file: a weights-only file or a full-model save that nests the backbone
  under a head; ``<path>:<model>`` names the nested model of a file that nests several;
* ``None`` or ``'none'``: the random initialisation.

Conversion (`convert`) is strict: every Flax parameter and BatchNorm statistic is filled from the
file (`assign.assign_keras_weights`, by the backbone's explicit Keras name table), a missing layer
or a shape mismatch is an error naming the layer, and what the file holds beyond the model (the
ImageNet top when building without it, a transfer-learning head) is reported in a notice. The
result is cached in ``<download cache>/converted/``, keyed by the file's sha256 and the model's
structure, so a file is read and converted once.
"""

import dataclasses
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from flax import nnx, serialization

from flaxvision.conversion import assign, h5
from flaxvision.conversion.weights import imagenet_weights
from flaxvision.data.download import fetch, sha256
from flaxvision.errors import UserError
from flaxvision.files import write_bytes
from flaxvision.models.backbones import BACKBONES
from flaxvision.models.layers import Dtype, KerasNamed
from flaxvision.paths import cache_dir

WEIGHT_KINDS = nnx.Any(nnx.Param, nnx.BatchStat)


@dataclasses.dataclass(frozen=True)
class Conversion:
    """Where a backbone's weights came from, and what of the file it did not use."""

    file: Path
    sha256: str
    unused: tuple[str, ...]  # the file's Keras layers (or stray arrays) that the model has no place for
    from_cache: bool


def build_backbone(
    name: str,
    *,
    weights: str | Path | None,
    input_shape: Sequence[int],
    include_top: bool = False,
    pooling: str | None = None,
    classes: int = 1000,
    dtype: Dtype = None,
    batchnorm_momentum: float | None = None,
    rngs: nnx.Rngs,
    **options: Any,
) -> tuple[nnx.Module, Conversion | None]:
    """Backbone ``name`` (models.backbones.BACKBONES) with ``weights`` (see the module docstring).

    ``options`` name the weights as well as the architecture (MobileNetV2: ``alpha``); ``dtype``
    and ``batchnorm_momentum`` go to the architecture only. Returns the model, in
    training mode like every new NNX model (``.eval()`` for inference), and where its weights
    came from (None for the random initialisation).
    """
    if name not in BACKBONES:
        raise UserError(f"unknown backbone '{name}'; valid backbones: {', '.join(BACKBONES)}")
    backbone = BACKBONES[name]
    input_shape = tuple(input_shape)

    def build(rngs: nnx.Rngs) -> nnx.Module:
        return backbone.build(
            input_shape=input_shape,
            include_top=include_top,
            pooling=pooling,
            classes=classes,
            dtype=dtype,
            batchnorm_momentum=batchnorm_momentum,
            rngs=rngs,
            **options,
        )

    if weights is None or weights == "none":
        return build(rngs), None
    if weights == "imagenet":
        official = imagenet_weights(name, include_top=include_top, input_shape=input_shape, classes=classes, **options)
        path, submodel = fetch(official)[0], None
    else:
        path, submodel = _local_weights(str(weights))
    # The file fills every weight (a backbone holds only Params and BatchStats): no random init.
    model = nnx.eval_shape(build, rngs)
    return model, convert(model, path, aliases=backbone.keras_aliases, submodel=submodel)


def convert(
    model: nnx.Module, path: Path, *, aliases: Mapping[str, str] = {}, submodel: str | None = None
) -> Conversion:
    """Fill ``model`` (a backbone: it has ``keras_layers()``; it may be abstract, from
    ``nnx.eval_shape``) from the Keras h5 file ``path``.

    ``aliases`` maps the file's Keras-2 layer names to the Keras-3 names of the model's table;
    ``submodel`` names the nested model to read in a file that nests several.
    """
    path = Path(path)
    digest = sha256(path)
    variables = nnx.state(model, WEIGHT_KINDS)
    key = f"{digest[:16]}-{_structure_digest(model, variables, aliases, submodel)}"
    cached = cache_dir() / "converted" / f"{key}.msgpack"
    from_cache = cached.is_file()
    if from_cache:
        stored = serialization.msgpack_restore(cached.read_bytes())
        nnx.replace_by_pure_dict(variables, stored["variables"])
        nnx.update(model, variables)
        unused = stored["unused"]
    else:
        weights = h5.read_keras_h5(path, submodel)
        try:
            unused = [*assign.assign_keras_weights(model, weights.layers, aliases=aliases), *weights.others]
        except UserError as error:
            raise UserError(f"{path}: {error}") from None
        cached.parent.mkdir(parents=True, exist_ok=True)
        stored = {"variables": nnx.to_pure_dict(nnx.state(model, WEIGHT_KINDS)), "unused": unused}
        write_bytes(cached, serialization.msgpack_serialize(stored))
    if unused:
        print(f"notice: {path}: not used by the model: {', '.join(unused)}", file=sys.stderr)
    return Conversion(path, digest, tuple(unused), from_cache)


def _local_weights(weights: str) -> tuple[Path, str | None]:
    """The file and nested model that params ``weights`` ('<path>' or '<path>:<model>') names."""
    path = Path(weights)
    if path.is_file():
        return path, None
    file, _, submodel = weights.rpartition(":")
    if file and Path(file).is_file():
        return Path(file), submodel
    raise UserError(
        f"weights: {weights} is not a file; give imagenet, none, or the path of a Keras .h5 file "
        "(relative to the project root)"
    )


def _structure_digest(model: nnx.Module, variables: nnx.State, aliases: Mapping[str, str], submodel: str | None) -> str:
    """What a conversion depends on besides the file: the Flax variables, the Keras name table,
    the aliases, the nested model and the conversion code itself."""
    paths = {id(node): path for path, node in nnx.iter_graph(model)}
    description = {
        "variables": [(path, variable.shape, str(variable.dtype)) for path, variable in variables.flat_state()],
        "table": [(name, paths[id(module)]) for name, module in cast(KerasNamed, model).keras_layers().items()],
        "aliases": dict(aliases),
        "submodel": submodel,
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for module in (h5, assign):
        digest.update(Path(cast(str, module.__file__)).read_bytes())
    return digest.hexdigest()[:16]
