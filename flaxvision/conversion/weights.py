"""The official Keras ImageNet weight files of the backbones: name, URL and what verifies them.

Keras (keras.applications) downloads these from KERAS_APPLICATIONS and checks the md5s below
(../shared/datasets/README.md copies them from Keras's source). MobileNetV2's files come
unchecked, one per width ``alpha`` and input size; the one copy measured here is listed by its
size and sha256, the others get the content check and a notice (flaxvision.data.download).
"""

from collections.abc import Sequence

from flaxvision.conversion.h5 import check_keras_h5
from flaxvision.data.download import RemoteFile
from flaxvision.errors import UserError

KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_CLASSES = 1000

# backbone -> (folder under KERAS_APPLICATIONS, file name stem, md5 with the top, md5 without it)
_PUBLISHED = {
    "resnet50": ("resnet", "resnet50", "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet50v2": ("resnet", "resnet50v2", "3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
    "densenet121": ("densenet", "densenet121", "9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738"),
    "vgg16": ("vgg16", "vgg16", "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
}  # fmt: skip

MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)  # square input sizes with their own files
# file name -> (size in bytes, sha256) of copies measured (Keras publishes no digest for them)
_MOBILENET_V2_MEASURED = {
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5": (
        9_406_464,
        "f8aff69536bd77a692c594f559c798c19bf7f3f36668fc9fa00b21c6aab4797c",
    ),
}


def imagenet_weights(
    backbone: str,
    *,
    include_top: bool,
    input_shape: Sequence[int],
    classes: int = IMAGENET_CLASSES,
    alpha: float = 1.0,
) -> RemoteFile:
    """The official file for ``backbone`` built this way; its constraints are Keras's.

    With the top, the ImageNet classifier fixes the classes (1000) and the input size (224,
    or for MobileNetV2 one of MOBILENET_V2_SIZES, square). ``alpha`` is MobileNetV2's width.
    """
    height, width, channels = input_shape
    if channels != 3:
        raise UserError(
            f"weights: imagenet needs RGB input (3 channels), got {channels}: set preprocess.color_mode: rgb"
        )
    if include_top and classes != IMAGENET_CLASSES:
        raise UserError(
            f"weights: imagenet with the classification top predicts the {IMAGENET_CLASSES} ImageNet classes, "
            f"not {classes}: build it without the top (include_top: false)"
        )
    if backbone == "mobilenet_v2":
        return _mobilenet_v2(include_top=include_top, size=height if height == width else None, alpha=alpha)
    if backbone not in _PUBLISHED:
        valid = ", ".join([*_PUBLISHED, "mobilenet_v2"])
        raise UserError(f"weights: no imagenet weights for '{backbone}'; valid backbones: {valid}")
    if include_top and (height, width) != (224, 224):
        raise UserError(
            f"weights: imagenet with the classification top needs 224x224 images, got {height}x{width}: "
            "set preprocess.image_size: [224, 224] or build it without the top"
        )
    folder, stem, top_md5, notop_md5 = _PUBLISHED[backbone]
    name = f"{stem}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
    return RemoteFile(
        name=name,
        url=f"{KERAS_APPLICATIONS}{folder}/{name}",
        md5=top_md5 if include_top else notop_md5,
        check=check_keras_h5,
    )


def _mobilenet_v2(*, include_top: bool, size: int | None, alpha: float) -> RemoteFile:
    if alpha not in MOBILENET_V2_ALPHAS:
        raise UserError(
            f"weights: imagenet MobileNetV2 exists for alpha {', '.join(map(str, MOBILENET_V2_ALPHAS))}, "
            f"not {alpha}: use one of them or weights: none"
        )
    if size not in MOBILENET_V2_SIZES:
        if include_top:
            raise UserError(
                f"weights: imagenet MobileNetV2 with the classification top needs square images of "
                f"{', '.join(map(str, MOBILENET_V2_SIZES))} pixels: set preprocess.image_size"
            )
        size = 224  # as Keras: the convolutions' weights fit any size; 224's are the default
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}{'' if include_top else '_no_top'}.h5"
    measured_size, measured_sha256 = _MOBILENET_V2_MEASURED.get(name, (None, None))
    return RemoteFile(
        name=name,
        url=f"{KERAS_APPLICATIONS}mobilenet_v2/{name}",
        known_copies={measured_sha256: "measured copy of Keras's file"} if measured_sha256 else {},
        size=measured_size,
        check=check_keras_h5,
    )
