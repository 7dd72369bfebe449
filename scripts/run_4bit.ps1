# Runs the epwa demo with the weights loaded in 4 bits ($env:EPW_LOAD_IN_4BIT = "true"), after
# checking what it needs. Extra arguments go to `epwa demo`. $env:EPWA_BIN may name another binary.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

function Fail($msg) { Write-Error "run_4bit.ps1: $msg"; exit 1 }

$bin = if ($env:EPWA_BIN) { $env:EPWA_BIN } elseif ($IsWindows) { "build\epwa.exe" } else { "build/epwa" }
if (-not (Test-Path $bin)) {
  if (-not (Get-Command cmake -ErrorAction SilentlyContinue)) { Fail "cmake not found: install CMake 3.25+ and a C++20 compiler" }
  if (-not (Get-Command ninja -ErrorAction SilentlyContinue)) { Fail "ninja not found: install Ninja" }
  Write-Host "run_4bit.ps1: $bin not built yet; building it"
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  if ($LASTEXITCODE -ne 0) { Fail "cmake configure failed; see the messages above" }
  cmake --build build --target epwa
  if ($LASTEXITCODE -ne 0) { Fail "build failed; see the messages above" }
}
if (-not (Test-Path $bin)) { Fail "$bin still missing after the build" }

$model = if ($env:EPW_MODEL_PATH) { $env:EPW_MODEL_PATH } else { "models/epwa-tiny-moe" }
if (-not (Test-Path $model)) { Fail "model not found: $model (set `$env:EPW_MODEL_PATH to a HF folder or .gguf file)" }

$env:EPW_LOAD_IN_4BIT = "true"
$env:EPW_MODEL_PATH = $model
Write-Host "run_4bit.ps1: EPW_LOAD_IN_4BIT=true EPW_MODEL_PATH=$model $bin demo $args"
& $bin demo @args
exit $LASTEXITCODE
