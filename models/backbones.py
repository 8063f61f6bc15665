"""The keras.applications backbones in Flax: how to build each, and what Keras calls it.

Every ``build(*, input_shape, include_top, pooling, classes=1000, rngs, **options)`` returns
a module whose ``__call__`` takes float32 NHWC images already scaled by
``models.scaling.preprocess_input(images, backbone.preprocessing)`` and returns what
the keras.applications model with ``classifier_activation=None`` returns: logits with
``include_top``, pooled features with ``pooling`` 'avg' or 'max', else the last feature map.
Its ``keras_layers()`` is the explicit name table the weight converter fills it by (Keras
layer name → the nnx.Conv, nnx.Linear or nnx.BatchNorm holding its weights, in Keras order).
Like every NNX model, a new backbone is in training mode: call ``.eval()`` for inference.
"""

import dataclasses
from collections.abc import Callable, Mapping
from functools import partial

from flax import nnx

from flaxvision.models import densenet, mobilenet_v2, resnet, vgg


@dataclasses.dataclass(frozen=True)
class Backbone:
    build: Callable[..., nnx.Module]
    keras_class: str  # the keras.applications attribute, e.g. "MobileNetV2"
    preprocessing: str  # the models.scaling.preprocess_input mode: 'tf' | 'caffe' | 'torch'
    keras_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)  # Keras-2 → Keras-3 layer names


BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(mobilenet_v2.mobilenet_v2, "MobileNetV2", "tf"),
    "resnet50": Backbone(partial(resnet.ResNet, (3, 4, 6, 3), preact=False), "ResNet50", "caffe"),
    "resnet50v2": Backbone(partial(resnet.ResNet, (3, 4, 6, 3), preact=True), "ResNet50V2", "tf"),
    # The official Keras-2 file names the stem 'conv1/conv' and 'conv1/bn'.
    "densenet121": Backbone(
        partial(densenet.DenseNet, densenet.DENSENET121_BLOCKS),
        "DenseNet121",
        "torch",
        keras_aliases={"conv1/conv": "conv1_conv", "conv1/bn": "conv1_bn"},
    ),
    "vgg16": Backbone(partial(vgg.VGG, vgg.VGG16_BLOCKS), "VGG16", "caffe"),
}
