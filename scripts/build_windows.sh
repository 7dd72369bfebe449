#!/usr/bin/env bash
# Cross-builds epwa.exe and its test programs for x86-64 Windows into build-win/ (docs/WINDOWS.md):
# installs Debian's mingw-w64 toolchain, Wine and the header-only libraries, cross-builds PCRE2,
# sentencepiece and GoogleTest from Debian's own sources into build-win/deps, then builds epwa with
# cmake/mingw-w64.cmake. Extra arguments go to the final `cmake --build` (e.g. --target epwa).
# EPWA_WIN_BUILD_TYPE (default Release) picks the build type of epwa.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build-win
deps=$out/deps
jobs=${EPWA_JOBS:-$(nproc)}
triple=x86_64-w64-mingw32

# Debian packages: the toolchain (POSIX threads variant), Wine, dpkg-source, and the headers of the
# header-only dependencies (GoogleTest's sources come with googletest).
pkgs=(mingw-w64 g++-mingw-w64-x86-64-posix wine wine64 dpkg-dev cmake ninja-build googletest
      nlohmann-json3-dev libcli11-dev libfmt-dev libboost1.81-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian source packages, pinned to the versions this was written against (bookworm).
srcs=(pcre2=10.42-1 sentencepiece=0.1.97-3 cpp-httplib=0.11.4+ds-1+deb12u1)
mkdir -p "$deps/src" "$deps/include" "$deps/lib"
cd "$deps/src"
need_src=()
for s in "${srcs[@]}"; do
  [ -d "${s%%=*}" ] || need_src+=("$s")
done
if [ ${#need_src[@]} -gt 0 ]; then
  list=/etc/apt/sources.list.d/epwa-deb-src.sources
  if ! grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$list"
    apt-get update -qq
  fi
  for s in "${need_src[@]}"; do
    name=${s%%=*}
    rm -rf "dl-$name" && mkdir "dl-$name"
    (cd "dl-$name" && apt-get source --download-only -qq "$s" 2>/dev/null >/dev/null &&
      dpkg-source -x --no-check ./*.dsc "../$name" >/dev/null)  # applies Debian's patches
    rm -rf "dl-$name"
  done
fi

tc=(-G Ninja -DCMAKE_TOOLCHAIN_FILE="$root/cmake/mingw-w64.cmake" -DEPWA_WIN_DEPS="$deps"
    -DCMAKE_INSTALL_PREFIX="$deps" -DCMAKE_BUILD_TYPE=Release)
if [ ! -f "$deps/lib/libpcre2-8.a" ]; then
  cmake -S pcre2 -B build-pcre2 "${tc[@]}" -DBUILD_SHARED_LIBS=OFF -DPCRE2_BUILD_PCRE2_8=ON \
    -DPCRE2_SUPPORT_UNICODE=ON -DPCRE2_BUILD_TESTS=OFF -DPCRE2_BUILD_PCRE2GREP=OFF \
    -DPCRE2_SUPPORT_JIT=OFF >/dev/null
  cmake --build build-pcre2 -j"$jobs" --target install >/dev/null
fi
if [ ! -f "$deps/lib/libsentencepiece.a" ]; then
  # The static library only, with its bundled protobuf-lite (tcmalloc off: not for Windows); Debian
  # patches the static library out of its build, which is reverted here.
  if grep -q 'add_library(sentencepiece-static' sentencepiece/src/CMakeLists.txt; then :; else
    patch -d sentencepiece -R -p1 -s <sentencepiece/debian/patches/disable-static-library.patch
  fi
  cmake -S sentencepiece -B build-spm "${tc[@]}" -DSPM_ENABLE_SHARED=OFF -DSPM_ENABLE_TCMALLOC=OFF \
    -DSPM_USE_BUILTIN_PROTOBUF=ON >/dev/null
  cmake --build build-spm -j"$jobs" --target sentencepiece-static >/dev/null
  cp build-spm/src/libsentencepiece.a "$deps/lib/"
  cp sentencepiece/src/sentencepiece_processor.h "$deps/include/"
fi
if [ ! -f "$deps/lib/libgtest.a" ]; then
  cmake -S /usr/src/googletest -B build-gtest "${tc[@]}" -DBUILD_GMOCK=ON -DINSTALL_GTEST=ON >/dev/null
  cmake --build build-gtest -j"$jobs" --target install >/dev/null
fi
# Header-only: Debian's headers as they are; cpp-httplib's single header from its source package
# (Debian's binary package installs the split header of its compiled library).
for d in nlohmann CLI fmt boost; do ln -sfn "/usr/include/$d" "$deps/include/$d"; done
cp -p cpp-httplib/httplib.h "$deps/include/"  # -p: an unchanged header rebuilds nothing

cd "$root"
cmake -S . -B "$out" "${tc[@]}" -DCMAKE_INSTALL_PREFIX="$out/install" \
  -DCMAKE_BUILD_TYPE="${EPWA_WIN_BUILD_TYPE:-Release}" -DEPWA_BENCH=OFF -DEPWA_PYTHON=OFF >/dev/null
cmake --build "$out" -j"$jobs" "$@"
