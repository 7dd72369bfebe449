// Reading one .safetensors file: 8-byte little-endian header length, a JSON header, then the data.
// Every check runs before a view is handed out, so a file that loads is safe to read anywhere.
#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/safetensors.hpp"
#include "io/safetensors_dtype.hpp"

namespace epwa {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // real headers are a few MB at most
constexpr int kMaxJsonDepth = 8;                   // a valid header nests 3 deep

std::string str(uint64_t v) {
  return std::to_string(v);
}

// Nesting depth of a JSON text, ignoring brackets inside strings. Checked before parsing so that a
// hostile header of a million '[' costs nothing.
int json_depth(std::string_view text) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > kMaxJsonDepth) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

// A JSON integer in [0, INT64_MAX], or nullopt.
std::optional<int64_t> non_negative_int(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return static_cast<int64_t>(u);
    return std::nullopt;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  return std::nullopt;
}

struct Entry {
  std::string name;
  std::optional<DType> dtype;  // none: bytes (raw_dtype U8 or F8_E4M3)
  std::string raw_dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& file, const std::string& name, const json& v,
                  uint64_t data_size) {
  const std::string where = file + ": tensor '" + name + "'";
  check(v.is_object(), where + ": header entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    check(v.contains(field), where + ": header entry has no '" + field + "'");

  const json& jd = v["dtype"];
  check(jd.is_string(), where + ": 'dtype' is not a string");
  const auto& ds = jd.get_ref<const std::string&>();
  const auto dtype = st::dtype_from_safetensors(ds);
  if (!dtype && ds != "U8" && ds != "F8_E4M3") {
    if (st::is_known_safetensors_dtype(ds))
      throw Error(file + ": unsupported dtype " + ds + " for tensor '" + name +
                  "' (epwa reads F32, F16, BF16, and U8 / F8_E4M3 as bytes)");
    throw Error(file + ": unknown dtype '" + ds + "' for tensor '" + name + "'");
  }

  const json& js = v["shape"];
  check(js.is_array(), where + ": 'shape' is not an array");
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (const json& d : js) {
    const auto dim = non_negative_int(d);
    check(dim.has_value(), where + ": shape value " + d.dump() + " is not a non-negative integer");
    if (*dim != 0 && numel > std::numeric_limits<int64_t>::max() / *dim)
      throw Error(where + ": element count of shape " + js.dump() + " overflows");
    numel *= *dim;
    shape.push_back(*dim);
  }
  const int64_t elem = dtype ? dtype_bytes(*dtype, 1) : 1;
  check(numel <= std::numeric_limits<int64_t>::max() / elem,
        where + ": byte size of shape " + js.dump() + " overflows");

  const json& jo = v["data_offsets"];
  check(jo.is_array() && jo.size() == 2, where + ": 'data_offsets' is not an array of 2 integers");
  const auto b = non_negative_int(jo[0]), e = non_negative_int(jo[1]);
  check(b && e, where + ": 'data_offsets' " + jo.dump() + " are not non-negative integers");
  check(*b <= *e, where + ": 'data_offsets' " + jo.dump() + " end before they begin");
  check(static_cast<uint64_t>(*e) <= data_size, where + ": 'data_offsets' " + jo.dump() +
                                                    " lie outside the file (data section is " +
                                                    str(data_size) + " bytes)");
  const int64_t need = numel * elem;
  check(*e - *b == need, where + ": 'data_offsets' span " + str(*e - *b) + " bytes but " + ds +
                             " shape " + js.dump() + " needs " + str(need));
  return {name,
          dtype,
          dtype ? std::string() : ds,
          std::move(shape),
          static_cast<uint64_t>(*b),
          static_cast<uint64_t>(*e)};
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path), path_(path) {
  parse(file_.bytes(), path_to_utf8(path));
}

SafetensorsFile SafetensorsFile::from_bytes(std::span<const std::byte> bytes,
                                            const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  f.parse(bytes, name);
  return f;
}

void SafetensorsFile::parse(std::span<const std::byte> bytes, const std::string& name) {
  const uint64_t size = bytes.size();
  check(size >= 8, name + ": file is " + str(size) +
                       " bytes, shorter than the 8-byte safetensors header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  check(header_len <= kMaxHeaderBytes, name + ": header length " + str(header_len) +
                                           " is absurd (limit 100 MB); not a safetensors file?");
  check(header_len <= size - 8, name + ": header length " + str(header_len) +
                                    " runs past the end of the file (" + str(size) + " bytes)");
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  check(json_depth(text) <= kMaxJsonDepth, name + ": header JSON is nested too deeply");
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  check(!j.is_discarded(), name + ": header is not valid JSON");
  check(j.is_object(), name + ": header is not a JSON object");

  data_start_ = 8 + header_len;
  const auto data = bytes.subspan(data_start_);
  std::vector<Entry> entries;
  entries.reserve(j.size());
  for (const auto& [key, v] : j.items()) {
    if (key == "__metadata__") {
      check(v.is_object(), name + ": '__metadata__' is not a JSON object");
      for (const auto& [mk, mv] : v.items()) {
        check(mv.is_string(), name + ": '__metadata__' value of '" + mk + "' is not a string");
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, key, v, data.size()));
  }

  // Python's safetensors requires the tensors to tile the data section exactly; so do we.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& e : entries) {
    if (e.begin > expected)
      throw Error(name + ": tensor '" + e.name + "' starts at data offset " + str(e.begin) +
                  " but the previous tensor ends at " + str(expected) + " (gap in the data)");
    if (e.begin < expected)
      throw Error(name + ": tensor '" + e.name + "' starts at data offset " + str(e.begin) +
                  " inside the previous tensor, which ends at " + str(expected) + " (overlap)");
    expected = e.end;
  }
  check(expected == data.size(),
        name + ": " + str(data.size() - expected) +
            " bytes after the last tensor (data offsets must cover the data)");

  tensors_.reserve(entries.size());
  for (auto& e : entries) {
    const auto span = data.subspan(e.begin, e.end - e.begin);
    if (!e.dtype) {
      bytes_.push_back({std::move(e.name), std::move(e.raw_dtype), std::move(e.shape), span});
      continue;
    }
    index_.emplace(e.name, tensors_.size());
    tensors_.push_back({std::move(e.name), *e.dtype, std::move(e.shape), span});
  }
}

const TensorView* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace epwa
