#!/usr/bin/env bash
# scripts/device/quant_check.sh: the independent check of `nibble quantize`'s gpt-oss layout
# against transformers' own MXFP4 code (scripts/device/quant_check.py), end to end, on a
# machine with torch + transformers (a GPU is used when torch sees one):
#   1. a synthetic gpt-oss-style BF16 checkpoint (quant_check.py --make-synthetic: 2 layers,
#      fused experts [E, K, N], attention, router);
#   2. nibble quantize SRC -o OUT --mxfp4-layers moe,qkv,o --report report.json;
#   3. nibble inspect OUT --dequantize deq.safetensors (Nibble's own dequantization, F32);
#   4. quant_check.py OUT deq.safetensors --source SRC: transformers' convert_moe_packed_tensors
#      on every *_blocks/*_scales pair, compared bit for bit with step 3.
# Logs go to $OUT (default build/quant-check): env.log, make.log, quantize.log, inspect.log,
# check.log, report.json; the last lines of check.log are printed. Exit status: the check's.
#
# nibble: $NIBBLE (default build/release/tools/nibble). The lent GPU machines lack the Debian
# packages nibble links against, so build it on the development machine and bundle it with
# its shared libraries there (scripts/device/bundle.sh; `--bundle DIR` here does the same):
#     scripts/device/bundle.sh build/quant-check-bundle
# then, on the device (with build/quant-check-bundle carried along):
#     NIBBLE_BUNDLE=build/quant-check-bundle scripts/device/quant_check.sh
# Environment: OUT, NIBBLE, NIBBLE_BUNDLE (a bundle directory), PYTHON.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}
source "$ROOT/scripts/device/bundle.sh"

if [[ ${1:-} == --bundle ]]; then
  bundle_make "${2:?usage: quant_check.sh --bundle DIR}"
  exit $?
fi

OUT=${OUT:-$ROOT/build/quant-check}
nibble_setup || exit 1
commit=$NIBBLE_COMMIT
work=$OUT/work
rm -rf "$work"
mkdir -p "$work"

{
  echo "== date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "== nibble commit: $commit"
  nibble version || true
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""); print("transformers", transformers.__version__)'
} > "$OUT/env.log" 2>&1

step() {  # step NAME LOG COMMAND...: runs it, logs it, stops the script on failure
  local name=$1 log=$2
  shift 2
  "$@" > "$OUT/$log" 2>&1
  local rc=$?
  if [[ $rc != 0 ]]; then
    tail -20 "$OUT/$log"
    echo "$name FAILED (rc=$rc; log: $OUT/$log)"
    exit 1
  fi
  echo "$name: ok"
}

step "synthetic checkpoint" make.log "$PYTHON" "$ROOT/scripts/device/quant_check.py" --make-synthetic "$work/src"
step "nibble quantize" quantize.log nibble quantize "$work/src" -o "$work/out" --mxfp4-layers moe,qkv,o \
  --report "$OUT/report.json"
step "nibble inspect --dequantize" inspect.log nibble inspect "$work/out" --dequantize "$work/deq.safetensors"
"$PYTHON" "$ROOT/scripts/device/quant_check.py" "$work/out" "$work/deq.safetensors" --source "$work/src" \
  > "$OUT/check.log" 2>&1
rc=$?
echo
cat "$OUT/env.log"
tail -14 "$OUT/check.log"
echo "quant_check: rc=$rc (logs in $OUT)"
exit $rc
