"""What each convolution of a model outputs for one image, for any model built of `nnx.Conv`s.

One eager (un-jitted) forward pass records the output of every `nnx.Conv` call, in the order
the convolutions run, with the module's path in the model ("layers.5.middle.layers.0"). No
per-model code: Sequential CNNs, ResNet blocks and pretrained backbones are all found this way.

`nnx.capture(method_outputs=...)` records method outputs too, but returns them keyed by path
in sorted order ("expand" before "reduce"), which loses the order of execution that a layer
index refers to; observing the calls keeps it.
"""

import contextlib
import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from flaxvision.errors import UserError
from flaxvision.models.scaling import preprocess_input


class ConvActivation(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index (fine at runtime); in the order the convs run
    path: str  # the module's path in the model, dot-separated
    conv: nnx.Conv
    output: np.ndarray  # float32 [height, width, channels]

    @property
    def description(self) -> str:
        """E.g. "conv 3×3/2, 64→128, output 15×15×128"."""
        kernel = "×".join(map(str, self.conv.kernel_size))
        strides = self.conv.strides
        stride = strides if isinstance(strides, int) else max(strides or (1,))
        kernel += f"/{stride}" if stride != 1 else ""
        shape = "×".join(map(str, self.output.shape))
        return f"conv {kernel}, {self.conv.in_features}→{self.conv.out_features}, output {shape}"


def conv_activations(model: nnx.Module, image: np.ndarray, preprocessing: str) -> list[ConvActivation]:
    """The output of every convolution of ``model`` for one uint8 [H, W, C] ``image``.

    The image is scaled with ``preprocessing``, as the model was trained; ``model`` should be
    in eval mode (as `flaxvision.model_folder.load_trained` returns it).
    """
    paths = {id(module): ".".join(map(str, path)) for path, module in nnx.iter_modules(model)}
    calls: list[tuple[nnx.Conv, jax.Array]] = []
    with _recording_conv_calls(calls):
        model(preprocess_input(image[None], preprocessing))
    return [
        ConvActivation(index, paths[id(conv)], conv, np.asarray(output[0], np.float32))
        for index, (conv, output) in enumerate(calls)
    ]


@contextlib.contextmanager
def _recording_conv_calls(calls: list[tuple[nnx.Conv, jax.Array]]) -> Iterator[None]:
    """Append ``(conv, output)`` to ``calls`` for every nnx.Conv call inside the block, in order.

    It observes the calls through the interpreter's profiling hook (this thread only), so no
    module or class is changed.
    """
    conv_call = nnx.Conv.__call__.__code__

    def observe(frame: FrameType, event: str, value: Any) -> None:  # value: what the event passes
        if event == "return" and frame.f_code is conv_call:
            calls.append((frame.f_locals["self"], value))

    previous = sys.getprofile()
    sys.setprofile(observe)
    try:
        yield
    finally:
        sys.setprofile(previous)


def select_layers(activations: list[ConvActivation], chosen: Sequence[int | str], limit: int) -> list[ConvActivation]:
    """The activations of the layers ``chosen`` by index (negative from the end) or by path.

    With nothing chosen: ``limit`` layers spread evenly from the first convolution to the
    last, so a deep network shows its early, middle and late features. At most ``limit``.
    """
    if not activations:
        return []
    if not chosen:
        spread = np.linspace(0, len(activations) - 1, min(limit, len(activations)))
        return [activations[i] for i in sorted(set(spread.round().astype(int).tolist()))]
    by_path = {activation.path: activation for activation in activations}
    selected = []
    for layer in chosen[:limit]:
        if isinstance(layer, str) and layer in by_path:
            selected.append(by_path[layer])
        elif isinstance(layer, int) and -len(activations) <= layer < len(activations):
            selected.append(activations[layer])
        else:
            examples = ", ".join(a.path for a in activations[:3])
            raise UserError(
                f"params.yaml: evaluate.activation_layers: the model has no conv layer {layer!r}; "
                f"use an index from 0 to {len(activations) - 1} (or -1 for the last) or a path such as {examples}"
            )
    return selected
