// Pieces shared by the tokenizer implementations.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace epwa::tok {

inline constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// The byte of a "<0xNN>" piece, or -1.
int32_t byte_piece_value(std::string_view piece);
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);
std::string read_file_bytes(const std::filesystem::path& path);  // throws Error naming the path

}  // namespace epwa::tok
