// models/stories260K ships what its licence asks for: the MIT text of its upstream
// (karpathy/llama2.c) in LICENSE, a model card naming that upstream precisely, and sha256 lines
// in the card that are those of the files shipped beside it.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "test_files.h"

namespace {

namespace fs = std::filesystem;
const fs::path kDir = fs::path(NIBBLE_SOURCE_DIR) / "models/stories260K";

using nibble::test::read_text;

// sha256 of a file by the system's sha256sum (coreutils), "" when it cannot run.
std::string sha256_of(const fs::path& file) {
  const std::string cmd = "sha256sum '" + file.string() + "'";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return {};
  char buf[65] = {};
  const size_t n = std::fread(buf, 1, 64, pipe);
  pclose(pipe);
  return n == 64 ? std::string(buf, 64) : std::string();
}

TEST(ModelCard, LicenceIsLlama2cMitText) {
  const std::string licence = read_text(kDir / "LICENSE");
  ASSERT_FALSE(licence.empty()) << "models/stories260K/LICENSE is missing";
  EXPECT_EQ(licence.rfind("MIT License\n\nCopyright (c) 2023 Andrej\n", 0), 0u) << licence;
  EXPECT_NE(licence.find("The above copyright notice and this permission notice shall be "
                         "included in all\ncopies or substantial portions of the Software."),
            std::string::npos);
  EXPECT_NE(licence.find("THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND"),
            std::string::npos);
}

TEST(ModelCard, NamesUpstreamAndLicence) {
  const std::string card = read_text(kDir / "README.md");
  for (const char* s : {"karpathy/llama2.c", "karpathy/tinyllamas", "stories260K", "MIT",
                        "(LICENSE)"})
    EXPECT_NE(card.find(s), std::string::npos) << "the model card does not mention " << s;
}

TEST(ModelCard, Sha256LinesMatchTheShippedFiles) {
  const std::string card = read_text(kDir / "README.md");
  // "`FILE` — ... sha256 `HEX`": each file's bullet carries its checksum.
  size_t checked = 0;
  for (const char* file : {"stories260K.bin", "tok512.bin", "greedy_once_upon_a_time.txt"}) {
    SCOPED_TRACE(file);
    const std::regex line("`" + std::string(file) + R"(` [^`]*sha256 `([0-9a-f]{64})`)");
    std::smatch m;
    ASSERT_TRUE(std::regex_search(card, m, line)) << "no sha256 line for " << file;
    const std::string actual = sha256_of(kDir / file);
    ASSERT_EQ(actual.size(), 64u) << "sha256sum did not run";
    EXPECT_EQ(m[1].str(), actual);
    ++checked;
  }
  EXPECT_EQ(checked, 3u);
}

}  // namespace
