// Subcommands register themselves: each tools/epwa/<name>.cpp defines one static Command.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace epwa::cli {

// `setup` adds the subcommand's options to `app` and returns the function that runs it (exit code).
using Setup = std::function<std::function<int()>(CLI::App& app)>;

struct Command {
  Command(std::string name, std::string help, Setup setup);
};

}  // namespace epwa::cli
