// Which linear layers of a model run in MXFP4 and on which kernel: the one place where a
// model's loader turns a tensor into a Linear (dense or MXFP4), and records why.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "format/mxfp4.h"
#include "kernels/registry.h"
#include "quant/model_info.h"
#include "quant/selection.h"
#include "model/dense_linear.h"
#include "model/linear.h"
#include "model/tensor_source.h"

namespace nibble {

// The layer roles of --mxfp4-layers tokens: qkv = q,k,v; o; mlp = gate,up,down; lm_head.
enum class LinearRole : uint8_t { q, k, v, o, gate, up, down, lm_head };
const char* linear_role_name(LinearRole role);

struct ModelLoadOptions {
  std::string mxfp4_layers = "qkv,o,mlp";  // --mxfp4-layers (default for dense models)
  std::vector<std::string> include, exclude;  // --include / --exclude globs on module names
  ScaleRule scale_rule = ScaleRule::ocp;   // quantizing at load
  KernelOverrides kernels;                 // --mxfp4-kernel / NIBBLE_MXFP4_KERNEL
  DeviceInfo device;                       // where the kernels run (default: this CPU)
  size_t max_batch_tokens = 256;           // largest M of a forward (prompt chunk)
  // What the linear layers are fed. The CPU layers take F32 only; the CUDA executor feeds F32
  // (default: exact to ~2^-16 through two BF16 terms) or BF16 (--cuda-activations bf16).
  ActivationFormat activation = ActivationFormat::f32;
  // Layers that read one input (q, k, v; gate, up) run as one product when all are MXFP4
  // (make_linear_group), and the CUDA executor folds a norm between two products into them
  // (FoldedNorm); false keeps them apart (--no-fuse), for comparison.
  bool fuse_linears = true;
  // The CUDA executor replays each decode shape's forward as a CUDA graph (--no-cuda-graphs:
  // launch every kernel from the host each time).
  bool cuda_graphs = true;
};

// Makes the full-precision layers where they run: empty = DenseLinear on the CPU; the CUDA
// executor passes one that uploads the weights and runs them through cuBLAS.
using DenseLinearMaker = std::function<std::unique_ptr<Linear>(
    const std::string& name, std::shared_ptr<const DenseWeights> weights, std::vector<float> bias)>;

struct LinearPlanEntry {
  std::string name;        // "model.layers.0.self_attn.q_proj"
  LinearRole role = LinearRole::q;
  size_t n = 0, k = 0;
  bool mxfp4 = false;
  bool prequantized = false;  // read as MXFP4 from the checkpoint
  std::string kernel;      // "cpu_simd", "dense_f32", ...
  std::string reason;      // why it is (not) MXFP4; "K = 172 padded to 192 in the last block"
  size_t weight_bytes = 0;
};

// The load-time layer selection: src/quant's plan_layers() over the checkpoint's linear
// modules (tokens, --include/--exclude globs, tied-embedding gate), with one difference: its
// K % 32 gate exists because a written checkpoint must stay readable by other tools; at load
// nothing is written and the kernels zero-pad the last block exactly, so such layers ARE
// quantized here (the reason says so).
class LayerSelection {
 public:
  LayerSelection(const TensorSource& tensors, bool tied_embeddings, const ModelLoadOptions& options);
  ~LayerSelection();
  struct Decision {
    bool mxfp4 = false;
    bool prequantized = false;
    const LinearModule* module = nullptr;  // null: the checkpoint has no such module
    std::string reason;
  };
  Decision decide(const std::string& module_name) const;
  // Gates that fired and globs that matched nothing.
  const std::vector<std::string>& warnings() const { return warnings_; }
  bool lm_head_asked() const { return tokens_.lm_head; }
  std::string tokens() const { return tokens_.to_string(); }

