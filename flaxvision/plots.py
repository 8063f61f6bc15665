"""Pictures of images and activations, as PNG files that DVC shows as image plots.

Each function returns a matplotlib `Figure` (its titles can be checked) and `write_png` writes
it. Figures are built with matplotlib's object API, not pyplot: no global state, no GUI backend.
The evaluate stage's pictures come last: sample training images (as given to the model, and
augmented), the most confidently misclassified test images, and one test image's activations.
"""

import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flaxvision.activations import conv_activations, select_layers
from flaxvision.data import Images
from flaxvision.evaluation import most_confident_errors
from flaxvision.files import write_bytes
from flaxvision.params import AUGMENT_OFF, AugmentConfig
from flaxvision.transforms import augment

DPI = 100
CELL_INCHES = 1.7  # one image of a grid, caption included
CAPTION_CHARACTERS = 22  # longer class names are shortened to fit under an image
ACTIVATION_COLORMAP = "viridis"  # dark: weak response, yellow: strong
CORRECT_COLOR, WRONG_COLOR = "#1a7f37", "#c62828"


def spread_over_classes(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` examples, taking each class's first examples in turn.

    Every class appears (while ``count`` allows), in label order, so a grid shows the classes
    side by side rather than whatever the first rows of a split happen to be.
    """
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    rounds = max((len(indices) for indices in by_class), default=0)
    order = [indices[i] for i in range(rounds) for indices in by_class if i < len(indices)]
    return np.array(order[:count], dtype=np.int64)


def short(name: str, limit: int = CAPTION_CHARACTERS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def image_grid(
    images: np.ndarray,
    captions: list[str],
    title: str,
    *,
    colors: list[str] | None = None,
    columns: int = 8,
    empty: str = "no images",
) -> Figure:
    """uint8 [N, H, W, C] images in rows of ``columns``, each with its caption (in its colour)."""
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    figure = Figure(
        figsize=(max(columns * CELL_INCHES, 6), rows * (CELL_INCHES + 0.15 * lines) + 0.6),
        dpi=DPI,
        layout="constrained",
    )
    figure.suptitle(title, fontsize=12, wrap=True)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    if count == 0:
        axes[0].text(0.5, 0.5, empty, ha="center", va="center", fontsize=12, transform=axes[0].transAxes)
    # zip stops at the images: the grid's spare cells stay blank.
    for ax, image, caption, color in zip(axes, images, captions, colors or ["black"] * count, strict=False):
        show_image(ax, image)
        ax.set_title(caption, fontsize=9, color=color)
    return figure


def show_image(ax: Axes, image: np.ndarray) -> None:
    """A uint8 [H, W, C] image as it is: RGB in colour, one channel in grey (not a colour map)."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)


def activation_map(
    activation: np.ndarray,
    title: str,
    *,
    image: np.ndarray,
    image_caption: str,
    image_caption_color: str = "black",
    max_channels: int,
) -> Figure:
    """Every channel (up to ``max_channels``) of one layer's [H, W, C] output, tiled in one picture.

    As in seed 002 (and Keras' "visualizing intermediate activations"), each channel is scaled
    by its own mean and standard deviation: the picture shows where in the image each filter
    responds, not how strongly one filter responds compared with another. The input image is
    shown beside the maps.
    """
    channels = activation.shape[-1]
    shown = min(channels, max_channels)
    mosaic = tile_channels(standardise_channels(activation[..., :shown]))
    mosaic_aspect = mosaic.shape[1] / mosaic.shape[0]
    width = 12.0
    height = min(max(width * 0.78 / mosaic_aspect, 2.5), 14.0) + 0.7
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    figure.suptitle(title, fontsize=12)
    input_ax, maps_ax = figure.subplots(1, 2, width_ratios=[0.2, 0.8])
    show_image(input_ax, image)
    input_ax.set_title(image_caption, fontsize=9, color=image_caption_color)
    input_ax.set_axis_off()
    colormap = matplotlib.colormaps[ACTIVATION_COLORMAP].with_extremes(bad="white")  # white: the gaps
    maps_ax.imshow(mosaic, cmap=colormap, vmin=0, vmax=1, interpolation="nearest")
    maps_ax.set_title(
        f"channels 1–{shown} of {channels}, each scaled to its own mean ± 2 sd (dark: weak, yellow: strong)", fontsize=9
    )
    maps_ax.set_axis_off()
    return figure


def standardise_channels(activation: np.ndarray) -> np.ndarray:
    """Each channel of [H, W, C] to (x - mean) / (4 sd) + 0.5, clipped to [0, 1]; a constant channel is 0.5.

    The same mapping as seed 002's ``x * 64 + 128`` on standardised values, clipped to 0-255.
    """
    activation = np.asarray(activation, np.float64)
    mean = activation.mean(axis=(0, 1))
    std = activation.std(axis=(0, 1))
    scaled = np.divide(activation - mean, 4 * std, out=np.zeros_like(activation), where=std > 0)
    return np.clip(scaled + 0.5, 0, 1)


def tile_channels(maps: np.ndarray, gap: int = 1) -> np.ndarray:
    """[H, W, C] maps into one [rows·(H+gap), columns·(W+gap)] mosaic, NaN in the gaps and empty tiles.

    About twice as many columns as rows (a power of two), so the picture fits a wide page.
    """
    height, width, channels = maps.shape
    columns = min(channels, 2 ** math.ceil(math.log2(math.sqrt(2 * channels))))
    rows = math.ceil(channels / columns)
    mosaic = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan)
    for channel in range(channels):
        row, column = divmod(channel, columns)
        top, left = row * (height + gap), column * (width + gap)
        mosaic[top : top + height, left : left + width] = maps[..., channel]
    return mosaic


def write_png(figure: Figure, path: Path) -> None:
    """Render ``figure`` to ``path`` atomically. No metadata, so the same figure gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    write_bytes(path, buffer.getvalue())


def training_samples(
    images: Images,
    labels: np.ndarray,
    classes: list[str],
    count: int,
    description: str,
    augment_config: AugmentConfig,
) -> dict[str, Figure]:
    """samples.png: training images with their class; samples_augmented.png: the same, augmented.

    ``description`` says what the images are, e.g. "96×96 rgb".
    """
    chosen = spread_over_classes(labels, count)
    images = np.asarray(images[chosen])
    captions = [short(classes[label]) for label in labels[chosen]]
    samples = image_grid(
        images, captions, f"Training images ({description}, as the model gets them before augmentation)"
    )

    # The augmentation of the train step, with a fixed key: pixels stay in [0, 255] until preprocessing.
    augmented_floats = augment(jnp.asarray(images, jnp.float32), jax.random.key(0), augment_config)
    augmented = np.asarray(jnp.clip(jnp.round(augmented_floats), 0, 255), np.uint8)
    changed = [
        field.name if value is True else f"{field.name} {value}"
        for field in dataclasses.fields(AugmentConfig)
        if (value := getattr(augment_config, field.name)) != getattr(AUGMENT_OFF, field.name)
    ]
    settings = ", ".join(changed) if augment_config.enabled else "none: params.yaml augment is off"
    return {
        "samples.png": samples,
        "samples_augmented.png": image_grid(
            augmented, captions, f"The same images, randomly augmented as in training ({settings})"
        ),
    }


def misclassified(
    images: Images, labels: np.ndarray, probabilities: np.ndarray, classes: list[str], count: int
) -> Figure:
    """The most confidently misclassified test images, with their true and predicted class."""
    worst = most_confident_errors(probabilities, labels, count)
    predicted = probabilities.argmax(-1)
    captions = [
        f"true: {short(classes[labels[i]])}\npredicted: {short(classes[predicted[i]])} "
        f"{probabilities[i, predicted[i]]:.0%}"
        for i in worst
    ]
    title = (
        f"The {len(worst)} most confidently misclassified test images "
        f"({np.sum(predicted != labels)} of {len(labels)} test images are misclassified)"
    )
    return image_grid(
        np.asarray(images[worst]),
        captions,
        title,
        colors=[WRONG_COLOR] * len(worst),
        empty="every test image is classified correctly",
    )


def activation_maps(
    model: nnx.Module,
    preprocessing: str,
    image: np.ndarray,
    caption: str,
    correct: bool,
    layers: Sequence[int | str],
    max_layers: int,
    max_channels: int,
) -> dict[str, Figure]:
    """One picture per chosen conv layer (``layers``, see activations.select_layers): every
    channel of its output for ``image``, shown beside it with ``caption``; keyed by file name."""
    image = np.asarray(image)
    activations = conv_activations(model, image, preprocessing)
    figures = {}
    for activation in select_layers(activations, layers, max_layers):
        title = f"Conv layer {activation.index + 1} of {len(activations)}: {activation.path} ({activation.description})"
        figures[f"{activation.index + 1:03d}_{activation.path}.png"] = activation_map(
            activation.output,
            title,
            image=image,
            image_caption=caption,
            max_channels=max_channels,
            image_caption_color=CORRECT_COLOR if correct else WRONG_COLOR,
        )
    return figures
