// Windows implementation of the platform layer (mingw-w64 or MSVC; docs/WINDOWS.md). Paths go to
// the wide-character APIs, so non-ASCII file names work whatever the ANSI code page is.
#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>
// windows.h first: psapi.h needs its types.
#include <io.h>
#include <psapi.h>
#include <shellapi.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__GNUC__)
#include <cpuid.h>
#else
#include <intrin.h>
#endif

#include "epwa/error.hpp"
#include "epwa/memory.hpp"
#include "epwa/platform.hpp"

namespace epwa {

namespace {

// UTF-8 to UTF-16 and back. Throws Error on bytes that are not UTF-8 (a name made of them could
// only be guessed at); unpaired UTF-16 surrogates become U+FFFD.
std::wstring wide(std::string_view utf8) {
  if (utf8.empty()) return {};
  const int size = static_cast<int>(utf8.size());
  const int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), size, nullptr, 0);
  if (n <= 0) throw Error("not valid UTF-8: " + std::string(utf8));
  std::wstring w(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, utf8.data(), size, w.data(), n);
  return w;
}

std::string narrow(std::wstring_view w) {
  if (w.empty()) return {};
  const int size = static_cast<int>(w.size());
  const int n = WideCharToMultiByte(CP_UTF8, 0, w.data(), size, nullptr, 0, nullptr, nullptr);
  std::string out(static_cast<size_t>(n > 0 ? n : 0), '\0');
  WideCharToMultiByte(CP_UTF8, 0, w.data(), size, out.data(), n, nullptr, nullptr);
  return out;
}

// The system's message for a Win32 error code, as UTF-8 without the trailing newline.
std::string win_error(DWORD code) {
  wchar_t* buf = nullptr;
  const DWORD n = FormatMessageW(
      FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
      nullptr, code, 0, reinterpret_cast<wchar_t*>(&buf), 0, nullptr);
  std::string out = "error " + std::to_string(code);
  if (n > 0 && buf) {
    std::string msg = narrow(std::wstring_view(buf, n));
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r' || msg.back() == ' '))
      msg.pop_back();
    out = msg;
  }
  LocalFree(buf);
  return out;
}

// The console shows UTF-8 output (model text, the demo's tables) instead of the OEM code page.
const bool kConsoleUtf8 = [] {
  SetConsoleOutputCP(CP_UTF8);
  return true;
}();

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  const std::string name = path_to_utf8(path);
  const DWORD attrs = GetFileAttributesW(path.c_str());
  if (attrs != INVALID_FILE_ATTRIBUTES && (attrs & FILE_ATTRIBUTE_DIRECTORY))
    throw Error("not a regular file: " + name);  // CreateFileW would say "Access denied"
  HANDLE file = CreateFileW(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                            FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE)
    throw Error("cannot open " + name + ": " + win_error(GetLastError()));
  BY_HANDLE_FILE_INFORMATION info{};
  if (!GetFileInformationByHandle(file, &info) ||
      (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    CloseHandle(file);
    throw Error("not a regular file: " + name);
  }
  size_ =
      static_cast<size_t>((static_cast<uint64_t>(info.nFileSizeHigh) << 32) | info.nFileSizeLow);
  if (size_ > 0) {
    HANDLE mapping = CreateFileMappingW(file, nullptr, PAGE_READONLY, 0, 0, nullptr);
    if (!mapping) {
      const DWORD err = GetLastError();
      CloseHandle(file);
      throw Error("cannot map " + name + ": " + win_error(err));
    }
    addr_ = MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0);
    const DWORD err = GetLastError();
    CloseHandle(mapping);  // the view keeps the mapping alive
    if (!addr_) {
      CloseHandle(file);
      throw Error("cannot map " + name + ": " + win_error(err));
    }
  }
  CloseHandle(file);
}

void MappedFile::release() noexcept {
  if (addr_) UnmapViewOfFile(addr_);
  addr_ = nullptr;
  size_ = 0;
}

uint64_t available_memory_bytes() {
  MEMORYSTATUSEX st{};
  st.dwLength = sizeof st;
  return GlobalMemoryStatusEx(&st) ? st.ullAvailPhys : 0;
}

uint64_t peak_rss_bytes() {
  PROCESS_MEMORY_COUNTERS pmc{};
  pmc.cb = sizeof pmc;
  return GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc) ? pmc.PeakWorkingSetSize : 0;
}

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

