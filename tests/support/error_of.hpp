// The message of the epwa::Error a call throws ("" when it throws none), for tests that check
// error messages. Header only: tests/support/ holds no test program.
#pragma once
#include <functional>
#include <string>

#include "epwa/error.hpp"

namespace epwa_test {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const epwa::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace epwa_test
