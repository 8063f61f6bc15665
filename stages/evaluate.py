"""evaluate: score the trained model on the test split; write metrics, the confusion matrix and pictures.

Pictures (PNG, DVC image plots) in results/evaluate/plots/: sample training images, the same
images augmented as in training, the most confidently misclassified test images, and the
activation maps of one test image for the model's convolutions (activations/).
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flaxvision.activations import conv_activations, select_layers
from flaxvision.config import load_params, section
from flaxvision.data import load_prepared
from flaxvision.errors import UserError, stage_main
from flaxvision.evaluation import EvaluateConfig, evaluate_logits, most_confident_errors, predict_model, softmax
from flaxvision.files import atomic_directory, write_json
from flaxvision.plots import (
    CORRECT_COLOR,
    WRONG_COLOR,
    activation_map,
    image_grid,
    short,
    spread_over_classes,
    write_png,
)
from flaxvision.trained import load_trained
from flaxvision.transforms import AugmentConfig, augment

MODEL_DIR = Path("artifacts/model")
RESULTS_DIR = Path("results/evaluate")
PLOTS_DIR = RESULTS_DIR / "plots"


@stage_main
def main():
    params = load_params()
    config = section(params, "evaluate", EvaluateConfig)
    augment_config = section(params, "augment", AugmentConfig)
    data = load_prepared()
    images, labels = data.splits["test"]
    if len(labels) == 0:
        raise UserError("the test split is empty: raise preprocess.test_fraction")
    if config.activation_image >= len(labels):
        raise UserError(f"params.yaml: evaluate.activation_image is {config.activation_image}, "
                        f"but the test split has {len(labels)} images: use 0 to {len(labels) - 1}")
    model, metadata = load_trained(MODEL_DIR)

    logits = predict_model(model, metadata["preprocessing"], images, config.batch_size)
    result = evaluate_logits(logits, labels, data.classes, config.top_k)

    # Each output is replaced atomically and the metrics come last: a run killed part-way leaves
    # no metrics without the predictions and pictures they go with.
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS_DIR / "per_class.json", [{"class": name, **scores} for name, scores in result.per_class.items()])
    # One row per test image: DVC's confusion template counts them into the matrix.
    write_json(RESULTS_DIR / "predictions.json", [
        {"actual": data.classes[t], "predicted": data.classes[p]}
        for t, p in zip(labels.tolist(), logits.argmax(-1).tolist())
    ])

    probabilities = softmax(logits)
    with atomic_directory(PLOTS_DIR) as plots:
        write_sample_grids(plots, data, config.samples, augment_config)
        write_misclassified_grid(plots, images, labels, probabilities, data.classes, config.misclassified)
        (plots / "activations").mkdir()
        written = write_activation_maps(plots / "activations", model, metadata["preprocessing"], images,
                                        labels, probabilities, data.classes, config)
    print(f"{PLOTS_DIR}: samples, samples_augmented, test_misclassified and {written} activation maps")

    write_json(RESULTS_DIR / "metrics.json", result.summary)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result.summary.items()))


def write_sample_grids(plots: Path, data, count: int, augment_config: AugmentConfig):
    """samples.png: training images with their class; samples_augmented.png: the same, augmented."""
    images, labels = data.splits["train"]
    chosen = spread_over_classes(labels, count)
    images = np.asarray(images[chosen])
    captions = [short(data.classes[label]) for label in labels[chosen]]
    height, width, _ = data.image_shape
    write_png(image_grid(images, captions, f"Training images ({height}×{width} {data.color_mode}, "
                                           "as the model gets them before augmentation)"), plots / "samples.png")

    # The augmentation of the train step, with a fixed key: pixels stay in [0, 255] until preprocessing.
    augmented = augment(jnp.asarray(images, jnp.float32), jax.random.key(0), augment_config)
    augmented = np.asarray(jnp.clip(jnp.round(augmented), 0, 255), np.uint8)
    defaults = AugmentConfig()
    changed = [field.name if value is True else f"{field.name} {value}"
               for field in dataclasses.fields(AugmentConfig)
               if (value := getattr(augment_config, field.name)) != getattr(defaults, field.name)]
    settings = ", ".join(changed) if augment_config.enabled else "none: params.yaml augment is off"
    write_png(image_grid(augmented, captions, f"The same images, randomly augmented as in training ({settings})"),
              plots / "samples_augmented.png")


def write_misclassified_grid(plots: Path, images, labels, probabilities, classes: list[str], count: int):
    """test_misclassified.png: the most confidently misclassified test images, true and predicted class."""
    worst = most_confident_errors(probabilities, labels, count)
    predicted = probabilities.argmax(-1)
    captions = [f"true: {short(classes[labels[i]])}\npredicted: {short(classes[predicted[i]])} "
                f"{probabilities[i, predicted[i]]:.0%}" for i in worst]
    title = (f"The {len(worst)} most confidently misclassified test images "
             f"({np.sum(predicted != labels)} of {len(labels)} test images are misclassified)")
    write_png(image_grid(np.asarray(images[worst]), captions, title, colors=[WRONG_COLOR] * len(worst),
                         empty="every test image is classified correctly"), plots / "test_misclassified.png")


def write_activation_maps(folder: Path, model, preprocessing: str, images, labels, probabilities,
                          classes: list[str], config: EvaluateConfig) -> int:
    """One picture per chosen conv layer: every channel of its output for one test image."""
    index = config.activation_image
    image = np.asarray(images[index])
    activations = conv_activations(model, image, preprocessing)
    chosen = select_layers(activations, config.activation_layers, config.max_activation_layers)
    true, predicted = labels[index], probabilities[index].argmax()
    verdict = "correct" if true == predicted else "wrong"
    caption = (f"test image {index}\ntrue: {short(classes[true])}\n"
               f"predicted: {short(classes[predicted])} {probabilities[index, predicted]:.0%} ({verdict})")
    for activation in chosen:
        figure = activation_map(
            activation.output,
            f"Conv layer {activation.index + 1} of {len(activations)}: {activation.path} ({activation.description})",
            image=image, image_caption=caption, max_channels=config.max_channels,
            image_caption_color=CORRECT_COLOR if verdict == "correct" else WRONG_COLOR,
        )
        write_png(figure, folder / f"{activation.index + 1:03d}_{activation.path}.png")
    return len(chosen)


if __name__ == "__main__":
    main()