 private:
  std::unique_ptr<ModelInfo> info_;
  LayerTokens tokens_;
  LayerPlan plan_;
  std::vector<std::string> warnings_;
};

// Builds the linear layer `name` (tensor `name.weight`, optional `name.bias`), [n, k], as
// MXFP4 (on a registry kernel for options.device, fed options.activation) or dense (through
// `dense`, DenseLinear when empty) per the selection. `tied_weights`, when not null, is the
// embedding table an untied lm_head would not have: a tied classifier stays dense (reason
// logged) and shares it.
std::unique_ptr<Linear> make_linear(const TensorSource& tensors, const std::string& name,
                                    LinearRole role, size_t n, size_t k, bool has_bias,
                                    const LayerSelection& selection,
                                    const ModelLoadOptions& options,
                                    std::shared_ptr<const DenseWeights> tied_weights,
                                    std::vector<LinearPlanEntry>& plan,
                                    const DenseLinearMaker& dense = {});

// Layers that read the same input, [n_i, k] each, as the model uses them: one product over
// their stacked rows when every member is MXFP4 and ModelLoadOptions::fuse_linears (as vLLM's
// QKVParallelLinear and MergedColumnParallelLinear), else the members one by one. At decode
// that is one GEMV launch instead of three (q, k, v) or two (gate, up), over more rows: the
// GEMV spreads 32-row groups over the SMs, and Llama's k and v alone have 32 groups each.
//
// The output of m rows is [m, width()] floats holding member i's [m, n_i] matrix at
// out + offset(i, m), rows stride(i) apart: interleaved per row when fused, one block per
// member when not. Consumers read through offset/stride, so both cases cost no copy.
//
// A fused group may carry an epilogue (make_linear_group's `epilogue`, where the device's
// kernels apply it): with LinearEpilogue::swiglu the two members are gate and up and the
// output is [m, n_0] = silu(gate) * up in the activation format (ModelLoadOptions::activation),
// the next layer's input: one launch, where the plain group needs a second for the activation.
class LinearGroup {
 public:
  LinearGroup() = default;
  LinearGroup(std::unique_ptr<Linear> fused, std::vector<size_t> widths);
  explicit LinearGroup(std::vector<std::unique_ptr<Linear>> members);

  bool fused() const { return fused_ != nullptr; }
  LinearEpilogue epilogue() const { return fused_ ? fused_->epilogue() : LinearEpilogue::none; }
  size_t width() const;
  size_t offset(size_t member, size_t m) const;
  size_t stride(size_t member) const;
  // CPU layers: x [m, k] F32 -> out [m, width()] in the layout above (no epilogue).
  void forward(const float* x, size_t m, float* out) const;
  // Device layers: x on the device -> out on the device: [x.m, width()] F32, or with the
  // epilogue [x.m, n_0] in the activation format.
  void forward_on_device(const ActivationView& x, const OutputView& out, void* stream) const;
  // Whether every layer it runs reads activations with a FoldedNorm (the group is never the
  // product before one: its output is not the residual stream's width).
  bool folds_norm() const;
  // The layers it runs: the fused one, or the members.
  std::vector<const Linear*> linears() const;
  size_t weight_bytes() const;

 private:
  std::unique_ptr<Linear> fused_;
  std::vector<std::unique_ptr<Linear>> members_;
  std::vector<size_t> widths_, columns_;  // n_i, and the first column of each member
};

struct LinearGroupMember {
  std::string name;  // "model.layers.0.self_attn.k_proj"
  LinearRole role = LinearRole::q;
  size_t n = 0;
};

// Resolves each member as make_linear does (a plan entry each, reasons kept); then, when all are MXFP4 and
// options.fuse_linears, one QuantLinear named fused_name over their stacked rows and biases
// (each entry's reason says so; its weight_bytes is its share of the fused layer's). The fused
// product takes `epilogue` when every kernel that could serve it on options.device applies it
// (LinearGroup::epilogue() tells; the caller runs the activation itself otherwise).
LinearGroup make_linear_group(const TensorSource& tensors, const std::string& fused_name,
                              const std::vector<LinearGroupMember>& members, size_t k,
                              bool has_bias, const LayerSelection& selection,
                              const ModelLoadOptions& options, std::vector<LinearPlanEntry>& plan,
                              const DenseLinearMaker& dense = {},
                              LinearEpilogue epilogue = LinearEpilogue::none);

// Dense weights from a tensor (F32 kept F32, BF16 kept BF16, F16 widened to F32).
std::shared_ptr<DenseWeights> dense_weights_from(const TensorView& tensor, const std::string& where);

// "MXFP4: 30 layers (qkv, o, mlp) on cpu_simd; full precision: lm_head (tied to the embedding)"
std::string summarize_plan(const std::vector<LinearPlanEntry>& plan);

}  // namespace nibble
