"""PyTorch (CPU build) runner: the same architectures written in plain torch.

Runs in benchmarks/.peers/pytorch (see benchmarks/peers.py); torchvision is not used (PyPI's
is a CUDA build). Layers mirror Keras' (BatchNorm epsilon and momentum, 'same' padding, biases),
so every model has the Keras parameter count (BatchNorm running statistics included). Eager
mode, as the notebooks' users would write it; each workload runs in whichever memory format,
contiguous or channels_last, a short probe finds faster. PyTorch runs synchronously on CPU.
"""

import statistics
import time

import numpy as np
import torch
from torch import nn

from benchmarks.workloads import (
    BATCH_SIZE,
    LEARNING_RATE,
    Protocol,
    Workload,
    measure,
    runner_main,
    synthetic_batch_set,
    timed,
)


def batch_norm(channels: int, *, epsilon: float = 1e-3, keras_momentum: float = 0.99) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=epsilon, momentum=1 - keras_momentum)


def seed_cnn(channels: int, classes: int) -> nn.Sequential:
    """Seed 000's CNN: 5×5 'same' convolutions, BatchNorm, 'same' max pooling, dense 200."""

    def conv5(inputs, outputs):
        return nn.Conv2d(inputs, outputs, 5, padding=2)

    def pool():
        return nn.MaxPool2d(2, ceil_mode=True)  # Keras' padding='same'

    return nn.Sequential(
        conv5(channels, 16), conv5(16, 32), nn.ReLU(), batch_norm(32), nn.ReLU(), pool(), nn.Dropout(0.1),
        conv5(32, 32), conv5(32, 16), batch_norm(16), nn.ReLU(), pool(), nn.Dropout(0.1),
        conv5(16, 16), conv5(16, 8), batch_norm(8), nn.ReLU(), nn.Dropout(0.1),
        nn.Flatten(),
        nn.LazyLinear(200), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(200, classes),
    )  # fmt: skip


class Bottleneck(nn.Module):
    """Seed 004's identity_block / convolutional_block (``projection``): 1×1 → 3×3 → 1×1 + shortcut."""

    def __init__(self, inputs: int, filters: tuple[int, int, int], strides: int, projection: bool):
        super().__init__()
        reduce, middle, expand = filters
        self.main = nn.Sequential(
            nn.Conv2d(inputs, reduce, 1, strides), batch_norm(reduce), nn.ReLU(),
            nn.Conv2d(reduce, middle, 3, padding=1), batch_norm(middle), nn.ReLU(),
            nn.Conv2d(middle, expand, 1), batch_norm(expand),
        )  # fmt: skip
        self.shortcut = (
            nn.Sequential(nn.Conv2d(inputs, expand, 1, strides), batch_norm(expand)) if projection else nn.Identity()
        )

    def forward(self, x):
        return torch.relu(self.main(x) + self.shortcut(x))


def seed_resnet50(channels: int, classes: int) -> nn.Sequential:
    layers = [nn.ZeroPad2d(3), nn.Conv2d(channels, 64, 7, 2), batch_norm(64), nn.ReLU(), nn.MaxPool2d(3, 2)]
    inputs = 64
    for stage, blocks in enumerate((3, 4, 6, 3)):
        filters = (64 * 2**stage, 64 * 2**stage, 256 * 2**stage)
        for index in range(blocks):
            strides = 2 if stage and not index else 1
            layers.append(Bottleneck(inputs, filters, strides, projection=index == 0))
            inputs = filters[-1]
    return nn.Sequential(*layers, nn.AvgPool2d(2), nn.Flatten(), nn.LazyLinear(classes))


