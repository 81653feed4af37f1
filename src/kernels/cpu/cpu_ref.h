// cpu_ref: the scalar MXFP4 linear kernel every other backend is tested against.
//
// Written for obviousness, not speed: each weight row is decoded element by element with the
// format codecs (e2m1_decode * e8m0_decode), products are accumulated in double in K order,
// the bias is added in double, and the sum is rounded once to the output format. Any N, any K
// (the zero padding of the last block is never read), F32 and BF16 activations and outputs.
// A NaN scale (0xFF) makes every output of that row NaN, as the format defines.
//
// Its prepared weights are a plain copy of the checkpoint layout (format/mxfp4.h) and the bias;
// layout id "mxfp4_rows".
#pragma once

#include <memory>

#include "kernels/linear_kernel.h"

namespace nibble {

std::unique_ptr<LinearKernel> make_cpu_ref_kernel();

}  // namespace nibble
