// POSIX implementation of the platform layer (Linux; macOS shares all but the /proc readers).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/memory.hpp"
#include "epwa/platform.hpp"

namespace epwa {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("not a regular file: " + path.string());
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error("cannot map " + path.string() + ": " + std::strerror(err));
    }
    addr_ = p;
    advise_huge_pages(addr_, size_);
  }
  ::close(fd);
}

void MappedFile::release() noexcept {
  if (addr_) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

namespace {
uint64_t meminfo_kb(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  uint64_t v = 0;
  std::string unit;
  while (in >> k >> v >> unit)
    if (k == key + ":") return v;
  return 0;
}
}  // namespace

uint64_t available_memory_bytes() {
  const uint64_t kb = meminfo_kb("MemAvailable");
  if (kb) return kb * 1024;
  return static_cast<uint64_t>(::sysconf(_SC_AVPHYS_PAGES)) *
         static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

uint64_t peak_rss_bytes() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports kilobytes
}

namespace {
constexpr size_t kHugePage = size_t{2} << 20;

// The whole pages inside [addr, addr + bytes) aligned to `align`, as [begin, end).
std::pair<uintptr_t, uintptr_t> inner_range(const void* addr, size_t bytes, size_t align) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  return {(a + align - 1) & ~(align - 1), (a + bytes) & ~(align - 1)};
}

size_t page_size() {
  static const size_t p = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return p;
}
}  // namespace

void wait_while_equal(const std::atomic<uint32_t>& a, uint32_t old) {
  a.wait(old, std::memory_order_acquire);  // a futex on Linux
}

void wake_all(std::atomic<uint32_t>& a) {
  a.notify_all();
}

void at_thread_exit(void (*fn)(void*), void* arg) {
  // glibc runs thread_local destructors while the thread's TLS is still in place.
  struct Hooks {
    std::vector<std::pair<void (*)(void*), void*>> list;
    ~Hooks() {
      for (auto it = list.rbegin(); it != list.rend(); ++it) it->first(it->second);
    }
  };
  thread_local Hooks hooks;
  hooks.list.emplace_back(fn, arg);
}

void advise_huge_pages(void* addr, size_t bytes) {
#ifdef MADV_HUGEPAGE
  if (bytes < kHugePage) return;
  const auto [begin, end] = inner_range(addr, bytes, kHugePage);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)addr;
  (void)bytes;
#endif
}

void advise_will_need(const void* addr, size_t bytes) {
  // madvise wants a page-aligned start; widening to the enclosing pages is harmless for a hint.
  const auto a = reinterpret_cast<uintptr_t>(addr) & ~(page_size() - 1);
  const size_t len = reinterpret_cast<uintptr_t>(addr) + bytes - a;
  if (bytes > 0) ::madvise(reinterpret_cast<void*>(a), len, MADV_WILLNEED);
}

void advise_dont_need(const void* addr, size_t bytes) {
  // Only whole pages inside the range: a neighbouring tensor sharing a page stays resident.
  const auto [begin, end] = inner_range(addr, bytes, page_size());
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

bool huge_pages_available() {
#ifdef MADV_HUGEPAGE
  static const bool available = [] {
    std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string line;
    return std::getline(in, line) && line.find("[never]") == std::string::npos;
  }();
  return available;
#else
  return false;
#endif
}

LargeBuffer::LargeBuffer(size_t bytes) {
  if (bytes == 0) return;
  const size_t page = page_size();
  const size_t len = (bytes + page - 1) / page * page;
  // Over-map by one alignment unit and trim both ends, so that huge pages can back every 2 MB.
  const size_t align = len >= kHugePage ? kHugePage : page;
  const size_t total = len + align - page;
  void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error("cannot allocate a buffer of " + std::to_string(bytes) +
                " bytes: " + std::strerror(errno));
  const auto base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t a = (base + align - 1) & ~(align - 1);
  if (a > base) ::munmap(p, a - base);
  if (base + total > a + len) ::munmap(reinterpret_cast<void*>(a + len), base + total - a - len);
  addr_ = reinterpret_cast<void*>(a);
  size_ = bytes;
  mapped_ = len;
  advise_huge_pages(addr_, len);
}

void LargeBuffer::release() noexcept {
  if (addr_) ::munmap(addr_, mapped_);
  addr_ = nullptr;
  size_ = mapped_ = 0;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.f16c = __builtin_cpu_supports("f16c");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    c.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
    c.avxvnni = __builtin_cpu_supports("avxvnni");
#endif
    return c;
  }();
  return f;
}

}  // namespace epwa

namespace epwa {
void check_private_file(const std::filesystem::path& path, const std::string& what) {
  const std::string f = path.string();
  struct stat st {};
  if (::stat(f.c_str(), &st) != 0) throw Error(what + " " + f + ": not found");
  if (!S_ISREG(st.st_mode)) throw Error(what + " " + f + ": not a regular file");
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw Error(what + " " + f + ": permissions " + mode +
                " let other users read it; chmod 600 it");
  }
}

bool stderr_is_terminal() {
  return ::isatty(STDERR_FILENO) == 1;
}

std::tm local_time(std::time_t t) {
  std::tm tm{};
  ::localtime_r(&t, &tm);
  return tm;
}

std::vector<std::string> utf8_arguments(int argc, char** argv) {
  return std::vector<std::string>(argv, argv + argc);
}

// POSIX file names are bytes; UTF-8 strings pass through unchanged.
std::filesystem::path path_from_utf8(std::string_view utf8) {
  return std::string(utf8);
}

std::string path_to_utf8(const std::filesystem::path& path) {
  return path.string();
}

std::optional<std::string> get_env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::optional<std::string>(v) : std::nullopt;
}

void set_env(const std::string& name, const std::string& value) {
  ::setenv(name.c_str(), value.c_str(), 1);
}
}  // namespace epwa
