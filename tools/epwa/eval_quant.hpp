// Shared by eval-quant and bench-load: held-out sequences and quality figures as JSON.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "epwa/quant_quality.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {

// The first `lines` non-empty lines of `text`, tokenized (BOS added), each cut to `max_tokens`.
std::vector<std::vector<int32_t>> heldout_sequences(const Tokenizer& tok,
                                                    const std::filesystem::path& text,
                                                    int32_t lines, int32_t max_tokens);
nlohmann::json quality_json(const QuantQuality& q);

}  // namespace epwa::cli
