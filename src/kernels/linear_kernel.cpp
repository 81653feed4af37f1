#include "kernels/linear_kernel.h"

namespace nibble {

const char* device_kind_name(DeviceKind kind) { return kind == DeviceKind::cpu ? "cpu" : "cuda"; }

const char* activation_format_name(ActivationFormat f) {
  return f == ActivationFormat::f32 ? "f32" : "bf16";
}

const char* linear_epilogue_name(LinearEpilogue e) {
  return e == LinearEpilogue::none ? "no" : "swiglu";
}

const char* output_format_name(OutputFormat f) { return f == OutputFormat::f32 ? "f32" : "bf16"; }

const char* layer_class_name(LayerClass c) { return c == LayerClass::dense ? "dense" : "moe"; }

const char* activation_rounding_name(ActivationRounding r) {
  return r == ActivationRounding::none ? "f32 activations" : "int8 activations (per 32-block)";
}

}  // namespace nibble
