"""Input scaling: the keras.applications ``preprocess_input`` modes, applied to [0, 255] images.

Each model is designed for one mode (`models.preprocessing(name)`, a backbone's ``preprocessing``);
it is pure jnp, so it runs inside the compiled train and logits steps.
"""

import jax
import jax.numpy as jnp

PREPROCESSING_MODES = ("none", "unit", "tf", "caffe", "torch")
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_RGB_MEAN = (0.485, 0.456, 0.406)
_TORCH_RGB_STD = (0.229, 0.224, 0.225)


def preprocess_input(images: jax.typing.ArrayLike, mode: str) -> jax.Array:
    """Scale [0, 255] images for a model, as float32; the modes match keras.applications.

    'none': x as it is (models that scale their input themselves). 'unit': x / 255. 'tf': x / 127.5 - 1.
    'caffe': RGB → BGR minus the ImageNet BGR means.
    'torch': x / 255, then minus the ImageNet RGB means, over their standard deviations.
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"unknown preprocessing mode '{mode}'; valid modes: {', '.join(PREPROCESSING_MODES)}")
    x = jnp.asarray(images, jnp.float32)
    if mode in ("caffe", "torch") and x.shape[-1] != 3:
        raise ValueError(f"preprocessing mode '{mode}' needs RGB images, got {x.shape[-1]} channel(s)")
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255
    if mode == "tf":
        return x / 127.5 - 1
    if mode == "caffe":
        return x[..., ::-1] - jnp.array(_CAFFE_BGR_MEAN)
    return (x / 255 - jnp.array(_TORCH_RGB_MEAN)) / jnp.array(_TORCH_RGB_STD)
