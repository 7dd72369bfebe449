// One error type for the whole library: every failure is an epwa::Error with a one-line message
// that names the problem (the file, the tensor, the flag). The CLI prints it and exits non-zero.
#pragma once
#include <concepts>
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

inline void check(bool cond, const char* message) {
  if (!cond) throw Error(message);
}

// The same with the message built only on failure: for hot paths (kernels called per token), where
// composing a string on every call would allocate.
template <std::invocable MakeMessage>
inline void check(bool cond, MakeMessage&& make_message) {
  if (!cond) throw Error(make_message());
}

}  // namespace epwa
