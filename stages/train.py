"""train: fit the model named by params `model` on data/prepared (or, for frozen pretrained
backbones, its head on data/features); write artifacts/model and the training curves.

A run killed part-way resumes from checkpoints/ (not a DVC output) when started again with the
same params, data (by content: data/prepared's SHA256SUMS and the features), code and devices. Its curves so far
are in checkpoints/live; results/train gets them only once training has finished.
"""

import dataclasses
import shutil
from pathlib import Path
from typing import cast

import jax
import numpy as np
from dvclive import Live

from flaxvision import builder
from flaxvision.checkpoints import fingerprint
from flaxvision.data import Images, load_prepared
from flaxvision.dvc_stage import TOOLCHAIN_LOCK, code_files, stage_main
from flaxvision.errors import UserError
from flaxvision.features import load_features
from flaxvision.files import atomic_directory, write_json
from flaxvision.model_folder import ModelInfo, save_trained
from flaxvision.models.layers import use_convolutions
from flaxvision.models.transfer import Transfer
from flaxvision.params import AUGMENT_OFF, Params
from flaxvision.training import Trainer, epoch_logger, fit

MODEL_DIR = Path("artifacts/model")
CHECKPOINT_DIR = Path("checkpoints")
# dvclive's folder while training: git-ignored and no DVC output, so an unfinished run's curves
# are never taken for a result (on resume, fit replays the history into it).
LIVE_DIR = CHECKPOINT_DIR / "live"
RESULTS_DIR = Path("results/train")


@stage_main
def main(params: Params) -> None:
    model_name = params.model
    transfer = builder.transfer_config(model_name, params.transfer)
    config, augment_config = params.train, params.augment
    convolutions = builder.convolutions(params)
    data = load_prepared()
    features = load_features()
    if data.image_shape[-1] != 3 and (augment_config.saturation or augment_config.hue):
        raise UserError(
            "params.yaml: augment.saturation and augment.hue need RGB images: "
            "set them to 0 or preprocess.color_mode to rgb"
        )

    model = builder.build_model(
        model_name,
        num_classes=len(data.classes),
        input_shape=data.image_shape,
        transfer=transfer,
        pretrained=params.pretrained if transfer else None,
        dtype=config.compute_dtype,
        batchnorm_momentum=config.batchnorm_momentum,
        seed=config.seed,
    )
    use_convolutions(model, convolutions)
    info = ModelInfo(
        model=model_name,
        transfer=transfer,
        classes=tuple(data.classes),
        input_shape=data.image_shape,
        color_mode=data.color_mode,
        preprocessing=builder.preprocessing(model_name),
    )
    train: tuple[Images, np.ndarray]
    validation: tuple[Images, np.ndarray]
    if features is None:
        trainer = Trainer(model, config, augment_config, info.preprocessing)
        train, validation = data.splits["train"], data.splits["validation"]
    else:  # frozen backbones: the head trains alone on their cached features
        if augment_config.enabled:
            print("note: params augment do not apply: the head trains on features of un-augmented images")
        augment_config = AUGMENT_OFF
        trainer = Trainer(cast(Transfer, model).head, config, augment_config, "none")
        train, validation = ((features[split], data.splits[split][1]) for split in ("train", "validation"))
    run_id = fingerprint(
        model_name,
        transfer and dataclasses.asdict(transfer),
        params.pretrained,
        convolutions,
        params.numerics,  # XLA's flags: other bits, so no resuming across them
        dataclasses.asdict(config),
        dataclasses.asdict(augment_config),
        data.checksums,  # every prepared file's content, verified by load_prepared
        *(features[split] for split in ("train", "validation") if features is not None),
        jax.device_count(),  # the layout of the saved arrays, and the order of their sums
        jax.process_count(),
        *(path.read_text() for path in code_files("train")),
        TOOLCHAIN_LOCK,
    )
    if jax.process_index():  # one of several hosts (docs/devices.md): they train; the first writes
        fit(trainer, train, validation, CHECKPOINT_DIR, run_id)
        return

    # dvc.yaml declares these outputs itself, so dvclive must not rewrite it.
    with Live(str(LIVE_DIR), dvcyaml=None, save_dvc_exp=False) as live:
        progress = fit(trainer, train, validation, CHECKPOINT_DIR, run_id, on_epoch=epoch_logger(live))
        live.summary = progress.summary()

    # Each output is replaced atomically, the model first and the metrics last, so a run killed
    # between them never leaves curves or metrics without the model they describe.
    if features is None:
        model = trainer.model  # the best weights
    else:
        cast(Transfer, model).head = trainer.model  # the best head, over the backbones that made its features
    save_trained(MODEL_DIR, model, info)
    with atomic_directory(RESULTS_DIR / "plots") as plots:
        shutil.copytree(LIVE_DIR / "plots", plots, dirs_exist_ok=True)
    write_json(RESULTS_DIR / "metrics.json", progress.summary())  # dvclive's own adds its step counter
    best = progress.history[progress.best_epoch]["val"]
    print(
        f"best epoch {progress.best_epoch + 1}/{progress.epoch}: val_loss {best['loss']:.4f}, "
        f"val_accuracy {best['accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
