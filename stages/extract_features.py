"""extract-features: cache the frozen backbone's bottleneck features for the model in params.

The from-scratch models have no frozen backbone, so for them this stage only records that
(a few bytes, no model is run) and training reads the prepared images directly.
"""

from pathlib import Path

import models
from flaxvision.config import load_params, require
from flaxvision.errors import stage_main
from flaxvision.files import write_json

FEATURES_DIR = Path("data/features")


@stage_main
def main():
    model_name = require(load_params(), "model")
    models.preprocessing(model_name)  # an unknown model fails here, before any later stage
    FEATURES_DIR.mkdir(parents=True, exist_ok=True)
    manifest = {"model": model_name, "backbone": None, "features": None}
    write_json(FEATURES_DIR / "features.json", manifest)
    print(f"{model_name} is trained from scratch: no frozen backbone, nothing to extract")


if __name__ == "__main__":
    main()
