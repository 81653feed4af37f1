#!/usr/bin/env bash
# scripts/device/llama_gpu_check.sh: Nibble's Llama-family model on CUDA against Nibble on the
# CPU (issue 10, GPU part), on a machine with an NVIDIA GPU:
#   1. the synthetic checkpoints of scripts/device/llama_check.sh (every family, GQA, head_dim
#      64 and 128, tied and untied, llama3 RoPE, Mistral and per-layer Qwen windows), made with
#      the same nibble unless CHECK_DIR already holds them. Each carries the CPU's logits over
#      its check tokens and its greedy continuations, in full precision and with
#      --mxfp4-layers all (synth --check, on cpu_simd: exact activations);
#   2. per checkpoint, --mxfp4-layers none and all: `nibble eval --device cuda --tokens (the
#      check tokens) --dump-logits --greedy 32`; max |diff| / max |logit| against the CPU's
#      logits must be <= BOUND and the greedy continuations identical;
#   3. stories260K (llama2.c: head_dim 8, down K = 172, F32 weights, tied classifier): the same
#      logits comparison against `--device cpu` for none and all, and `nibble run --device cuda
#      --mxfp4-layers none` must print the reference C implementation's 256-step greedy text;
#   4. BENCH=1: a Llama-3-8B-shaped synthetic model (hidden 4096, 32 layers, 32/8 heads x 128,
#      FFN 14336, vocab 128256, BF16, untied; ~16 GB, synthesized once into BENCH_DIR), decode
#      of 128 tokens at batch 1 for --mxfp4-layers none / qkv,o,mlp / all: tokens/s, and the
#      bandwidth floor per token (linear-layer weight bytes / measured copy bandwidth).
# A table is printed last; logs and logits go to $OUT. Exit status 1 if any case fails.
#
# BOUND: the CUDA linear layers get F32 activations by default (CUDA_ACTIVATIONS=f32): the
# MXFP4 GEMV and the cuBLAS layers see each activation as two BF16 terms, ~2^-17 relative, so
# the logits agree with the CPU's to ~1e-5 of max |logit|: BOUND 1e-4. With
# CUDA_ACTIVATIONS=bf16 one rounding per activation (2^-9) costs ~1e-2: BOUND 5e-2, and the
# greedy continuations are compared but not required to match (a near-tie may flip).
#
# nibble: a bundle (scripts/device/bundle.sh), made on the development machine:
#     scripts/device/bundle.sh build/gpu-bundle
# then on the device, with build/gpu-bundle carried along:
#     NIBBLE_BUNDLE=build/gpu-bundle scripts/device/llama_gpu_check.sh
#     NIBBLE_BUNDLE=build/gpu-bundle BENCH=1 BENCH_ONLY=1 scripts/device/llama_gpu_check.sh
# Environment: OUT (default build/llama-gpu-check), CHECK_DIR (default $OUT/checkpoints),
# NIBBLE / NIBBLE_BUNDLE, CUDA_ACTIVATIONS (f32|bf16), BOUND, BENCH=1, BENCH_ONLY=1,
# BENCH_DIR (default build/llama3-8b-shape), BENCH_LAYERS (default "none qkv,o,mlp all"),
# BENCH_FLAGS (more eval flags for the benchmark, e.g. "--no-cuda-graphs --no-fuse"),
# BENCH_VARIANTS (an A/B in one call: flag sets separated by ';', each run in turn for every
# BENCH_LAYERS; a word NAME=VALUE sets an environment variable, and NIBBLE=PATH runs another
# build, e.g. ";--no-fuse" or ";NIBBLE=ab/before/run-nibble" (this build, then the other);
# default BENCH_FLAGS alone), BENCH_ROUNDS (default 1: rounds of the variants, alternated so
# that clocks and heat weigh on each alike), PYTHON,
# PROFILE=1 (with BENCH=1: Nsight Compute's time for each kernel of a decode step).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/scripts/device/bundle.sh"
nibble_setup || exit 1
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/build/llama-gpu-check}
CHECK_DIR=${CHECK_DIR:-$OUT/checkpoints}
ACT=${CUDA_ACTIVATIONS:-f32}
case $ACT in
  f32) BOUND=${BOUND:-1e-4}; GREEDY_REQUIRED=1 ;;
  bf16) BOUND=${BOUND:-5e-2}; GREEDY_REQUIRED=0 ;;
  *) echo "CUDA_ACTIVATIONS must be f32 or bf16, got $ACT"; exit 2 ;;
