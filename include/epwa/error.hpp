// One error type for the whole library: every failure is an epwa::Error with a one-line message that
// names the problem (the file, the tensor, the flag). The CLI prints it and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace epwa {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws epwa::Error(message) when cond is false.
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

}  // namespace epwa
