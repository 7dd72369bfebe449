#include "private_json.hpp"

#include <fstream>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"

namespace epwa::serve {

nlohmann::json read_private_json(const std::filesystem::path& path, const std::string& what,
                                 const std::string& shape) {
  check_private_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(what + " " + path_to_utf8(path) + ": cannot be read");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    throw Error(what + " " + path_to_utf8(path) + ": not valid JSON (" + shape + ")");
  }
  if (!j.is_object())
    throw Error(what + " " + path_to_utf8(path) + ": not a JSON object (" + shape + ")");
  return j;
}

}  // namespace epwa::serve
