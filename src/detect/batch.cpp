#include "epwa/batch.hpp"

#include <fstream>
#include <iterator>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"

namespace epwa {

BatchLine parse_batch_line(std::string_view line) {
  if (line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
  if (line.ends_with('\r')) line.remove_suffix(1);
  BatchLine out;
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded()) {
    check(!line.starts_with('{'), "line is not a valid JSON object");
    out.text = std::string(line);
    return out;
  }
  check(j.is_object(), std::string("line is JSON ") + j.type_name() +
                           ", not an object (give {\"text\": ...} or {\"tokens\": [...]})");
  out.is_object = true;
  out.object = std::move(j);
  return out;
}

std::string batch_key(const nlohmann::json& object, int64_t line) {
  if (object.is_object() && object.contains("id")) return "id:" + object["id"].dump();
  return "line:" + std::to_string(line);
}

bool BatchProgress::take(const std::string& key) {
  auto it = done.find(key);
  if (it == done.end() || it->second == 0) return false;
  --it->second;
  return true;
}

BatchProgress resume_batch_output(const std::filesystem::path& out) {
  BatchProgress p;
  if (!std::filesystem::exists(out)) return p;
  const std::string where = "--resume: '" + path_to_utf8(out) + "'";
  check(std::filesystem::is_regular_file(out), where + " is not a file");
  std::string bytes;
  {
    std::ifstream f(out, std::ios::binary);
    check(f.good(), where + " cannot be opened");
    bytes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  // An interrupted run may leave a last line without its newline: it is dropped and redone.
  const size_t complete = bytes.rfind('\n') == std::string::npos ? 0 : bytes.rfind('\n') + 1;
  if (complete < bytes.size()) std::filesystem::resize_file(out, complete);
  int64_t lineno = 0;
  for (size_t pos = 0; pos < complete;) {
    const size_t nl = bytes.find('\n', pos);
    ++lineno;
    const auto j = nlohmann::json::parse(bytes.begin() + pos, bytes.begin() + nl, nullptr, false);
    check(j.is_object() && j.contains("line") && j["line"].is_number_integer(),
          where + " line " + std::to_string(lineno) + " is not a batch result");
    ++p.done[batch_key(j, j["line"].get<int64_t>())];
    p.any_detected = p.any_detected || j.value("detected", false) == true;
    p.any_error = p.any_error || j.contains("error");
    pos = nl + 1;
  }
  return p;
}

}  // namespace epwa