// Large pages need the "Lock pages in memory" right (SeLockMemoryPrivilege), which an
// administrator grants per user; enabled once for this process where the user holds it.
size_t large_page_size() {
  static const size_t size = [] {
    const size_t min = GetLargePageMinimum();
    if (min == 0) return size_t{0};
    HANDLE token = nullptr;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY, &token))
      return size_t{0};
    TOKEN_PRIVILEGES tp{};
    tp.PrivilegeCount = 1;
    tp.Privileges[0].Attributes = SE_PRIVILEGE_ENABLED;
    const bool ok =
        LookupPrivilegeValueW(nullptr, L"SeLockMemoryPrivilege", &tp.Privileges[0].Luid) &&
        AdjustTokenPrivileges(token, FALSE, &tp, 0, nullptr, nullptr) &&
        GetLastError() == ERROR_SUCCESS;  // not ERROR_NOT_ALL_ASSIGNED
    CloseHandle(token);
    return ok ? min : size_t{0};
  }();
  return size;
}

}  // namespace

// WaitOnAddress compares the bytes of the atomic (lock-free, so its value's representation).
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
void wait_while_equal(const std::atomic<uint32_t>& a, uint32_t old) {
  WaitOnAddress(const_cast<std::atomic<uint32_t>*>(&a), &old, sizeof old, INFINITE);
}

void wake_all(std::atomic<uint32_t>& a) {
  WakeByAddressAll(&a);
}

namespace {
using ExitHooks = std::vector<std::pair<void (*)(void*), void*>>;

void WINAPI run_exit_hooks(void* data) {
  auto* hooks = static_cast<ExitHooks*>(data);
  for (auto it = hooks->rbegin(); it != hooks->rend(); ++it) it->first(it->second);
  delete hooks;
}
}  // namespace

void at_thread_exit(void (*fn)(void*), void* arg) {
  // Not a thread_local with a destructor: MinGW's emulated TLS frees such an object's storage
  // before its destructor runs (include/epwa/thread_scratch.hpp). The slot's callback runs when
  // the thread exits, on the heap list that the slot holds.
  static const DWORD slot = FlsAlloc(run_exit_hooks);
  check(slot != FLS_OUT_OF_INDEXES, "at_thread_exit: no fiber-local storage slot left");
  auto* hooks = static_cast<ExitHooks*>(FlsGetValue(slot));
  if (!hooks) {
    hooks = new ExitHooks;
    FlsSetValue(slot, hooks);
  }
  hooks->emplace_back(fn, arg);
}

// Windows gives large pages only at allocation time (LargeBuffer), never to an existing range.
void advise_huge_pages(void*, size_t) {}

void advise_will_need(const void* addr, size_t bytes) {
  if (bytes == 0) return;
  WIN32_MEMORY_RANGE_ENTRY range{const_cast<void*>(addr), bytes};
  PrefetchVirtualMemory(GetCurrentProcess(), 1, &range, 0);  // a hint: failure is harmless
}

// Unlocking pages that are not locked drops them from the working set (read-only file views
// fault them back in from the file); it reports ERROR_NOT_LOCKED, which is the expected case.
void advise_dont_need(const void* addr, size_t bytes) {
  if (bytes > 0) VirtualUnlock(const_cast<void*>(addr), bytes);
}

bool huge_pages_available() {
  return large_page_size() != 0;
}

