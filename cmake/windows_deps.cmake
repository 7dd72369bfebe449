# Dependencies of a Windows build (docs/WINDOWS.md), as the targets CMakeLists.txt links on Linux.
# EPWA_WIN_DEPS is the prefix scripts/build_windows.sh fills: the header-only libraries (headers
# from Debian's packages, cpp-httplib's single header from its Debian source package) and
# sentencepiece, PCRE2 and GoogleTest cross-built from Debian's sources. MSYS2 and vcpkg users
# point it at a prefix holding the same.
if(NOT EPWA_WIN_DEPS)
  message(FATAL_ERROR "Windows build: set EPWA_WIN_DEPS to the dependency prefix (scripts/build_windows.sh)")
endif()
set(inc ${EPWA_WIN_DEPS}/include)
set(lib ${EPWA_WIN_DEPS}/lib)

# Windows 10 APIs (NormalizeString, PrefetchVirtualMemory) and Asio's Winsock target; M_PI and
# friends, which glibc declares by default; the prefix's headers for every target, as /usr/include is
# on Linux.
add_compile_definitions(_WIN32_WINNT=0x0A00 WINVER=0x0A00 _USE_MATH_DEFINES)
include_directories(SYSTEM ${inc})

function(epwa_win_target name)
  cmake_parse_arguments(T "" "" "DEFS;LIBS" ${ARGN})
  add_library(${name} INTERFACE IMPORTED)
  set_target_properties(${name} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${inc}
                        INTERFACE_COMPILE_DEFINITIONS "${T_DEFS}" INTERFACE_LINK_LIBRARIES "${T_LIBS}")
endfunction()

foreach(h nlohmann/json.hpp CLI/CLI.hpp fmt/core.h boost/asio.hpp httplib.h sentencepiece_processor.h
          pcre2.h)
  if(NOT EXISTS ${inc}/${h})
    message(FATAL_ERROR "Windows build: ${inc}/${h} missing (run scripts/build_windows.sh)")
  endif()
endforeach()

epwa_win_target(nlohmann_json::nlohmann_json)
epwa_win_target(CLI11::CLI11)
epwa_win_target(fmt::fmt DEFS FMT_HEADER_ONLY)
epwa_win_target(Boost::headers LIBS "ws2_32;mswsock")
epwa_win_target(PkgConfig::HTTPLIB LIBS ws2_32)
epwa_win_target(PkgConfig::SENTENCEPIECE LIBS ${lib}/libsentencepiece.a)
epwa_win_target(PkgConfig::PCRE2 DEFS PCRE2_STATIC LIBS ${lib}/libpcre2-8.a)

set(epwa_crypto_libs bcrypt)          # CNG: SHA-256, HMAC-SHA256
set(epwa_unicode_libs normaliz)       # NormalizeString; case and classes from kernel32
set(epwa_server_libs ws2_32 mswsock)  # no HTTPS: `serve --tls-cert` says so
set(epwa_https OFF)
# shell32: CommandLineToArgvW; synchronization: WaitOnAddress (the thread pool's sleep)
set(epwa_platform_libs psapi shell32 synchronization)
# Every program: no runtime DLLs beside the executable, and the UTF-8 process code page (argv and
# narrow file names in UTF-8, src/platform/windows/utf8.manifest).
add_link_options(-static)
set(epwa_exe_resources ${CMAKE_SOURCE_DIR}/src/platform/windows/utf8.rc)
