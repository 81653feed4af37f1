// Shared by the GPU tests (CUDA builds only).
#pragma once

#include <gtest/gtest.h>

#include "kernels/cuda/cuda_check.h"

// Skips the test (visibly, with the runtime's reason) where there is no usable CUDA device.
#define NIBBLE_REQUIRE_CUDA()                                            \
  do {                                                                   \
    ::nibble::DeviceInfo d;                                              \
    d.kind = ::nibble::DeviceKind::cuda;                                 \
    const ::nibble::Check present = ::nibble::cuda_device_present(d);    \
    if (!present.ok) GTEST_SKIP() << present.reason;                     \
  } while (0)
