// Subcommands of `nibble` register themselves from their own file:
//   static const bool registered = register_command({"version", "Print ...", 90, &setup});
// `setup` adds the subcommand's options to the CLI11 app it is given and its callback.
#pragma once

#include <CLI/CLI.hpp>

#include <vector>

namespace nibble {

struct CommandEntry {
  const char* name;
  const char* description;
  int order;                        // position in `nibble --help` (lower first)
  void (*setup)(CLI::App& command);
};

bool register_command(const CommandEntry& entry);
const std::vector<CommandEntry>& registered_commands();

}  // namespace nibble
