// Secrets files of the server (keyring, API keys): JSON that only its owner may read.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace epwa::serve {

// The JSON object in `path`; throws Error ("<what> <path>: ...") when the file is missing, readable
// by others, not valid JSON or not an object (`shape` shows what is expected).
nlohmann::json read_private_json(const std::filesystem::path& path, const std::string& what,
                                 const std::string& shape);

}  // namespace epwa::serve
