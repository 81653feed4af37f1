// `nibble`: one binary, one subcommand per job. Errors are printed as one clear line and exit 1;
// usage errors exit 2 (CLI11's own codes for bad flags are kept).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>

#include "base/error.h"
#include "command.h"

namespace nibble {

namespace {
std::vector<CommandEntry>& commands() {
  static std::vector<CommandEntry> list;
  return list;
}
}  // namespace

bool register_command(const CommandEntry& entry) {
  commands().push_back(entry);
  return true;
}

const std::vector<CommandEntry>& registered_commands() { return commands(); }

}  // namespace nibble

int main(int argc, char** argv) {
  using namespace nibble;
  CLI::App app{"Nibble: quantize LLM weights to MXFP4 and run them fast on GPUs and CPUs.", "nibble"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print the help of every subcommand");
  auto entries = registered_commands();
  std::sort(entries.begin(), entries.end(),
            [](const CommandEntry& a, const CommandEntry& b) { return a.order < b.order; });
  for (const auto& entry : entries) entry.setup(*app.add_subcommand(entry.name, entry.description));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "nibble: error: %s\n", e.message().c_str());
    spdlog::debug("raised at {}:{}", e.file(), e.line());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "nibble: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
