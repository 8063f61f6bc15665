"""TF-Keras (tensorflow-cpu) runner: the seeds' models as their notebooks build them,
keras.applications backbones, and the seeds' ImageDataGenerator pipelines for the end-to-end epochs.

Runs in benchmarks/.peers/tf-keras (see benchmarks/peers.py), on TensorFlow's default CPU path:
Keras does not XLA-compile on CPU (``jit_compile='auto'`` resolves to False there), so its
convolutions run on oneDNN. Training is ``model.fit`` as the seeds call it, timed per epoch (one
repeat) by a callback inside one fit call, so fit's own setup is not counted against it;
inference is ``predict_on_batch``, which returns host arrays. Inputs are float32 already scaled
by 1/255, as the notebooks feed them.
"""

import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras.initializers import glorot_uniform, random_uniform
from tensorflow.keras.layers import (
    Activation,
    Add,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPooling2D,
    ReLU,
    ZeroPadding2D,
)
from tensorflow.keras.preprocessing.image import ImageDataGenerator

from benchmarks.workloads import (
    BATCH_SIZE,
    LEARNING_RATE,
    Protocol,
    Recipe,
    Workload,
    epoch_figures,
    measure,
    runner_main,
    summarize,
    synthetic_batch_set,
    timed,
)


def seed_cnn(input_shape, classes: int) -> keras.Model:
    """Seed 000, cell 25, layer for layer."""
    return keras.Sequential([
        keras.Input(input_shape),
        Conv2D(16, (5, 5), strides=(1, 1), activation=None, padding="same"),
        Conv2D(32, (5, 5), activation="relu", padding="same"),
        BatchNormalization(), ReLU(), MaxPooling2D((2, 2), padding="same"), Dropout(0.1),
        Conv2D(32, (5, 5), activation=None, padding="same"),
        Conv2D(16, (5, 5), activation=None, padding="same"),
        BatchNormalization(), ReLU(), MaxPooling2D((2, 2), padding="same"), Dropout(0.1),
        Conv2D(16, (5, 5), activation=None, padding="same"),
        Conv2D(8, (5, 5), activation=None, padding="same"),
        BatchNormalization(), ReLU(), Dropout(0.1),
        Flatten(),
        Dense(200, activation="relu"), Dropout(0.25),
        Dense(classes, activation="softmax"),
    ])  # fmt: skip


def tutorial_cnn(input_shape, classes: int) -> keras.Model:
    """Seed 002's CNN with dropout; a softmax over the classes where the seed has one sigmoid
    unit, as flaxvision's tutorial_cnn (the same model for two classes)."""
    return keras.Sequential([
        keras.Input(input_shape),
        Conv2D(16, 3, padding="same", activation="relu"), MaxPooling2D(), Dropout(0.3),
        Conv2D(32, 3, padding="same", activation="relu"), MaxPooling2D(),
        Conv2D(64, 3, padding="same", activation="relu"), MaxPooling2D(), Dropout(0.3),
        Flatten(),
        Dense(512, activation="relu"), Dropout(0.1),
        Dense(classes, activation="softmax"),
    ])  # fmt: skip


RECIPE_MODELS = {"belgiumtsc_cnn": seed_cnn, "tutorial_cnn": tutorial_cnn}  # Recipe.model -> builder


# Seed 004's blocks. The notebook calls its BatchNormalizations with training=True, which would
# keep them in training mode at inference too; here they follow the mode Keras runs them in.
def identity_block(X, f, filters, initializer=random_uniform):
    F1, F2, F3 = filters
    X_shortcut = X
    X = Conv2D(filters=F1, kernel_size=1, strides=(1, 1), padding="valid", kernel_initializer=initializer(seed=0))(X)
    X = Activation("relu")(BatchNormalization(axis=3)(X))
    X = Conv2D(filters=F2, kernel_size=f, strides=(1, 1), padding="same", kernel_initializer=initializer(seed=0))(X)
    X = Activation("relu")(BatchNormalization(axis=3)(X))
    X = Conv2D(filters=F3, kernel_size=1, strides=(1, 1), padding="valid", kernel_initializer=initializer(seed=0))(X)
    X = BatchNormalization(axis=3)(X)
    return Activation("relu")(Add()([X, X_shortcut]))


def convolutional_block(X, f, filters, s=2, initializer=glorot_uniform):
    F1, F2, F3 = filters
    X_shortcut = X
    X = Conv2D(filters=F1, kernel_size=1, strides=(s, s), padding="valid", kernel_initializer=initializer(seed=0))(X)
    X = Activation("relu")(BatchNormalization(axis=3)(X))
    X = Conv2D(filters=F2, kernel_size=f, strides=(1, 1), padding="same", kernel_initializer=initializer(seed=0))(X)
    X = Activation("relu")(BatchNormalization(axis=3)(X))
    X = Conv2D(filters=F3, kernel_size=1, strides=(1, 1), padding="valid", kernel_initializer=initializer(seed=0))(X)
    X = BatchNormalization(axis=3)(X)
    X_shortcut = Conv2D(
        filters=F3, kernel_size=1, strides=(s, s), padding="valid", kernel_initializer=initializer(seed=0)
    )(X_shortcut)
    X_shortcut = BatchNormalization(axis=3)(X_shortcut)
    return Activation("relu")(Add()([X, X_shortcut]))


