#include "epwa/files.hpp"

#include <iterator>
#include <random>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"

namespace fs = std::filesystem;

namespace epwa {

std::ifstream open_input_file(const fs::path& path, std::string_view what) {
  const std::string name = std::string(what) + " '" + path_to_utf8(path) + "'";
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  check(fs::exists(st), name + " not found");
  check(!fs::is_directory(st), name + " is a directory, not a file");
  std::ifstream f(path, std::ios::binary);
  check(f.good(), name + " cannot be opened");
  return f;
}

std::string read_input_file(const fs::path& path, std::string_view what) {
  std::ifstream f = open_input_file(path, what);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  check(!f.bad(), std::string(what) + " '" + path_to_utf8(path) + "' cannot be read");
  return bytes;
}

std::vector<std::string> read_input_lines(const fs::path& path, std::string_view what) {
  std::ifstream f = open_input_file(path, what);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(std::move(line));
  }
  check(!f.bad(), std::string(what) + " '" + path_to_utf8(path) + "' cannot be read");
  return out;
}

namespace {
// The absolute, symlink-resolved form of `p`, for the part of it that exists.
fs::path resolved(const fs::path& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal() : r;
}

bool inside(const fs::path& p, const fs::path& dir) {
  auto it = p.begin();
  for (const auto& part : dir) {
    if (part.empty()) continue;  // a trailing separator
    if (it == p.end() || *it != part) return false;
    ++it;
  }
  return true;
}
}  // namespace

void check_output_not_input(const fs::path& out, std::initializer_list<fs::path> inputs,
                            std::string_view flag) {
  const fs::path o = resolved(out);
  for (const fs::path& in : inputs) {
    if (in.empty()) continue;  // an optional input not given
    const fs::path i = resolved(in);
    std::error_code ec;
    const bool same = o == i || fs::equivalent(out, in, ec);
    check(!same, std::string(flag) + " '" + path_to_utf8(out) + "' is the input '" +
                     path_to_utf8(in) + "': give another output path");
    check(!(fs::is_directory(i) && inside(o, i)),
          std::string(flag) + " '" + path_to_utf8(out) + "' is inside the input folder '" +
              path_to_utf8(in) + "': give a path outside it");
  }
}

void write_via_temp(const fs::path& out, const std::function<void(const fs::path& tmp)>& write) {
  check(!fs::is_directory(out),
        "output '" + path_to_utf8(out) + "' is a directory: give a file path");
  fs::path tmp = out;
  tmp += ".tmp-" + std::to_string(std::random_device{}());
  try {
    write(tmp);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace epwa
