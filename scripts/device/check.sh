#!/usr/bin/env bash
# scripts/device/check.sh: verify every GPU claim of the CUDA kernels on one machine with an
# NVIDIA GPU, in one command:
#   1. build the GPU tests (test_gpu) and the benchmark (cuda_gemv_bench), release, for
#      NIBBLE_CUDA_ARCHITECTURES (default 90a);
#   2. run the GPU tests (tests/gpu: every CUDA MXFP4 kernel against cpu_ref, and the model
#      executor's op kernels (norm, RoPE, attention, elementwise) against CPU references);
#   3. compute-sanitizer memcheck and racecheck on the GPU tests;
#   4. run the benchmark (ours vs cuBLAS BF16 vs copy bandwidth);
# full logs go to $OUT (default build/device-check), a short table is printed last.
#
# Build: with CMake when the Debian -dev packages the project needs are installed (the normal
# development machine). The lent GPU machines have nvcc, g++ and cmake but not those packages,
# so otherwise the script compiles the few sources the GPU tests need with plain g++/nvcc
# against a sysroot of Debian headers and libraries copied from a development machine by
# scripts/device/make_sysroot.sh (NIBBLE_SYSROOT, default .devsrc-cuda/sysroot next to the repo
# copy): fmt and CLI11 (header-only), GoogleTest (static), Highway (shared). Nothing else is
# vendored.
#
# Environment: OUT, NIBBLE_CUDA_ARCHITECTURES, NIBBLE_SYSROOT, JOBS, CHECK_BUNDLE (no build: run
# the test and benchmark binaries of that bundle, scripts/device/bundle.sh), CHECK_SKIP_SANITIZERS=1,
# CHECK_BUILD_ONLY=1 (compile here, e.g. on a machine without a GPU), CHECK_PLAIN=1 (plain build),
# BENCH_ARGS (extra cuda_gemv_bench arguments, e.g. --sweep).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/build/device-check}
ARCH=${NIBBLE_CUDA_ARCHITECTURES:-90a}
SYSROOT=${NIBBLE_SYSROOT:-$ROOT/../sysroot}
JOBS=${JOBS:-$(nproc)}
BUILD=$ROOT/build/device
mkdir -p "$OUT" "$BUILD"
export PATH=/usr/local/cuda/bin:$PATH
status=()  # "step: result" lines for the summary

{
  echo "== commit: $(cat "$ROOT/COMMIT" 2>/dev/null || git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi || true
  nvcc --version; g++ --version | head -1; cmake --version | head -1
  compute-sanitizer --version | head -2 || true
  echo "dev packages: fmt $(test -f /usr/include/fmt/format.h && echo yes || echo no)," \
       "gtest $(test -f /usr/include/gtest/gtest.h && echo yes || echo no)"
} > "$OUT/env.log" 2>&1

# ---- 1. build ---------------------------------------------------------------------------------
build_cmake() {
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIBBLE_CUDA=ON \
        -DNIBBLE_CUDA_ARCHITECTURES="$ARCH" &&
    cmake --build "$BUILD" -j "$JOBS" --target test_gpu cuda_gemv_bench &&
    ln -sf "$BUILD/tests/test_gpu" "$BUILD/test_gpu" &&
    ln -sf "$BUILD/bench/cuda_gemv_bench" "$BUILD/cuda_gemv_bench"
}

