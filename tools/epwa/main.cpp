// epwa: the command-line front end. Thin: parse flags, call the library, print.
#include <fmt/core.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"
#include "common.hpp"
#include "epwa/platform.hpp"

namespace epwa::cli {
namespace {
struct Entry {
  std::string name, help;
  Setup setup;
};
std::vector<Entry>& registry() {
  static std::vector<Entry> r;
  return r;
}
}  // namespace

Command::Command(std::string name, std::string help, Setup setup) {
  registry().push_back({std::move(name), std::move(help), std::move(setup)});
}

}  // namespace epwa::cli

int main(int argc, char** argv) {
  using namespace epwa::cli;
  // UTF-8 arguments on every OS (file names, prompts): src/platform/.
  std::vector<std::string> args = epwa::utf8_arguments(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  arg_ptrs.push_back(nullptr);
  argc = static_cast<int>(args.size());
  argv = arg_ptrs.data();
  CLI::App app{"epwa: MoE inference with expert-pathway watermarking (EPW-A)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "epwa 0.1.0");
  app.option_defaults()->always_capture_default();  // --help shows every default
  std::vector<std::function<int()>> runners(registry().size());
  std::vector<CLI::App*> subs;
  for (size_t i = 0; i < registry().size(); ++i) {
    auto& e = registry()[i];
    CLI::App* sub = app.add_subcommand(e.name, e.help);
    runners[i] = e.setup(*sub);
    subs.push_back(sub);
  }
  check_value_syntax(app);
  if (argc > 1 && argv[1][0] != '-') {
    const std::string name = argv[1];
    bool known = false;
    for (const auto& e : registry()) known = known || e.name == name;
    if (!known) {
      std::fprintf(stderr, "epwa: error: unknown command '%s' (see epwa --help)\n", argv[1]);
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "epwa: error: %s\n", plain_parse_error(e).c_str());
    return 2;
  }
  try {
    for (size_t i = 0; i < subs.size(); ++i)
      if (subs[i]->parsed()) return runners[i]();
  } catch (const std::exception& e) {  // epwa::Error and the rest alike
    std::fprintf(stderr, "epwa: error: %s\n", e.what());
    return 2;  // as grep: 1 is detect's "not watermarked"
  }
  return 2;
}
