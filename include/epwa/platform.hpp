// The platform layer: everything OS-specific (file mapping, memory figures, CPU features) sits
// behind these declarations; another OS needs a new src/platform/<os>.cpp, not edits elsewhere.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace epwa {

// A read-only memory mapping of a whole file. Move-only; unmaps on destruction.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path);  // throws Error naming the path
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(addr_), size_}; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release() noexcept;
  void* addr_ = nullptr;
  size_t size_ = 0;
  std::filesystem::path path_;
};

// Bytes of physical memory available to a new allocation now (MemAvailable on Linux).
uint64_t available_memory_bytes();
// Peak resident set size of this process, in bytes.
uint64_t peak_rss_bytes();
// Throws Error ("<what> <path>: ...") unless `path` is a regular file that only its owner may read
// or write (mode 0600 or stricter), as ssh requires of private keys.
void check_private_file(const std::filesystem::path& path, const std::string& what);
// Whether standard error is a terminal (progress is shown there, not when it is piped).
bool stderr_is_terminal();
// The broken-down local time of `t` (chat templates' strftime_now()).
std::tm local_time(std::time_t t);
// The command-line arguments as UTF-8 (Windows: from the wide-character command line, whatever the
// ANSI code page; POSIX: argv as given).
std::vector<std::string> utf8_arguments(int argc, char** argv);
// File names as UTF-8: every string a user gives (arguments, JSON, the environment) and every
// message is UTF-8, on every OS. These two are the only conversions between such strings and
// std::filesystem::path: building a path from a std::string, or path::string(), reads or writes
// the ANSI code page on Windows (the name comes out mangled). path_from_utf8 throws Error on a name
// that is not valid UTF-8 where the OS needs it converted (Windows); POSIX keeps the bytes as
// given.
std::filesystem::path path_from_utf8(std::string_view utf8);
std::string path_to_utf8(const std::filesystem::path& path);
// An environment variable of this process as UTF-8 (Windows: from the wide-character environment,
// whatever the ANSI code page); nullopt when it is not set.
std::optional<std::string> get_env(const char* name);
// Sets an environment variable of this process (read back by get_env, and by std::getenv where
// the value is ASCII).
void set_env(const std::string& name, const std::string& value);
// Sleeps until `a` may no longer hold `old` (returns at once if it does not; spurious returns are
// allowed: callers re-check), and wakes every thread sleeping on `a`. The thread pool's sleep:
// Linux's futex (std::atomic::wait); Windows' WaitOnAddress / WakeByAddressAll (mingw's
// std::atomic::wait is a mutex and condition variable, which Wine serves through wineserver).
void wait_while_equal(const std::atomic<uint32_t>& a, uint32_t old);
void wake_all(std::atomic<uint32_t>& a);
// Runs fn(arg) when the calling thread exits, the last registered first (ThreadScratch's cleanup).
// POSIX: a thread_local's destructor; Windows: a fiber-local storage callback, which runs after
// the emulated TLS of MinGW's runtime is gone and touches none of it.
void at_thread_exit(void (*fn)(void*), void* arg);
// Hint that a large buffer should be backed by huge pages where the OS allows it; never fails.
void advise_huge_pages(void* addr, size_t bytes);

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512vnni = false, avx512vbmi = false, avxvnni = false;
};
const CpuFeatures& cpu_features();

}  // namespace epwa
