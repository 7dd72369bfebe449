// GGUF's value-type names and the ggml tensor type ids of our DTypes.
#include <array>

#include "epwa/gguf.hpp"

namespace epwa {

std::string_view gguf_type_name(GgufType t) {
  static constexpr std::array<std::string_view, 13> kNames{"u8",  "i8",  "u16",  "i16",    "u32",
                                                           "i32", "f32", "bool", "string", "array",
                                                           "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < kNames.size() ? kNames[i] : std::string_view("unknown");
}

size_t GgufArray::size() const {
  return std::visit([](const auto& v) { return v.size(); }, items);
}

namespace {
// Indexed by DType; ids from ggml's enum ggml_type (docs/GGUF.md).
constexpr std::array<uint32_t, 12> kGgmlIds{0, 1, 30, 8, 2, 3, 6, 7, 12, 13, 14, 39};
}  // namespace

uint32_t ggml_type_of(DType t) {
  return kGgmlIds.at(static_cast<size_t>(t));
}

std::optional<DType> dtype_from_ggml_type(uint32_t ggml_type) {
  for (size_t i = 0; i < kGgmlIds.size(); ++i)
    if (kGgmlIds[i] == ggml_type) return static_cast<DType>(i);
  return std::nullopt;
}

}  // namespace epwa
