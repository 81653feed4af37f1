// `nibble kernels` end to end: the listing, a layer's selection, and a bad override.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace nibble {
namespace {

using ::testing::HasSubstr;

struct CliRun {
  std::string output;
  int status = -1;
};

CliRun run_nibble(const std::string& args) {
  CliRun r;
  FILE* pipe = popen((std::string(NIBBLE_BIN) + " " + args + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buffer[4096];
  while (size_t got = fread(buffer, 1, sizeof buffer, pipe)) r.output.append(buffer, got);
  const int status = pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CmdKernels, ListsEveryCpuKernelWithItsStatus) {
  const CliRun r = run_nibble("kernels");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("cpu: "));
  EXPECT_THAT(r.output, HasSubstr("cpu_ref"));
  EXPECT_THAT(r.output, HasSubstr("supported"));
  EXPECT_THAT(r.output, HasSubstr("cuda: "));
}

TEST(CmdKernels, ShowsTheSelectionForALayerAndHonoursForcing) {
  CliRun r = run_nibble("kernels --n 2880 --k 172 --max-m 64");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("N=2880 K=172"));
  EXPECT_THAT(r.output, HasSubstr("first in priority order"));
  r = run_nibble("kernels --n 7 --k 64 --mxfp4-kernel cpu_ref");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("M 1..512 -> cpu_ref: forced by --mxfp4-kernel"));
}

TEST(CmdKernels, ABadOverrideIsAClearError) {
  const CliRun r = run_nibble("kernels --mxfp4-kernel dense=nonesuch");
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.output, HasSubstr("nibble: error: --mxfp4-kernel \"dense=nonesuch\": unknown kernel \"nonesuch\""));
  EXPECT_THAT(r.output, HasSubstr("registered kernels: "));
}

}  // namespace
}  // namespace nibble
