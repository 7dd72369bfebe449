// Bearer API keys (include/epwa/server.hpp): loaded from an owner-only file, stored as SHA-256
// digests, compared in constant time.
#include <nlohmann/json.hpp>

#include "epwa/platform.hpp"
#include "epwa/server.hpp"
#include "private_json.hpp"
#include "watermark/sha256.hpp"

namespace epwa {

namespace {

std::string sha256(std::string_view s) {
  detail::Sha256 h;
  h.update(s.data(), s.size());
  const detail::Digest d = h.finish();
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

// Equal-length digests compared without data-dependent branches (no early exit on a mismatch).
bool same_digest(const std::string& a, const std::string& b) {
  unsigned diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

}  // namespace

ApiKeys ApiKeys::load(const std::filesystem::path& path) {
  const std::string f = path_to_utf8(path);
  const nlohmann::json j = serve::read_private_json(
      path, "API keys", "{\"keys\": [{\"name\", \"key\", \"roles\"}, ...]}");
  if (!j.contains("keys") || !j["keys"].is_array() || j["keys"].empty())
    throw Error("API keys " + f + ": no \"keys\" array with at least one key");
  ApiKeys out;
  for (const auto& k : j["keys"]) {
    if (!k.is_object() || !k.contains("name") || !k["name"].is_string() || !k.contains("key") ||
        !k["key"].is_string() || !k.contains("roles") || !k["roles"].is_array())
      throw Error("API keys " + f + ": each key needs \"name\", \"key\" and \"roles\"");
    Key key;
    key.name = k["name"].get<std::string>();
    const std::string secret = k["key"].get<std::string>();
    if (secret.size() < 16)
      throw Error("API keys " + f + ": key '" + key.name + "' is shorter than 16 characters");
    key.digest = sha256(secret);
    for (const auto& r : k["roles"]) {
      if (r == "generate")
        key.roles |= kGenerate;
      else if (r == "detect")
        key.roles |= kDetect;
      else if (r == "admin")
        key.roles |= kAdmin;
      else
        throw Error("API keys " + f + ": key '" + key.name + "' has an unknown role " + r.dump() +
                    " (generate, detect, admin)");
    }
    for (const Key& other : out.keys)
      if (other.name == key.name || other.digest == key.digest)
        throw Error("API keys " + f + ": key '" + key.name + "' is given twice");
    out.keys.push_back(std::move(key));
  }
  return out;
}

const ApiKeys::Key* ApiKeys::find(std::string_view bearer) const {
  const std::string d = sha256(bearer);
  const Key* hit = nullptr;
  for (const Key& k : keys)  // every key compared, whole digests: no early exit
    if (same_digest(k.digest, d)) hit = &k;
  return hit;
}

}  // namespace epwa
