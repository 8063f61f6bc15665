// oneDNN's convolutions as XLA FFI handlers for XLA:CPU: forward, input gradient and kernel
// gradient of a 2-D convolution with NHWC activations and an HWIO kernel, float32.
// flaxvision.ops.onednn registers them and differentiates through them.

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

enum class Pass { kForward, kInputGrad, kKernelGrad };

struct Geometry {
  int64_t batch, in_h, in_w, in_c, out_h, out_w, out_c, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right;

  auto Key() const {
    return std::make_tuple(batch, in_h, in_w, in_c, out_h, out_w, out_c, kernel_h, kernel_w,
                           stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right);
  }
  memory::desc Input() const {
    return {{batch, in_c, in_h, in_w}, memory::data_type::f32, memory::format_tag::nhwc};
  }
  memory::desc Output() const {
    return {{batch, out_c, out_h, out_w}, memory::data_type::f32, memory::format_tag::nhwc};
  }
  memory::desc Kernel(memory::format_tag layout) const {
    return {{out_c, in_c, kernel_h, kernel_w}, memory::data_type::f32, layout};
  }
};

const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One pass of one geometry: its primitive, which keeps the kernel in a layout of its choosing,
// and the reorder between that layout and HWIO. Building them costs more than running a small
// convolution, so each is built once; they then run from any thread, each call with its own
// scratchpad.
struct Plan {
  dnnl::primitive convolution;
  memory::desc kernel_hwio, kernel_packed, scratchpad;
  dnnl::reorder kernel_reorder;  // HWIO to packed; for the kernel gradient, packed to HWIO
  bool repack;
};

std::unique_ptr<Plan> MakePlan(Pass pass, const Geometry& g) {
  const auto& engine = Engine();
  const memory::dims strides{g.stride_h, g.stride_w};
  const memory::dims pad_low{g.pad_top, g.pad_left}, pad_high{g.pad_bottom, g.pad_right};
  const auto kernel_any = g.Kernel(memory::format_tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto direct = dnnl::algorithm::convolution_direct;
  const dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, direct, g.Input(), kernel_any, g.Output(),
      strides, pad_low, pad_high, attr);

  auto plan = std::make_unique<Plan>();
  plan->kernel_hwio = g.Kernel(memory::format_tag::hwio);
  if (pass == Pass::kForward) {
    plan->convolution = dnnl::convolution_forward(forward);
    plan->kernel_packed = forward.weights_desc();
    plan->scratchpad = forward.scratchpad_desc();
  } else if (pass == Pass::kInputGrad) {
    const dnnl::convolution_backward_data::primitive_desc backward(
        engine, direct, g.Input(), kernel_any, g.Output(), strides, pad_low, pad_high, forward,
        attr);
    plan->convolution = dnnl::convolution_backward_data(backward);
    plan->kernel_packed = backward.weights_desc();
    plan->scratchpad = backward.scratchpad_desc();
  } else {
    const dnnl::convolution_backward_weights::primitive_desc backward(
        engine, direct, g.Input(), kernel_any, g.Output(), strides, pad_low, pad_high, forward,
        attr);
    plan->convolution = dnnl::convolution_backward_weights(backward);
    plan->kernel_packed = backward.diff_weights_desc();
    plan->scratchpad = backward.scratchpad_desc();
  }
  plan->repack = plan->kernel_packed != plan->kernel_hwio;
  if (plan->repack) {
    const bool to_hwio = pass == Pass::kKernelGrad;
    const auto& from = to_hwio ? plan->kernel_packed : plan->kernel_hwio;
    const auto& to = to_hwio ? plan->kernel_hwio : plan->kernel_packed;
    plan->kernel_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(engine, from, engine, to));
  }
  return plan;
}

// `one_thread`: a plan that runs on its calling thread alone (oneDNN splits a primitive's work
// for the threads OpenMP offers when the primitive is built).
const Plan& GetPlan(Pass pass, const Geometry& g, bool one_thread) {
  static std::mutex mutex;
  static std::map<std::tuple<Pass, bool, decltype(g.Key())>, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[{pass, one_thread, g.Key()}];
  if (!plan) {
    const int threads = omp_get_max_threads();
    if (one_thread) omp_set_num_threads(1);
    plan = MakePlan(pass, g);
    omp_set_num_threads(threads);
  }
  return *plan;
}