def conv_bn(
    inputs: int, outputs: int, kernel_size: int, strides: int = 1, *, groups: int = 1, activation: bool = True
) -> list[nn.Module]:
    """keras.applications.MobileNetV2's convolution, BatchNorm (epsilon 1e-3, momentum 0.999), ReLU6."""
    layers = [
        nn.Conv2d(inputs, outputs, kernel_size, strides, padding=kernel_size // 2, groups=groups, bias=False),
        batch_norm(outputs, keras_momentum=0.999),
    ]
    return layers + [nn.ReLU6()] if activation else layers


class InvertedResidual(nn.Module):
    def __init__(self, inputs: int, outputs: int, strides: int, expansion: int):
        super().__init__()
        hidden = inputs * expansion
        layers = conv_bn(inputs, hidden, 1) if expansion != 1 else []
        layers += conv_bn(hidden, hidden, 3, strides, groups=hidden) + conv_bn(hidden, outputs, 1, activation=False)
        self.body = nn.Sequential(*layers)
        self.residual = strides == 1 and inputs == outputs

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(channels: int) -> nn.Sequential:
    """keras.applications.MobileNetV2 (alpha 1), include_top=False, pooling='avg'."""
    layers, inputs = conv_bn(channels, 32, 3, 2), 32
    for expansion, outputs, blocks, strides in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for index in range(blocks):
            layers.append(InvertedResidual(inputs, outputs, strides if index == 0 else 1, expansion))
            inputs = outputs
    return nn.Sequential(*layers, *conv_bn(inputs, 1280, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


DENSENET_EPSILON = 1.001e-5


def densenet_norm(channels: int) -> list[nn.Module]:
    return [batch_norm(channels, epsilon=DENSENET_EPSILON), nn.ReLU()]


class DenseLayer(nn.Module):
    def __init__(self, inputs: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            *densenet_norm(inputs),
            nn.Conv2d(inputs, 4 * growth, 1, bias=False),
            *densenet_norm(4 * growth),
            nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet121(channels: int, growth: int = 32) -> nn.Sequential:
    """keras.applications.DenseNet121, include_top=False, pooling='avg'."""
    layers = [
        nn.ZeroPad2d(3),
        nn.Conv2d(channels, 64, 7, 2, bias=False),
        *densenet_norm(64),
        nn.ZeroPad2d(1),
        nn.MaxPool2d(3, 2),
    ]
    features = 64
    for block, size in enumerate((6, 12, 24, 16)):
        for _ in range(size):
            layers.append(DenseLayer(features, growth))
            features += growth
        if block < 3:  # transition: halve the channels and the resolution
            layers += [*densenet_norm(features), nn.Conv2d(features, features // 2, 1, bias=False), nn.AvgPool2d(2)]
            features //= 2
    return nn.Sequential(*layers, *densenet_norm(features), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def build(workload: Workload) -> nn.Module:
    channels = workload.input_shape[-1]
    if workload.model == "seed_cnn":
        model = seed_cnn(channels, workload.classes)
    elif workload.model == "resnet50":
        model = seed_resnet50(channels, workload.classes)
    else:
        model = {"mobilenet_v2": mobilenet_v2, "densenet121": densenet121}[workload.model](channels)
    with torch.no_grad():  # sizes the lazy layers
        model(torch.zeros(1, channels, *workload.input_shape[:2]))
    return model


def count_parameters(model: nn.Module) -> int:
    """Weights plus BatchNorm running statistics, as Keras' count_params counts them."""
    statistics_ = sum(m.running_mean.numel() * 2 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return sum(p.numel() for p in model.parameters()) + statistics_


def measure_workload(workload: Workload, protocol: Protocol) -> dict:
    torch.manual_seed(0)
    batches = protocol.batches(workload)
    images, labels = synthetic_batch_set(workload, batches)
    model, build_s = timed(lambda: build(workload))
    params = count_parameters(model)
    xs = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2).split(BATCH_SIZE)
    ys = torch.from_numpy(labels.astype(np.int64)).split(BATCH_SIZE)
    memory_format = fastest_memory_format(model, workload.mode, xs[0], ys[0])
    step = make_step(model, workload.mode, memory_format)
    xs = [x.contiguous(memory_format=memory_format) for x in xs]

    def repeat():
        for x, y in zip(xs, ys, strict=True):
            step(x, y)

    result = measure(repeat, batches * BATCH_SIZE, protocol)
    return result | {"params": params, "build_s": build_s, "memory_format": str(memory_format).split(".")[-1]}


def make_step(model: nn.Module, mode: str, memory_format: torch.memory_format):
    """``step(x, y)``: one training step (Adam, cross-entropy) or one inference batch, with the
    model's weights (and, for training, a new optimizer's state) in ``memory_format``."""
    model.to(memory_format=memory_format)
    if mode == "infer":
        model.eval()

        def step(x, y):
            with torch.inference_mode():
                model(x)

        return step
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    return step


def fastest_memory_format(model: nn.Module, mode: str, x, y, trials: int = 2) -> torch.memory_format:
    """Contiguous (NCHW) or channels_last (NHWC), whichever runs a step faster after a warm-up."""
    times = {}
    for memory_format in (torch.contiguous_format, torch.channels_last):
        step = make_step(model, mode, memory_format)
        x = x.contiguous(memory_format=memory_format)
        step(x, y)
        trial_times = []
        for _ in range(trials):
            start = time.perf_counter()
            step(x, y)
            trial_times.append(time.perf_counter() - start)
        times[memory_format] = statistics.median(trial_times)
    return min(times, key=times.get)


if __name__ == "__main__":
    runner_main("PyTorch", {"torch": torch.__version__, "threads": torch.get_num_threads()}, measure_workload)
