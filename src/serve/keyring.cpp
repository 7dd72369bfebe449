// The server's keyring and policy names (include/epwa/server.hpp).
#include <nlohmann/json.hpp>

#include "epwa/platform.hpp"
#include "epwa/server.hpp"
#include "private_json.hpp"

namespace epwa {

std::string_view watermark_policy_name(WatermarkPolicy p) {
  switch (p) {
    case WatermarkPolicy::Off:
      return "off";
    case WatermarkPolicy::OptIn:
      return "opt-in";
    case WatermarkPolicy::Enforced:
      return "enforced";
  }
  return "off";
}

WatermarkPolicy watermark_policy_from_name(std::string_view s) {
  for (auto p : {WatermarkPolicy::Off, WatermarkPolicy::OptIn, WatermarkPolicy::Enforced})
    if (s == watermark_policy_name(p)) return p;
  throw Error("unknown watermark policy '" + std::string(s) + "' (off, opt-in or enforced)");
}

Keyring Keyring::load(const std::filesystem::path& path) {
  const std::string f = path_to_utf8(path);
  const nlohmann::json j =
      serve::read_private_json(path, "keyring", "{\"default\": id, \"keys\": {id: secret}}");
  if (!j.contains("keys") || !j["keys"].is_object() || j["keys"].empty())
    throw Error("keyring " + f + ": no \"keys\" object with at least one key");
  Keyring k;
  for (const auto& [id, secret] : j["keys"].items()) {
    if (!secret.is_string() || secret.get<std::string>().empty())
      throw Error("keyring " + f + ": key '" + id + "' is not a non-empty string");
    k.keys[id] = secret.get<std::string>();
  }
  if (j.contains("default")) {
    if (!j["default"].is_string() || !k.keys.count(j["default"].get<std::string>()))
      throw Error("keyring " + f + ": \"default\" does not name one of its keys");
    k.default_id = j["default"].get<std::string>();
  } else if (k.keys.size() == 1) {
    k.default_id = k.keys.begin()->first;
  } else {
    throw Error("keyring " + f + ": several keys and no \"default\"");
  }
  return k;
}

}  // namespace epwa
