// Host side of sm80_mxfp4_gemv: the reference pack (layout in sm80_mxfp4_gemv.h), the
// prepared device copy, and the LinearKernel (is_supported / can_implement / prepare / apply).
#include "kernels/cuda/sm80_mxfp4_gemv.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/mxfp4.h"
#include "kernels/cuda/cuda_check.h"

namespace nibble {

// ---- reference pack -------------------------------------------------------------------------

GemvPacked mxfp4_gemv_pack(const Mxfp4HostWeights& src, LinearEpilogue epilogue) {
  GemvPacked packed;
  const size_t bpr = mxfp4_blocks_per_row(src.k);
  const bool paired = epilogue == LinearEpilogue::swiglu;
  NIBBLE_CHECK(!paired || src.n % 2 == 0, "a SwiGLU pack needs an even row count, not {}", src.n);
  const size_t half = src.n / 2;
  // Paired, the halves pad to 16 rows: the same N padded to 32.
  packed.n_pad = (src.n + kGemvRowPad - 1) / kGemvRowPad * kGemvRowPad;
  packed.k_chunks = (src.k + kGemvChunkK - 1) / kGemvChunkK;
  const size_t tiles = packed.n_pad / kGemvRowsPerTile;
  packed.weights.assign(tiles * packed.k_chunks * 512, 0);
  packed.scales.assign(tiles * packed.k_chunks * 32, 0);
  for (size_t i = 0; i < src.n * bpr; ++i)
    if (src.scales[i] == 0 || src.scales[i] == 0xff) {
      packed.special_scales = true;
      break;
    }

  // The checkpoint row of packed row r (paired: rows g, g + 8 of a tile are gate and up of
  // one pair); src.n for a padding row.
  const auto source_row = [&](size_t r) -> size_t {
    if (!paired) return std::min(r, src.n);
    const size_t pair = r / 16 * 8 + r % 8;
    return pair >= half ? src.n : r % 16 < 8 ? pair : half + pair;
  };
  // Element (row, k) of the checkpoint: its 4-bit code, +0 past N or K.
  const auto code = [&](size_t row, size_t k) -> uint32_t {
    if (row >= src.n || k >= src.k) return 0;
    const uint8_t byte = src.blocks[row * bpr * kMxfp4BlockBytes + k / 2];
    return k % 2 == 0 ? byte & 0xf : byte >> 4;
  };
  const auto scale = [&](size_t row, size_t block) -> uint8_t {
    return row < src.n && block < bpr ? src.scales[row * bpr + block] : uint8_t(127);
  };

  ThreadPool::global().parallel_for(tiles, 1, [&](size_t begin, size_t end, size_t) {
    for (size_t tile = begin; tile < end; ++tile)
      for (size_t chunk = 0; chunk < packed.k_chunks; ++chunk) {
        const size_t at = tile * packed.k_chunks + chunk;
        for (size_t lane = 0; lane < 32; ++lane) {
          const size_t g = lane / 4, t = lane % 4;
          const size_t r0 = source_row(tile * 16 + g), r1 = source_row(tile * 16 + g + 8);
          uint8_t* out = &packed.weights[(at * 32 + lane) * 16];
          for (size_t j = 0; j < 2; ++j)
            for (size_t h = 0; h < 2; ++h) {
              const size_t kb = chunk * kGemvChunkK + 32 * j + 8 * t + 4 * h;
              uint8_t* word = out + 4 * (2 * j + h);
              for (size_t p = 0; p < 4; ++p) {  // rows g, g+8, g, g+8; k pairs kb, kb, kb+2, kb+2
                const size_t row = p % 2 ? r1 : r0, k = kb + 2 * (p / 2);
                word[p] = uint8_t(code(row, k) | code(row, k + 1) << 4);
              }
            }
        }
        for (size_t g = 0; g < 8; ++g) {
          const size_t r0 = source_row(tile * 16 + g), r1 = source_row(tile * 16 + g + 8);
          const size_t b0 = 2 * chunk;
          uint8_t* out = &packed.scales[(at * 8 + g) * 4];
          out[0] = scale(r0, b0), out[1] = scale(r0, b0 + 1);
          out[2] = scale(r1, b0), out[3] = scale(r1, b0 + 1);
        }
      }
  });
  return packed;
}

// ---- the kernel -----------------------------------------------------------------------------

namespace {

constexpr int kMinComputeCapability = 80;  // mma.sync m16n8k16 bf16 and cvt.rn.bf16x2.f32

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const void* host, size_t bytes, const std::string& what) : bytes_(bytes) {
    if (bytes == 0) return;
    NIBBLE_CUDA_CHECK(cudaMalloc(&ptr_, bytes), "{} bytes for {}", bytes, what);
    const cudaError_t status = cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice);
    if (status != cudaSuccess) {
      cudaFree(ptr_);
      NIBBLE_THROW("{} in cudaMemcpy of {} ({} bytes)", cuda_error_text(status), what, bytes);
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  const void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class GemvPrepared final : public PreparedWeights {
 public:
  GemvPrepared(const LinearDesc& layer, const GemvPacked& packed, const float* bias)
      : n_pad(packed.n_pad),
        k_chunks(packed.k_chunks),
        special_scales(packed.special_scales),
        weights(packed.weights.data(), packed.weights.size(), "packed weights of " + layer.name),
        scales(packed.scales.data(), packed.scales.size(), "packed scales of " + layer.name),
        bias(bias, bias ? layer.n * sizeof(float) : 0, "bias of " + layer.name) {}
  size_t bytes() const override { return weights.bytes() + scales.bytes() + bias.bytes(); }

  size_t n_pad, k_chunks;
  bool special_scales;
  DeviceBuffer weights, scales, bias;
};

class Sm80Mxfp4Gemv final : public LinearKernel {
 public:
  std::string_view name() const override { return "sm80_mxfp4_gemv"; }
  DeviceKind device_kind() const override { return DeviceKind::cuda; }

  Check is_supported(const DeviceInfo& device) const override {
    if (const Check present = cuda_device_present(device); !present.ok) return present;
    if (device.compute_capability < kMinComputeCapability)
      return Check::no(fmt::format(
          "needs compute capability >= {} (mma.sync bf16), device {} is sm_{}",
          kMinComputeCapability, device.name, device.compute_capability));
    int current = 0;
    if (cudaGetDevice(&current) != cudaSuccess || current != device.index) {
      cudaGetLastError();
      return Check::no(fmt::format("device {} is not the current CUDA device", device.index));
    }
    if (const int version = mxfp4_gemv_binary_version(); version < 0)
      return Check::no(fmt::format("this binary has no kernel image for sm_{} ({}); rebuild "
                                   "with NIBBLE_CUDA_ARCHITECTURES including it",
                                   device.compute_capability,
                                   cuda_error_text(cudaError_t(-version))));
    return Check::yes();
  }

  Check can_implement(const LinearDesc& layer) const override {
    if (layer.max_m > kGemvMaxM)
      return Check::no(fmt::format("M up to {} only (the decode GEMV; the layer asks for M {}..{})",
                                   kGemvMaxM, layer.min_m, layer.max_m));
    if (layer.k == 0) return Check::no("K = 0 (an empty product) is not run on the GPU");
    if (layer.n >= (size_t(1) << 31) || layer.k >= (size_t(1) << 31))
      return Check::no(fmt::format("N and K must be below 2^31 (N={}, K={})", layer.n, layer.k));
    if ((layer.n + kGemvRowPad) / kGemvRowsPerTile * ((layer.k + kGemvChunkK) / kGemvChunkK) >=
        (size_t(1) << 31) / 32)
      return Check::no(fmt::format("N x K = {} x {} is too large for 32-bit tile indices",
                                   layer.n, layer.k));
    if (layer.epilogue == LinearEpilogue::swiglu && layer.n % 2 != 0)
      return Check::no(fmt::format("the SwiGLU epilogue needs gate and up halves, N = {} is odd",
                                   layer.n));
    return Check::yes();  // any N; any K (the padded tail of the last block reads as zero)
  }

  bool supports_epilogue(LinearEpilogue e) const override {
    return e == LinearEpilogue::none || e == LinearEpilogue::swiglu;
  }
  bool supports_folded_norm() const override { return true; }

  std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer, const Mxfp4HostWeights& w,
                                           const float* bias) const override {
    NIBBLE_CHECK(w.n == layer.n && w.k == layer.k,
                 "layer {}: weights are {}x{}, the layer is {}x{}", layer.name, w.n, w.k, layer.n,
                 layer.k);
    NIBBLE_CHECK(!layer.has_bias || bias, "layer {}: declared with a bias, none given",
                 layer.name);
    const GemvPacked packed = mxfp4_gemv_pack(w, layer.epilogue);
    return std::make_unique<GemvPrepared>(layer, packed, layer.has_bias ? bias : nullptr);
  }

  void apply(const LinearDesc& layer, const PreparedWeights& weights, const ActivationView& act,
             const OutputView& out, void* stream) const override {
    if (act.m == 0 || layer.n == 0) return;
    NIBBLE_CHECK(act.m <= kGemvMaxM && act.m >= layer.min_m && act.m <= layer.max_m,
                 "layer {}: {} called with M={} (declared {}..{}, at most {})", layer.name,
                 name(), act.m, layer.min_m, layer.max_m, kGemvMaxM);
    NIBBLE_CHECK(act.format == layer.activation && (out.format == layer.output || out.norm.partials),
                 "layer {}: {} activations / {} output given, {} / {} declared", layer.name,
                 activation_format_name(act.format), output_format_name(out.format),
                 activation_format_name(layer.activation), output_format_name(layer.output));
    const auto* prepared = dynamic_cast<const GemvPrepared*>(&weights);
    NIBBLE_CHECK(prepared != nullptr, "layer {}: weights were not prepared by {}", layer.name,
                 name());
    NIBBLE_CHECK(layer.k == 0 || act.data, "layer {}: null activations", layer.name);
    NIBBLE_CHECK(out.data, "layer {}: null output", layer.name);
    if (out.norm.partials)
      NIBBLE_CHECK(layer.epilogue == LinearEpilogue::none && out.norm.n == layer.n &&
                       out.norm.residual && out.norm.weight,
                   "layer {}: a folded norm on the output needs a plain product {} wide, its "
                   "residual and its weight (got width {})",
                   layer.name, layer.n, out.norm.n);
    NIBBLE_CHECK(!act.norm.partials || act.norm.n > 0, "layer {}: a folded norm of width 0",
                 layer.name);

    GemvLaunch launch;
    launch.weights = prepared->weights.get();
    launch.scales = prepared->scales.get();
    launch.act = act.data;
    launch.bias = static_cast<const float*>(prepared->bias.get());
    launch.out = out.data;
    launch.n = layer.n, launch.k = layer.k, launch.m = act.m;
    launch.n_pad = prepared->n_pad, launch.k_chunks = prepared->k_chunks;
    launch.activation = act.format;
    launch.output = out.format;
    launch.special_scales = prepared->special_scales;
    launch.epilogue = layer.epilogue;
    launch.multiprocessors = multiprocessors();
    launch.chained = layer.chained;
    launch.act_norm = act.norm, launch.out_norm = out.norm;
    NIBBLE_CUDA_CHECK(cudaError_t(mxfp4_gemv_launch(launch, stream)), "{} on layer {} (M={})",
                      name(), layer.name, act.m);
  }

 private:
  static int multiprocessors() {
    static const int count = [] {
      int device = 0, sms = 0;
      if (cudaGetDevice(&device) != cudaSuccess ||
          cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        cudaGetLastError();
        return 132;
      }
      return sms;
    }();
    return count;
  }
};

}  // namespace

std::unique_ptr<LinearKernel> make_sm80_mxfp4_gemv_kernel() {
  return std::make_unique<Sm80Mxfp4Gemv>();
}

}  // namespace nibble