LargeBuffer::LargeBuffer(size_t bytes) {
  if (bytes == 0) return;
  const size_t large = large_page_size();
  void* p = nullptr;
  size_t len = bytes;
  if (large != 0 && bytes >= large) {
    len = (bytes + large - 1) / large * large;
    p = VirtualAlloc(nullptr, len, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE);
  }
  if (!p) {  // no large pages (none free, or no right to them): ordinary pages
    len = bytes;
    p = VirtualAlloc(nullptr, len, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    // The 2 MB alignment of the header's promise: find a free range one unit longer, release it
    // and allocate at its aligned start (another thread may take it meanwhile: try again).
    if (p && bytes >= kHugePage && reinterpret_cast<uintptr_t>(p) % kHugePage != 0) {
      VirtualFree(p, 0, MEM_RELEASE);
      p = nullptr;
      for (int tries = 0; tries < 16 && !p; ++tries) {
        void* probe = VirtualAlloc(nullptr, len + kHugePage, MEM_RESERVE, PAGE_NOACCESS);
        if (!probe) break;
        VirtualFree(probe, 0, MEM_RELEASE);
        const uintptr_t a = (reinterpret_cast<uintptr_t>(probe) + kHugePage - 1) & ~(kHugePage - 1);
        p = VirtualAlloc(reinterpret_cast<void*>(a), len, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
      }
    }
  }
  if (!p)
    throw Error("cannot allocate a buffer of " + std::to_string(bytes) +
                " bytes: " + win_error(GetLastError()));
  addr_ = p;
  size_ = bytes;
  mapped_ = len;
}

void LargeBuffer::release() noexcept {
  if (addr_) VirtualFree(addr_, 0, MEM_RELEASE);
  addr_ = nullptr;
  size_ = mapped_ = 0;
}

namespace {
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(__GNUC__)
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#else
  int v[4];
  __cpuidex(v, static_cast<int>(leaf), static_cast<int>(sub));
  for (int i = 0; i < 4; ++i) r[i] = static_cast<unsigned>(v[i]);
#endif
}
uint64_t xcr0() {
#if defined(__GNUC__)
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
#else
  return _xgetbv(0);
#endif
}
}  // namespace

// CPUID plus the OS check that it saves the AVX (and AVX-512) registers on context switches,
// which is what __builtin_cpu_supports does on Linux.
const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
    unsigned r[4];
    cpuid(0, 0, r);
    const unsigned max_leaf = r[0];
    cpuid(1, 0, r);
    const bool osxsave = (r[2] >> 27) & 1;
    const uint64_t xcr = osxsave ? xcr0() : 0;
    const bool avx_os = (xcr & 0x6) == 0x6;                 // XMM and YMM state
    const bool avx512_os = avx_os && (xcr & 0xe0) == 0xe0;  // opmask, ZMM state
    const bool avx = avx_os && ((r[2] >> 28) & 1);
    c.fma = avx && ((r[2] >> 12) & 1);
    c.f16c = avx && ((r[2] >> 29) & 1);
    if (max_leaf >= 7) {
      cpuid(7, 0, r);
      c.avx2 = avx && ((r[1] >> 5) & 1);
      c.avx512f = avx512_os && ((r[1] >> 16) & 1);
      c.avx512bw = avx512_os && ((r[1] >> 30) & 1);
      c.avx512vl = avx512_os && ((r[1] >> 31) & 1);
      c.avx512vnni = avx512_os && ((r[2] >> 11) & 1);
      c.avx512vbmi = avx512_os && ((r[2] >> 1) & 1);
      cpuid(7, 1, r);
      c.avxvnni = avx && ((r[0] >> 4) & 1);
    }
    return c;
  }();
  return f;
}

// NTFS has access control lists, not mode bits: only the file's existence and kind are checked
// here (docs/WINDOWS.md says to restrict key files to their owner with icacls).
void check_private_file(const std::filesystem::path& path, const std::string& what) {
  const std::string f = path_to_utf8(path);
  const DWORD attrs = GetFileAttributesW(path.c_str());
  if (attrs == INVALID_FILE_ATTRIBUTES) throw Error(what + " " + f + ": not found");
  if (attrs & FILE_ATTRIBUTE_DIRECTORY) throw Error(what + " " + f + ": not a regular file");
}

bool stderr_is_terminal() {
  return _isatty(_fileno(stderr)) != 0;
}

std::tm local_time(std::time_t t) {
  std::tm tm{};
  localtime_s(&tm, &t);
  return tm;
}

std::vector<std::string> utf8_arguments(int argc, char** argv) {
  int n = 0;
  wchar_t** w = CommandLineToArgvW(GetCommandLineW(), &n);
  if (!w) return std::vector<std::string>(argv, argv + argc);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(narrow(w[i]));
  LocalFree(w);
  return out;
}

// A path holds UTF-16 here: built from a std::string, libstdc++ would read the ANSI code page.
std::filesystem::path path_from_utf8(std::string_view utf8) {
  try {
    return std::filesystem::path(wide(utf8));
  } catch (const Error&) {
    throw Error("file name is not valid UTF-8: " + std::string(utf8));
  }
}

std::string path_to_utf8(const std::filesystem::path& path) {
  return narrow(path.native());
}

std::optional<std::string> get_env(const char* name) {
  const wchar_t* v = _wgetenv(wide(name).c_str());
  return v ? std::optional<std::string>(narrow(v)) : std::nullopt;
}

// The C runtime's wide copy (which it converts into the narrow one that std::getenv reads).
void set_env(const std::string& name, const std::string& value) {
  _wputenv_s(wide(name).c_str(), wide(value).c_str());
}

}  // namespace epwa
