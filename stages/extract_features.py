"""extract-features: run the model's frozen, pretrained backbones once over every split and
cache their features in data/features, for training the head.

Models that train on images (from scratch, fine-tuned, or with augmentation in front of a frozen
backbone) get only a manifest saying so: this stage then runs no model and costs nothing.
"""

import time

from flaxvision import builder
from flaxvision.data import load_prepared
from flaxvision.dvc_stage import stage_main
from flaxvision.features import FEATURES_DIR, extract_features, write_features
from flaxvision.models.layers import use_convolutions
from flaxvision.params import Params


@stage_main
def main(params: Params) -> None:
    config = builder.transfer_config(params.model, params.transfer)
    if config is None or not config.cache_features:
        write_features(FEATURES_DIR, None, {"model": params.model})
        print(f"{params.model} trains on images: no features to extract")
        return

    convolutions = builder.convolutions(params)
    data = load_prepared()
    model = builder.build_model(
        params.model,
        num_classes=len(data.classes),
        input_shape=data.image_shape,
        transfer=config,
        pretrained=params.pretrained,
    )
    use_convolutions(model, convolutions)

    start, count = time.perf_counter(), 0
    features = {}
    for split, (images, _) in data.splits.items():
        features[split] = extract_features(model, images, params.extract_features.batch_size, desc=f"{split} features")
        count += len(images)
    seconds = time.perf_counter() - start
    write_features(
        FEATURES_DIR,
        features,
        {"model": params.model, "backbones": list(config.backbones), "pretrained": params.pretrained},
    )
    shape = features["train"].shape[1:]
    print(
        f"{FEATURES_DIR}: {'+'.join(config.backbones)} features {shape} of {count} images "
        f"in {seconds:.1f} s ({count / seconds:.1f} images/s, compilation included)"
    )


if __name__ == "__main__":
    main()
