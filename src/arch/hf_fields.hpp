// Reading the fields of a HuggingFace config.json: every error names the field.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace epwa {

class HfFields {
 public:
  explicit HfFields(const nlohmann::json& j) : j_(j) {}

  const nlohmann::json& raw() const { return j_; }
  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int32_t integer(const char* key) const;
  int32_t integer(const char* key, int32_t fallback) const;
  float number(const char* key, float fallback) const;
  bool boolean(const char* key, bool fallback) const;
  // An id that may be an integer or a list of integers (the first counts).
  int32_t token_id(const char* key, int32_t fallback) const;
  // A list of integers (absent or null: empty).
  std::vector<int32_t> integers(const char* key) const;
  // The first of several names that is present (e.g. num_local_experts / num_experts).
  int32_t integer_of(std::initializer_list<const char*> keys) const;

  static int32_t as_int(const nlohmann::json& v, const char* key);
  static float as_float(const nlohmann::json& v, const char* key);

 private:
  const nlohmann::json& j_;
};

// A float as the shortest decimal that reads back to it, so 1e-5f is written 1e-05, not
// 9.999999747378752e-06.
double shortest(float v);

}  // namespace epwa