// Grow-only memory, not initialized: oneDNN writes before it reads.
class Buffer {
 public:
  void* Get(size_t size) {
    if (size > size_) {
      data_.reset(new char[size]);
      size_ = size;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
};

// Runs one pass. For the forward pass `output` is written; for the input gradient, `input`;
// for the kernel gradient, `kernel`.
ffi::Error Run(Pass pass, const Geometry& g, float* input, float* kernel, float* output,
               bool one_thread = false) {
  try {
    const Plan& plan = GetPlan(pass, g, one_thread);
    const auto& engine = Engine();
    // Each calling thread keeps its buffers: fresh ones would be fresh pages, faulted in at
    // every call.
    thread_local Buffer scratch, packed;
    memory scratchpad(plan.scratchpad, engine, scratch.Get(plan.scratchpad.get_size()));
    memory kernel_hwio(plan.kernel_hwio, engine, kernel);
    memory kernel_packed =
        plan.repack ? memory(plan.kernel_packed, engine, packed.Get(plan.kernel_packed.get_size()))
                    : kernel_hwio;
    memory in(g.Input(), engine, input), out(g.Output(), engine, output);
    dnnl::stream stream(engine);
    switch (pass) {
      case Pass::kForward:
        if (plan.repack) plan.kernel_reorder.execute(stream, kernel_hwio, kernel_packed);
        plan.convolution.execute(stream, {{DNNL_ARG_SRC, in},
                                          {DNNL_ARG_WEIGHTS, kernel_packed},
                                          {DNNL_ARG_DST, out},
                                          {DNNL_ARG_SCRATCHPAD, scratchpad}});
        break;
      case Pass::kInputGrad:
        if (plan.repack) plan.kernel_reorder.execute(stream, kernel_hwio, kernel_packed);
        plan.convolution.execute(stream, {{DNNL_ARG_DIFF_DST, out},
                                          {DNNL_ARG_WEIGHTS, kernel_packed},
                                          {DNNL_ARG_DIFF_SRC, in},
                                          {DNNL_ARG_SCRATCHPAD, scratchpad}});
        break;
      case Pass::kKernelGrad:
        plan.convolution.execute(stream, {{DNNL_ARG_SRC, in},
                                          {DNNL_ARG_DIFF_DST, out},
                                          {DNNL_ARG_DIFF_WEIGHTS, kernel_packed},
                                          {DNNL_ARG_SCRATCHPAD, scratchpad}});
        if (plan.repack) plan.kernel_reorder.execute(stream, kernel_packed, kernel_hwio);
        break;
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

// The kernel gradient is a sum over the batch, which oneDNN splits over its threads: its bits
// would depend on the thread count. So it runs on fixed chunks of the batch, each on one thread
// (as many at once as there are threads), and the chunks' sums are added in their order.
constexpr int64_t kKernelGradChunk = 4;  // images

ffi::Error KernelGradInChunks(const Geometry& g, float* input, float* kernel, float* output) {
  const int64_t chunks = (g.batch + kKernelGradChunk - 1) / kKernelGradChunk;
  const int64_t kernel_size = g.kernel_h * g.kernel_w * g.in_c * g.out_c;
  thread_local Buffer sums;
  float* chunk_sums = static_cast<float*>(sums.Get(chunks * kernel_size * sizeof(float)));
  std::vector<ffi::Error> errors(chunks, ffi::Error::Success());
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t first = chunk * kKernelGradChunk;
    Geometry part = g;
    part.batch = std::min(kKernelGradChunk, g.batch - first);
    errors[chunk] = Run(Pass::kKernelGrad, part, input + first * g.in_h * g.in_w * g.in_c,
                        chunk_sums + chunk * kernel_size,
                        output + first * g.out_h * g.out_w * g.out_c, /*one_thread=*/true);
  }
  for (auto& error : errors) {
    if (error.failure()) return std::move(error);
  }
  std::copy(chunk_sums, chunk_sums + kernel_size, kernel);
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const float* sum = chunk_sums + chunk * kernel_size;
    for (int64_t i = 0; i < kernel_size; ++i) kernel[i] += sum[i];
  }
  return ffi::Error::Success();
}

// `padding` is (top, bottom, left, right).
Geometry MakeGeometry(ffi::Span<const int64_t> input, ffi::Span<const int64_t> kernel,
                      ffi::Span<const int64_t> output, ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> padding) {
  return {input[0],   input[1],   input[2],   input[3],   output[1],
          output[2],  output[3],  kernel[0],  kernel[1],  strides[0],
          strides[1], padding[0], padding[1], padding[2], padding[3]};
}

using F32 = ffi::Buffer<ffi::F32>;
using Dims = ffi::Span<const int64_t>;

ffi::Error Forward(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, Dims strides, Dims padding) {
  const auto g = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, padding);
  return Run(Pass::kForward, g, x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error InputGrad(F32 dy, F32 w, ffi::ResultBuffer<ffi::F32> dx, Dims strides, Dims padding) {
  const auto g = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding);
  return Run(Pass::kInputGrad, g, dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error KernelGrad(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dw, Dims strides, Dims padding) {
  const auto g = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding);
  return KernelGradInChunks(g, x.typed_data(), dw->typed_data(), dy.typed_data());
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Ret<F32>()
      .Attr<Dims>("strides")
      .Attr<Dims>("padding");
}

}  // namespace

// The SHA-256 of this file when it was compiled (setup.py).
extern "C" const char* OnednnConvSourceHash() { return SOURCE_SHA256; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvInputGrad, InputGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvKernelGrad, KernelGrad, Binding());