def seed_resnet50(input_shape, classes: int) -> keras.Model:
    """Seed 004's ResNet50 (23,600,006 parameters at 64×64×3, 6 classes)."""
    X_input = keras.Input(input_shape)
    X = ZeroPadding2D((3, 3))(X_input)
    X = Conv2D(64, (7, 7), strides=(2, 2), kernel_initializer=glorot_uniform(seed=0))(X)
    X = Activation("relu")(BatchNormalization(axis=3)(X))
    X = MaxPooling2D((3, 3), strides=(2, 2))(X)
    for stage, blocks in enumerate((3, 4, 6, 3)):
        filters = [64 * 2**stage, 64 * 2**stage, 256 * 2**stage]
        X = convolutional_block(X, f=3, filters=filters, s=1 if stage == 0 else 2)
        for _ in range(blocks - 1):
            X = identity_block(X, 3, filters)
    X = AveragePooling2D(2, 2)(X)
    X = Dense(classes, activation="softmax", kernel_initializer=glorot_uniform(seed=0))(Flatten()(X))
    return keras.Model(inputs=X_input, outputs=X)


BACKBONES = {"mobilenet_v2": keras.applications.MobileNetV2, "densenet121": keras.applications.DenseNet121}


def build(workload: Workload) -> keras.Model:
    if workload.model == "seed_cnn":
        return seed_cnn(workload.input_shape, workload.classes)
    if workload.model == "resnet50":
        return seed_resnet50(workload.input_shape, workload.classes)
    return BACKBONES[workload.model](weights=None, include_top=False, pooling="avg", input_shape=workload.input_shape)


def compile_as_the_seeds(model: keras.Model):
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="categorical_crossentropy", metrics=["accuracy"])


class EpochTimes(keras.callbacks.Callback):
    """The wall time of each epoch of a fit, in seconds."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def measure_workload(workload: Workload, protocol: Protocol) -> dict:
    batches = protocol.batches(workload)
    images, labels = synthetic_batch_set(workload, batches)
    model, build_s = timed(lambda: build(workload))
    images = images.astype(np.float32) / 255
    info = {"params": model.count_params(), "build_s": build_s}
    if workload.mode == "train":
        # model.fit, as the seeds train, one epoch per repeat over the batches cached in memory.
        compile_as_the_seeds(model)
        dataset = tf.data.Dataset.from_tensor_slices((images, np.eye(workload.classes, dtype=np.float32)[labels]))
        epochs = EpochTimes()
        model.fit(
            dataset.batch(BATCH_SIZE).cache(), epochs=protocol.warmup + protocol.repeats, verbose=0, callbacks=[epochs]
        )
        return summarize(epochs.times[0], epochs.times[protocol.warmup :], batches * BATCH_SIZE) | info
    xs = [tf.constant(x) for x in np.split(images, batches)]

    def repeat():
        for x in xs:
            model.predict_on_batch(x)

    return measure(repeat, batches * BATCH_SIZE, protocol) | info


def end_to_end(raw: Path, recipe: Recipe, protocol: Protocol) -> dict:
    """The seed's pipeline on cats_vs_dogs' train folder: JPEGs decoded and augmented per batch
    by ImageDataGenerator.flow_from_directory, then model.fit (no validation, on either side)."""
    generator = ImageDataGenerator(**recipe.augmentation, rescale=1.0 / 255)
    flow = generator.flow_from_directory(
        str(raw / "cats_and_dogs_filtered" / "train"),
        batch_size=BATCH_SIZE,
        class_mode="categorical",
        color_mode=recipe.color_mode,
        target_size=recipe.image_size,
    )
    # What fit waits on when it cannot hide the generator behind training: one pass alone.
    _, data_s = timed(lambda: [flow[i] for i in range(len(flow))])
    channels = 1 if recipe.color_mode == "grayscale" else 3
    model = RECIPE_MODELS[recipe.model]((*recipe.image_size, channels), flow.num_classes)
    compile_as_the_seeds(model)
    epochs = EpochTimes()
    _, fit_s = timed(
        lambda: model.fit(
            flow, epochs=protocol.end_to_end_epochs, steps_per_epoch=len(flow), verbose=0, callbacks=[epochs]
        )
    )
    return epoch_figures(epochs.times) | {"fit_s": fit_s, "data_s": data_s, "images_per_epoch": flow.samples}


if __name__ == "__main__":
    runner_main("TF-Keras", {"tensorflow": tf.__version__, "keras": keras.__version__}, measure_workload, end_to_end)
