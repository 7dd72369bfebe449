// Mapping between safetensors dtype strings and epwa::DType, shared by the reader and the writer.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "epwa/tensor.hpp"

namespace epwa::st {

// The supported dtypes; nullopt for any other string.
std::optional<DType> dtype_from_safetensors(std::string_view s);
// Throws Error naming the tensor for a dtype safetensors files cannot hold in epwa (quantized).
std::string_view dtype_to_safetensors(DType t, std::string_view tensor);
// True for dtype names the safetensors format defines (supported or not), for clearer errors.
bool is_known_safetensors_dtype(std::string_view s);

}  // namespace epwa::st
