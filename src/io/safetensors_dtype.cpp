#include "io/safetensors_dtype.hpp"

#include <array>

#include "epwa/error.hpp"

namespace epwa::st {

std::optional<DType> dtype_from_safetensors(std::string_view s) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  return std::nullopt;
}

std::string_view dtype_to_safetensors(DType t, std::string_view tensor) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    default:
      throw Error("cannot write tensor '" + std::string(tensor) + "' of type " +
                  std::string(dtype_name(t)) + " to safetensors (only f32, f16, bf16)");
  }
}

bool is_known_safetensors_dtype(std::string_view s) {
  static constexpr std::array<std::string_view, 20> kKnown{
      "BOOL", "U8",      "I8",      "I16",     "U16", "I32",     "U32",     "I64", "U64", "F64",
      "C64",  "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "F32", "F16", "BF16"};
  for (auto k : kKnown)
    if (k == s) return true;
  return false;
}

}  // namespace epwa::st
