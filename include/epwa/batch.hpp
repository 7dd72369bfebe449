// JSON-lines batches (`epwa detect --jsonl`): reading input lines, and resuming an interrupted run
// from the results it already wrote (docs/CLI.md, "Batch detection").
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>

namespace epwa {

// One input line of a batch: a JSON object, or plain text.
struct BatchLine {
  bool is_object = false;
  nlohmann::json object;  // when is_object
  std::string text;       // otherwise: the line itself
};

// A leading UTF-8 byte-order mark and a trailing '\r' are stripped. A line that starts with '{'
// must be a valid JSON object, and a line that is valid JSON of another kind ([1,2,3], null, 42,
// "x") is refused too: both throw Error. Any other line is plain text (possibly empty).
BatchLine parse_batch_line(std::string_view line);

// What --resume matches an input line and a result on: the "id" member of `object` when it has
// one (compared as compact JSON, so 1 and "1" differ), else the 1-based line number.
std::string batch_key(const nlohmann::json& object, int64_t line);

// The results already in a batch output file: how many results each key has, and whether any is
// watermarked ("detected": true) or failed ("error").
struct BatchProgress {
  std::unordered_map<std::string, int64_t> done;
  bool any_detected = false, any_error = false;
  // Whether an input line with this key already has its result, counting it off: input lines that
  // share an id are matched to the results in order, so a duplicate never loses its own result.
  bool take(const std::string& key);
};

// What the batch output file `out` holds (nothing when it does not exist). A last line cut short
// by an interruption (no final newline) is removed from the file; any other line that is not a
// JSON object with a "line" number throws Error (not a batch output file).
BatchProgress resume_batch_output(const std::filesystem::path& out);

}  // namespace epwa