esac
mkdir -p "$OUT/logs" "$OUT/logits"
rows=()     # table rows
failed=0

{
  echo "== date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "== nibble commit: $NIBBLE_COMMIT"
  nibble version || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
} > "$OUT/env.log" 2>&1

# compare NAME LAYERS CPU_LOGITS GPU_LOGITS CPU_GREEDY GPU_LOG: appends a row; sets failed.
compare() {
  local name=$1 layers=$2 ref=$3 got=$4 want_greedy=$5 log=$6 line
  line=$("$PYTHON" - "$ref" "$got" "$want_greedy" "$log" "$BOUND" "$GREEDY_REQUIRED" <<'EOF'
import array, math, sys
ref_path, got_path, want, log, bound, greedy_required = sys.argv[1:7]
def load(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a
ref, got = load(ref_path), load(got_path)
if len(ref) != len(got) or not ref:
    print(f"size {len(got)} vs {len(ref)} | - | FAIL"); sys.exit()
nan = any(math.isnan(x) for x in got)
rel = max(abs(a - b) for a, b in zip(ref, got)) / max(abs(a) for a in ref)
have = ""
for l in open(log):
    if l.startswith("greedy: "):
        have = l[len("greedy: "):].split()
greedy_ok = want.split() == have
first = next((i for i, (a, b) in enumerate(zip(want.split(), have)) if a != b), None)
greedy = "same" if greedy_ok else f"differs at {first}"
ok = not nan and rel <= float(bound) and (greedy_ok or greedy_required == "0")
print(f"{'NaN' if nan else f'{rel:.2e}'} | {greedy} | {'ok' if ok else 'FAIL'}")
EOF
)
  rows+=("| $name | $layers | $line |")
  [[ $line == *FAIL* ]] && failed=1
}

# eval_cuda DIR LAYERS TOKENS DUMP LOG [EXTRA...]: eval --tokens on the device.
eval_on() {
  local device=$1 dir=$2 layers=$3 tokens=$4 dump=$5 log=$6
  shift 6
  nibble eval -m "$dir" --device "$device" --mxfp4-layers "$layers" --tokens "$tokens" \
    --dump-logits "$dump" --greedy 32 "$@" > "$log" 2>&1
}

if [[ ${BENCH_ONLY:-0} != 1 ]]; then
  # ---- 1. checkpoints ---------------------------------------------------------------------------
  if ! ls "$CHECK_DIR"/*/nibble_check.json > /dev/null 2>&1; then
    NIBBLE=$NIBBLE_CMD bash "$ROOT/scripts/device/llama_check.sh" "$CHECK_DIR" > "$OUT/logs/make.log" 2>&1 ||
      { tail -20 "$OUT/logs/make.log"; echo "making the checkpoints FAILED"; exit 1; }
  fi

  # ---- 2. synthetic checkpoints: CUDA vs the CPU's synth --check ------------------------------------
  for dir in "$CHECK_DIR"/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    tokens=$("$PYTHON" -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["tokens"])))' "$dir/nibble_check.json")
    for tag in fp mxfp4; do
      if [[ $tag == fp ]]; then layers=none; else
        layers=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["mxfp4_layers"])' "$dir/nibble_check.json")
      fi
      want=$("$PYTHON" -c 'import json,sys; print(" ".join(map(str, json.load(open(sys.argv[1]))["greedy_" + sys.argv[2]])))' "$dir/nibble_check.json" "$tag")
      log=$OUT/logs/${name}_$tag.log
      got=$OUT/logits/${name}_$tag.f32
      if eval_on cuda "$dir" "$layers" "$tokens" "$got" "$log" --cuda-activations "$ACT"; then
        compare "$name" "$layers" "$dir/nibble_logits_$tag.f32" "$got" "$want" "$log"
      else
        rows+=("| $name | $layers | nibble failed: $(tail -1 "$log") | - | FAIL |")
        failed=1
      fi
    done
  done

  # ---- 3. stories260K --------------------------------------------------------------------------------
  stories=$ROOT/models/stories260K
  tokens=$("$PYTHON" -c 'import random; r = random.Random(260); print(",".join(str(r.randrange(3, 512)) for _ in range(40)))')
  for layers in none all; do
    cpu=$OUT/logits/stories260K_${layers}_cpu.f32
    gpu=$OUT/logits/stories260K_${layers}_cuda.f32
    if eval_on cpu "$stories" "$layers" "$tokens" "$cpu" "$OUT/logs/stories260K_${layers}_cpu.log" \
         --mxfp4-kernel cpu_simd &&
       eval_on cuda "$stories" "$layers" "$tokens" "$gpu" "$OUT/logs/stories260K_${layers}_cuda.log" \
         --cuda-activations "$ACT"; then
      want=$(sed -n 's/^greedy: //p' "$OUT/logs/stories260K_${layers}_cpu.log")
      compare stories260K "$layers" "$cpu" "$gpu" "$want" "$OUT/logs/stories260K_${layers}_cuda.log"
    else
      rows+=("| stories260K | $layers | nibble failed (logs/stories260K_${layers}_*.log) | - | FAIL |")
      failed=1
    fi
  done
  run_log=$OUT/logs/stories260K_run_cuda.log
  nibble run -m "$stories" -p "Once upon a time" -n 252 --mxfp4-layers none --device cuda \
    --cuda-activations "$ACT" > "$OUT/stories260K_run_cuda.txt" 2> "$run_log"
  if cmp -s "$OUT/stories260K_run_cuda.txt" "$stories/greedy_once_upon_a_time.txt"; then
    rows+=("| stories260K run -n 252 | none | text = reference C implementation's | - | ok |")
  else
    rows+=("| stories260K run -n 252 | none | text differs from the reference ($OUT/stories260K_run_cuda.txt) | - | FAIL |")
    failed=1
  fi
fi

# ---- 4. decode benchmark, Llama-3-8B shape -----------------------------------------------------
bench_rows=()
if [[ ${BENCH:-0} == 1 ]]; then
  bdir=${BENCH_DIR:-$ROOT/build/llama3-8b-shape}
  if [[ ! -f $bdir/model.safetensors ]]; then
    start=$(date +%s)
    nibble synth --arch llama --hidden 4096 --layers 32 --heads 32 --kv-heads 8 --head-dim 128 \
      --ffn 14336 --vocab 128256 --max-seq 4096 --parallel-fill -o "$bdir" > "$OUT/logs/bench_synth.log" 2>&1 ||
      { tail -5 "$OUT/logs/bench_synth.log"; echo "synthesizing the benchmark model FAILED"; exit 1; }
    echo "synthesized $bdir in $(( $(date +%s) - start )) s ($(du -sh "$bdir" | cut -f1))"
  fi
  IFS=';' read -ra variants <<< "${BENCH_VARIANTS:-${BENCH_FLAGS:-}}"
  ((${#variants[@]})) || variants=("")
  for ((round = 1; round <= ${BENCH_ROUNDS:-1}; ++round)); do
    for v in "${!variants[@]}"; do
      envs=() flags=() cmd=$NIBBLE_CMD
      for word in ${variants[v]}; do
        if [[ $word == NIBBLE=* ]]; then cmd=${word#NIBBLE=}
        elif [[ $word == [A-Za-z_]*=* ]]; then envs+=("$word")
        else flags+=("$word"); fi
      done
      for layers in ${BENCH_LAYERS:-none qkv,o,mlp all}; do
        log=$OUT/logs/bench_${layers//,/_}_v${v}_r${round}.log
        env "${envs[@]}" "$cmd" eval -m "$bdir" --device cuda --mxfp4-layers "$layers" \
          --cuda-activations "$ACT" --tokens 1,2,3,4,5,6,7,8 --greedy 128 "${flags[@]}" > "$log" 2>&1
        speed=$(sed -n 's/.*generated \([0-9]*\) tokens, \([0-9.]*\) tokens\/s, \([0-9.]*\) ms\/token.*/\2 | \3/p' "$log")
        floor=$(sed -n 's/^floor: \([0-9.]*\) MiB .* copy \([0-9]*\) GB\/s .* = \([0-9.]*\) ms\/token; decode at \([0-9]*\) %.*/\1 | \2 | \3 | \4 %/p' "$log")
        name="$layers${variants[v]:+ ${variants[v]}}$( ((${BENCH_ROUNDS:-1} > 1)) && echo " (round $round)")"
        if [[ -n $speed && -n $floor ]]; then
          bench_rows+=("| $name | $speed | $floor |")
        else
          bench_rows+=("| $name | FAILED: $(tail -1 "$log") | | | | |")
          failed=1
        fi
      done
    done
  done
fi

# ---- 5. PROFILE=1: each kernel of a decode step, in place ---------------------------------------
# Nsight Compute times every kernel of about one decode step (--mxfp4-layers all) after a few
# steps, the clocks and caches left as they are. It runs them one at a time (no chained
# overlap), so the durations sum to more than a step; what they show is the share of each.
profile_rows=()
if [[ ${PROFILE:-0} == 1 && ${BENCH:-0} == 1 ]]; then
  csv=$OUT/logs/profile_all.csv
  ncu --clock-control none --cache-control none --launch-skip 1200 --launch-count 292 \
      --metrics gpu__time_duration.sum --print-kernel-base function --csv "$NIBBLE_CMD" eval -m "$bdir" --device cuda \
      --mxfp4-layers all --cuda-activations "$ACT" --tokens 1,2,3,4,5,6,7,8 --greedy 16 \
      ${BENCH_FLAGS:-} > "$csv" 2> "$OUT/logs/profile_all.log"
  mapfile -t profile_rows < <("$PYTHON" - "$csv" <<'EOF'
import csv, sys
from collections import defaultdict
total, count = defaultdict(float), defaultdict(int)
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for row in csv.DictReader(lines):
    if row.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = row["Kernel Name"]
    unit = row["Metric Unit"]
    v = float(row["Metric Value"].replace(",", ""))
    v *= {"ns": 1e-3, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(unit, 1.0)  # to us
    total[name] += v
    count[name] += 1
all_us = sum(total.values())
for name in sorted(total, key=total.get, reverse=True):
    print(f"| {name} | {count[name]} | {total[name] / count[name]:.2f} | {total[name]:.1f} | {100 * total[name] / all_us:.0f} % |")
print(f"| all | {sum(count.values())} | | {all_us:.1f} | 100 % |")
EOF
)
fi

# ---- summary -------------------------------------------------------------------------------------
echo
cat "$OUT/env.log"
echo "CUDA activations: $ACT; bound on max|diff|/max|logit|: $BOUND; greedy identity required: $([[ $GREEDY_REQUIRED == 1 ]] && echo yes || echo no)"
if ((${#rows[@]})); then
  echo
  echo "| case | --mxfp4-layers | max\|diff\|/max\|logit\| | greedy (32) | result |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
fi
if ((${#bench_rows[@]})); then
  echo
  echo "Decode, batch 1, 128 tokens after an 8-token prompt (Llama-3-8B shape, BF16 source):"
  echo "| --mxfp4-layers | tokens/s | ms/token | weights MiB/token | copy GB/s | floor ms/token | % of floor |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${bench_rows[@]}"
fi
if ((${#profile_rows[@]})); then
  echo
  echo "Kernels of ~one decode step (all, ncu, one at a time; logs/profile_all.csv):"
  echo "| kernel | launches | mean us | total us | share |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${profile_rows[@]}"
fi
echo
echo "llama_gpu_check: $([[ $failed == 0 ]] && echo PASSED || echo FAILED) (logs in $OUT)"
exit $failed