build_plain() {
  test -f "$SYSROOT/include/gtest/gtest.h" || { echo "no sysroot at $SYSROOT"; return 1; }
  local gencode="" a
  for a in ${ARCH//;/ }; do gencode+=" -gencode=arch=compute_$a,code=sm_$a"; done
  local defs="-DNDEBUG -DFMT_HEADER_ONLY -DNIBBLE_WITH_CUDA=1"
  local inc="-I$ROOT/src -I$ROOT/tests -I$SYSROOT/include -I/usr/local/cuda/include"
  local cxx="g++ -std=c++20 -O3 -pthread $defs $inc"
  local nvcc="nvcc -std=c++20 -O3 $gencode $defs $inc -Xptxas -v"
  local lib_sources=("$ROOT"/src/base/*.cpp "$ROOT"/src/format/dtype.cpp
                     "$ROOT"/src/format/float16.cpp "$ROOT"/src/format/mxfp4*.cpp "$ROOT"/src/format/fp8.cpp
                     "$ROOT"/src/kernels/*.cpp "$ROOT"/src/kernels/cpu/*.cpp
                     "$ROOT"/src/kernels/cuda/*.cpp
                     "$ROOT"/src/model/sampler.cpp)  # the host argmax the GPU one is held to
  local objs=() pids=() s o
  for s in "${lib_sources[@]}" "$ROOT"/tests/gpu/*.cpp; do
    o=$BUILD/$(basename "${s%.*}").o
    $cxx -c "$s" -o "$o" & pids+=($!)
    [[ $s == */tests/gpu/* ]] || objs+=("$o")
  done
  for s in "$ROOT"/src/kernels/cuda/*.cu; do
    o=$BUILD/$(basename "${s%.*}").cu.o
    $nvcc -c "$s" -o "$o" & pids+=($!)
    objs+=("$o")
  done
  $nvcc -c "$ROOT/bench/cuda_gemv_bench.cu" -o "$BUILD/cuda_gemv_bench.o" & pids+=($!)
  local ok=0 p
  for p in "${pids[@]}"; do wait "$p" || ok=1; done
  [[ $ok == 0 ]] || return 1
  local libs="-L$SYSROOT/lib -Wl,-rpath,$SYSROOT/lib -lhwy -L/usr/local/cuda/lib64 -lcudart"
  local tests=()
  for s in "$ROOT"/tests/gpu/*.cpp; do tests+=("$BUILD/$(basename "${s%.*}").o"); done
  g++ -o "$BUILD/test_gpu" "${tests[@]}" "${objs[@]}" "$SYSROOT/lib/libgtest_main.a" \
      "$SYSROOT/lib/libgtest.a" $libs -pthread &&
    nvcc -o "$BUILD/cuda_gemv_bench" "$BUILD/cuda_gemv_bench.o" "${objs[@]}" \
      -L"$SYSROOT/lib" -Xlinker -rpath -Xlinker "$SYSROOT/lib" -lhwy -lcublasLt
}

have_dev_packages() {
  [[ -f /usr/include/fmt/format.h && -f /usr/include/gtest/gtest.h && -f /usr/include/CLI/CLI.hpp &&
     -f /usr/include/spdlog/spdlog.h ]] && command -v ninja >/dev/null &&
    pkg-config --exists libhwy libpcre2-8 2>/dev/null
}
# CHECK_BUNDLE=DIR: the binaries of a bundle (scripts/device/bundle.sh), built elsewhere.
use_bundle() {
  [[ -x $CHECK_BUNDLE/test_gpu && -x $CHECK_BUNDLE/cuda_gemv_bench ]] ||
    { echo "$CHECK_BUNDLE has no test_gpu and cuda_gemv_bench: remake it after a CUDA build"; return 1; }
  source "$ROOT/scripts/device/bundle.sh"
  LD_LIBRARY_PATH=$(bundle_library_path "$CHECK_BUNDLE") && export LD_LIBRARY_PATH
  ln -sf "$(cd "$CHECK_BUNDLE" && pwd)/test_gpu" "$BUILD/test_gpu" &&
    ln -sf "$(cd "$CHECK_BUNDLE" && pwd)/cuda_gemv_bench" "$BUILD/cuda_gemv_bench"
}
if [[ -n ${CHECK_BUNDLE:-} ]]; then
  use_bundle > "$OUT/build.log" 2>&1
elif [[ ${CHECK_PLAIN:-0} != 1 ]] && have_dev_packages; then
  build_cmake > "$OUT/build.log" 2>&1
else
  build_plain > "$OUT/build.log" 2>&1
fi
if [[ $? != 0 || ! -x $BUILD/test_gpu ]]; then
  tail -40 "$OUT/build.log"
  echo "BUILD FAILED (full log: $OUT/build.log)"
  exit 1
fi
status+=("build ($ARCH): ok")
[[ ${CHECK_BUILD_ONLY:-0} == 1 ]] && { printf '%s\n' "${status[@]}"; exit 0; }

# ---- 2. GPU tests -----------------------------------------------------------------------------
"$BUILD/test_gpu" > "$OUT/test_gpu.log" 2>&1
rc=$?
status+=("test_gpu: rc=$rc, $(grep -E '^\[  PASSED  \]' "$OUT/test_gpu.log" | head -1 | cut -c14-)"
         "          $(grep -cE '^\[  SKIPPED \]' "$OUT/test_gpu.log") skipped lines, $(grep -cE '^\[  FAILED  \]' "$OUT/test_gpu.log") failed lines")

# ---- 3. compute-sanitizer ---------------------------------------------------------------------
# The sanitizers run every case except the largest weights (lm_head, 4096x14336): same code
# paths, 10-100x slower under instrumentation.
SAN_FILTER='-*N201088*:*N4096_K14336*'
if [[ ${CHECK_SKIP_SANITIZERS:-0} != 1 ]]; then
  for tool in memcheck racecheck; do
    timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 99 \
      "$BUILD/test_gpu" --gtest_filter="$SAN_FILTER" --gtest_brief=1 > "$OUT/$tool.log" 2>&1
    rc=$?
    status+=("$tool: rc=$rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log" | tail -1)")
  done
fi

# ---- 4. benchmark ------------------------------------------------------------------------------
"$BUILD/cuda_gemv_bench" --json "$OUT/bench.json" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
status+=("bench: rc=$?")

# ---- summary -----------------------------------------------------------------------------------
echo
grep -E "^device:|^copy bandwidth" "$OUT/bench.log"
grep -E "FAILED|Failure" "$OUT/test_gpu.log" | head -20
echo
grep -E "^\|" "$OUT/bench.log"
echo
printf '%s\n' "${status[@]}"
