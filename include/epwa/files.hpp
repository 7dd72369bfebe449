// File helpers with one-line errors that name the path: reading an input the user gave, and
// writing an output that never destroys an input and replaces its target only once complete.
#pragma once
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace epwa {

// Opens `path` for reading; throws Error naming `what` and the path when it is missing, a
// directory, or cannot be opened.
std::ifstream open_input_file(const std::filesystem::path& path, std::string_view what);

// The whole content of `path` (same errors, plus a read failure).
std::string read_input_file(const std::filesystem::path& path, std::string_view what);

// The non-empty lines of `path`, without a line's CR (same errors as read_input_file).
std::vector<std::string> read_input_lines(const std::filesystem::path& path, std::string_view what);

// Throws Error when the output `out` (given with `flag`) is one of `inputs` or lies inside one of
// them (an input folder), so that writing it cannot destroy what it is made from. Empty inputs
// (options not given) are skipped.
void check_output_not_input(const std::filesystem::path& out,
                            std::initializer_list<std::filesystem::path> inputs,
                            std::string_view flag);

// Calls write(tmp) with a temporary path beside `out`, then renames it to `out`: an interrupted or
// failed write leaves `out` as it was (the temporary is removed on failure).
void write_via_temp(const std::filesystem::path& out,
                    const std::function<void(const std::filesystem::path& tmp)>& write);

}  // namespace epwa
