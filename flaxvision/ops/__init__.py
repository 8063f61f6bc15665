"""Computations the models run in other forms than JAX's own, below the architectures in
flaxvision.models: XLA:CPU forms of convolution, pooling, dense products and BatchNorm's training
pass (`cpu_kernels`), and oneDNN's convolutions (`onednn`, with `onednn_conv.cc`: XLA FFI handlers
that setup.py compiles into ``flaxvision.ops._onednn``)."""
