#!/usr/bin/env bash
# The Windows release zip (docs/WINDOWS.md): build-win/epwa-<version>-windows-x86_64.zip with
# epwa.exe, the DLLs it imports that Windows does not ship (found with objdump -p; none while
# programs are linked -static), the bundled model and demo.cmd. Builds epwa.exe first
# (scripts/build_windows.sh --target epwa).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build_windows.sh --target epwa
command -v zip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zip >/dev/null
triple=x86_64-w64-mingw32
version=$(sed -n 's/^project(epwa VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
name=epwa-$version-windows-x86_64
stage=build-win/package/$name
rm -rf build-win/package && mkdir -p "$stage/models"
cp build-win/epwa.exe "$stage/"
cp -r models/epwa-tiny-moe "$stage/models/"

# DLLs: every import of epwa.exe (and of the DLLs copied, transitively) that is in the toolchain's
# runtime folders is copied; the others must be Windows' own (KERNEL32.dll, bcrypt.dll, ...).
runtime_dirs=(/usr/lib/gcc/$triple/*-posix /usr/$triple/lib)
queue=("$stage/epwa.exe")
while [ ${#queue[@]} -gt 0 ]; do
  f=${queue[0]}
  queue=("${queue[@]:1}")
  for dll in $($triple-objdump -p "$f" | sed -n 's/^\s*DLL Name: //p'); do
    [ -e "$stage/$dll" ] && continue
    for d in "${runtime_dirs[@]}"; do
      if [ -e "$d/$dll" ]; then
        cp "$d/$dll" "$stage/"
        queue+=("$stage/$dll")
        break
      fi
    done
  done
done

cat >"$stage/demo.cmd" <<'CMD'
@echo off
rem The EPW-A demo on the bundled model; extra arguments go to `epwa demo`.
set "EPW_MODEL_PATH=%~dp0models\epwa-tiny-moe"
"%~dp0epwa.exe" demo %*
CMD
sed -i 's/$/\r/' "$stage/demo.cmd"
(cd build-win/package && rm -f "../$name.zip" && zip -qr "../$name.zip" "$name")
echo "build-win/$name.zip"
(cd "$stage" && ls -1 | sed 's/^/  /')
echo "imports of epwa.exe: $($triple-objdump -p "$stage/epwa.exe" | sed -n 's/^\s*DLL Name: //p' | tr '\n' ' ')"
