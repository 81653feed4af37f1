#!/usr/bin/env bash
# scripts/device/bundle.sh: the bundled `nibble` the device scripts run. The lent GPU machines
# lack the Debian packages nibble links against, so nibble is built on the development machine
# (with CUDA) and carried over with its shared libraries.
#
# Make a bundle (development machine):
#     scripts/device/bundle.sh DIR            # nibble from $NIBBLE, default build/release/tools/nibble
#   DIR/nibble       the binary
#   DIR/lib/         every shared library it links except glibc's (the device has a glibc at
#                    least as new) and the CUDA toolkit's (libcudart, libcublas, libcublasLt:
#                    the device has its own in /usr/local/cuda, and cuBLAS alone is > 500 MB)
#   DIR/run-nibble   a wrapper that sets LD_LIBRARY_PATH and runs DIR/nibble: an executable
#                    path for scripts that take NIBBLE=... (llama_check.sh)
#   DIR/COMMIT       the commit it was built from
#   DIR/test_gpu, DIR/cuda_gemv_bench   the GPU tests and the GEMV benchmark of the same build,
#                    when built (their libraries in DIR/lib too): check.sh runs them with
#                    CHECK_BUNDLE=DIR instead of building on the GPU machine
#
# Use one (device scripts): `source scripts/device/bundle.sh` then `nibble_setup`, which
# defines the function `nibble`, NIBBLE_CMD (an executable path) and NIBBLE_COMMIT, from
# $NIBBLE_BUNDLE (a bundle directory) when set, else from $NIBBLE (a binary, default
# build/release/tools/nibble).

bundle_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

bundle_make() {
  local dest=${1:?usage: bundle.sh DIR} root nibble lib
  root=$(bundle_root)
  nibble=${NIBBLE:-$root/build/release/tools/nibble}
  [[ -x $nibble ]] || { echo "bundle.sh: no nibble at $nibble (build it first)" >&2; return 1; }
  rm -rf "$dest"
  mkdir -p "$dest/lib"
  cp "$nibble" "$dest/nibble"
  local binaries=("$nibble") extra
  for extra in "$(dirname "$nibble")/../tests/test_gpu" "$(dirname "$nibble")/../bench/cuda_gemv_bench"; do
    [[ -x $extra ]] && cp "$extra" "$dest/" && binaries+=("$extra")
  done
  ldd "${binaries[@]}" | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
    case $(basename "$lib") in
      libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|ld-linux*) ;;
      libcudart.so.*|libcublas.so.*|libcublasLt.so.*|libcuda.so.*) ;;
      *) cp -L "$lib" "$dest/lib/" ;;
    esac
  done
  cat > "$dest/run-nibble" <<'EOF'
#!/usr/bin/env bash
# Runs the bundled nibble beside this script with its libraries (and the device's CUDA toolkit).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/nibble" "$@"
EOF
  chmod +x "$dest/run-nibble"
  git -C "$root" rev-parse HEAD > "$dest/COMMIT" 2>/dev/null || true
  echo "bundle in $dest: $(du -sh "$dest" | cut -f1), $(ls "$dest/lib" | wc -l) libraries," \
       "CUDA $(ldd "$nibble" | grep -q libcudart && echo yes || echo no)"
}

# bundle_library_path DIR: LD_LIBRARY_PATH for the binaries of bundle DIR (its libraries, then
# the device's CUDA toolkit, then what was set).
bundle_library_path() {
  echo "$(cd "$1" && pwd)/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

nibble_setup() {
  local root
  root=$(bundle_root)
  if [[ -n ${NIBBLE_BUNDLE:-} ]]; then
    NIBBLE_BUNDLE=$(cd "$NIBBLE_BUNDLE" && pwd)
    [[ -x $NIBBLE_BUNDLE/run-nibble ]] ||
      { echo "nibble_setup: $NIBBLE_BUNDLE has no run-nibble: remake it with scripts/device/bundle.sh" >&2; return 1; }
    NIBBLE_CMD=$NIBBLE_BUNDLE/run-nibble
    NIBBLE_COMMIT=$(cat "$NIBBLE_BUNDLE/COMMIT" 2>/dev/null || echo unknown)
  else
    NIBBLE_CMD=${NIBBLE:-$root/build/release/tools/nibble}
    NIBBLE_COMMIT=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
  fi
  export NIBBLE_CMD NIBBLE_COMMIT
  nibble() { "$NIBBLE_CMD" "$@"; }
}

# Executed (not sourced): make a bundle.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  bundle_make "$@"
fi
