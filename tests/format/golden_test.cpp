// Our codecs against golden vectors made by independent implementations (ml_dtypes and
// PyTorch, scripts/device/golden_vectors.py; files and versions in tests/data/golden/). Where
// the generators define out-of-range values differently from us, the test checks that the
// difference is exactly the documented one (fp8.h), not just that it exists.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/fp8.h"

namespace nibble {
namespace {

template <typename T>
std::vector<T> load(const std::string& name) {
  const std::string path = std::string(NIBBLE_SOURCE_DIR) + "/tests/data/golden/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing golden file " << path;
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(bytes.size() % sizeof(T), 0u) << path;
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

uint32_t bits_of(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

class Golden : public ::testing::Test {
 protected:
  void SetUp() override {
    inputs_ = load<float>("f32_inputs.bin");
    ASSERT_GT(inputs_.size(), 10000u);
  }
  template <typename T>
  std::vector<T> per_input(const std::string& name) {
    auto v = load<T>(name);
    EXPECT_EQ(v.size(), inputs_.size()) << name;
    v.resize(inputs_.size());
    return v;
  }
  std::vector<float> inputs_;
};

TEST_F(Golden, E2M1EncodeMatchesMlDtypes) {
  // ml_dtypes float4_e2m1fn saturates to +-6 (Inf too), as we do: every non-NaN input matches.
  const auto codes = per_input<uint8_t>("e2m1_ml_dtypes.bin");
  size_t compared = 0;
  for (size_t i = 0; i < inputs_.size(); ++i) {
    if (std::isnan(inputs_[i])) continue;
    ++compared;
    EXPECT_EQ(int(e2m1_encode(inputs_[i])), int(codes[i] & 0xf))
        << "x = " << inputs_[i] << " (0x" << std::hex << bits_of(inputs_[i]) << ")";
  }
  EXPECT_GT(compared, 10000u);
}

TEST_F(Golden, E2M1AndE8M0DecodeMatchMlDtypes) {
  const auto e2m1 = load<float>("e2m1_decode_ml_dtypes.bin");
  ASSERT_EQ(e2m1.size(), 16u);
  for (int c = 0; c < 16; ++c) EXPECT_EQ(bits_of(e2m1_decode(uint8_t(c))), bits_of(e2m1[c])) << c;
  const auto e8m0 = load<float>("e8m0_decode_ml_dtypes.bin");
  ASSERT_EQ(e8m0.size(), 256u);
  for (int c = 0; c < 256; ++c) {
    if (std::isnan(e8m0[c])) {
      EXPECT_TRUE(std::isnan(e8m0_decode(uint8_t(c)))) << c;
    } else {
      EXPECT_EQ(bits_of(e8m0_decode(uint8_t(c))), bits_of(e8m0[c])) << "code " << c;
    }
  }
  EXPECT_TRUE(std::isnan(e8m0[255]));
}

TEST_F(Golden, Fp8DecodeMatchesMlDtypes) {
  const auto e4m3 = load<float>("e4m3_decode_ml_dtypes.bin"), e5m2 = load<float>("e5m2_decode_ml_dtypes.bin");
  ASSERT_EQ(e4m3.size(), 256u);
  ASSERT_EQ(e5m2.size(), 256u);
  for (int c = 0; c < 256; ++c) {
    EXPECT_EQ(std::isnan(fp8_e4m3_decode(uint8_t(c))), std::isnan(e4m3[c])) << c;
    if (!std::isnan(e4m3[c])) {
      EXPECT_EQ(bits_of(fp8_e4m3_decode(uint8_t(c))), bits_of(e4m3[c])) << c;
    }
    EXPECT_EQ(std::isnan(fp8_e5m2_decode(uint8_t(c))), std::isnan(e5m2[c])) << c;
    if (!std::isnan(e5m2[c])) {
      EXPECT_EQ(bits_of(fp8_e5m2_decode(uint8_t(c))), bits_of(e5m2[c])) << c;
    }
  }
}

// E4M3FN: ml_dtypes and PyTorch turn |x| > 464 (past the rounding boundary of 448) and Inf into
// NaN; we saturate to +-448 (fp8.h). Everything else matches bit for bit.
void check_e4m3(float x, uint8_t theirs, const char* who, size_t* saturated) {
  const uint8_t ours = fp8_e4m3_encode(x);
  if (std::isnan(x)) {
    EXPECT_TRUE(std::isnan(fp8_e4m3_decode(ours)) && std::isnan(fp8_e4m3_decode(theirs))) << who;
  } else if (std::fabs(x) > 464.0f) {
    EXPECT_EQ(ours, std::signbit(x) ? 0xfe : 0x7e) << who << " x = " << x;
    EXPECT_TRUE(std::isnan(fp8_e4m3_decode(theirs))) << who << " x = " << x;
    ++*saturated;
  } else {
    EXPECT_EQ(int(ours), int(theirs)) << who << " x = " << x << " (0x" << std::hex << bits_of(x) << ")";
  }
}

// E5M2: ours with saturate = false is IEEE rounding, as both generators do: all match.
void check_e5m2(float x, uint8_t theirs, const char* who) {
  const uint8_t ours = fp8_e5m2_encode(x, false);
  if (std::isnan(x)) {
    EXPECT_TRUE(std::isnan(fp8_e5m2_decode(ours)) && std::isnan(fp8_e5m2_decode(theirs))) << who;
  } else {
    EXPECT_EQ(int(ours), int(theirs)) << who << " x = " << x << " (0x" << std::hex << bits_of(x) << ")";
  }
}

TEST_F(Golden, Fp8EncodeMatchesMlDtypesAndTorch) {
  const auto e4_ml = per_input<uint8_t>("e4m3_ml_dtypes.bin"), e4_torch = per_input<uint8_t>("e4m3_torch.bin");
  const auto e5_ml = per_input<uint8_t>("e5m2_ml_dtypes.bin"), e5_torch = per_input<uint8_t>("e5m2_torch.bin");
  size_t saturated = 0;
  for (size_t i = 0; i < inputs_.size(); ++i) {
    check_e4m3(inputs_[i], e4_ml[i], "ml_dtypes", &saturated);
    check_e4m3(inputs_[i], e4_torch[i], "torch", &saturated);
    check_e5m2(inputs_[i], e5_ml[i], "ml_dtypes");
    check_e5m2(inputs_[i], e5_torch[i], "torch");
    if (HasFailure()) break;
  }
  EXPECT_GT(saturated, 0u);  // the documented difference was exercised
}

TEST_F(Golden, Fp8EncodeOfEveryBf16MatchesMlDtypes) {
  const auto e4 = load<uint8_t>("e4m3_from_bf16_ml_dtypes.bin"), e5 = load<uint8_t>("e5m2_from_bf16_ml_dtypes.bin");
  ASSERT_EQ(e4.size(), 65536u);
  ASSERT_EQ(e5.size(), 65536u);
  size_t saturated = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const float x = bf16_to_f32(uint16_t(b));
    check_e4m3(x, e4[b], "ml_dtypes (BF16)", &saturated);
    check_e5m2(x, e5[b], "ml_dtypes (BF16)");
    if (HasFailure()) break;
  }
  // The documented difference, and only there: the BF16 patterns above 464 in magnitude, from
  // 0x43e9 (464 = 0x43e8) up to Inf (0x7f80), of both signs.
  if (!HasFailure()) {
    EXPECT_EQ(saturated, 2u * (0x7f80 - 0x43e8));
  }
}

TEST_F(Golden, Bf16AndF16CastsMatchTorch) {
  const auto bf16 = per_input<uint16_t>("bf16_torch.bin"), f16 = per_input<uint16_t>("f16_torch.bin");
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const float x = inputs_[i];
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(x))) && std::isnan(bf16_to_f32(bf16[i])));
      EXPECT_TRUE(std::isnan(fp16_to_f32(f32_to_fp16(x))) && std::isnan(fp16_to_f32(f16[i])));
      continue;
    }
    EXPECT_EQ(f32_to_bf16(x), bf16[i]) << "x = " << x << " (0x" << std::hex << bits_of(x) << ")";
    EXPECT_EQ(f32_to_fp16(x), f16[i]) << "x = " << x << " (0x" << std::hex << bits_of(x) << ")";
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace nibble
