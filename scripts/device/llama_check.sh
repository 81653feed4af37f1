#!/usr/bin/env bash
# Makes the synthetic checkpoints of the Llama-family device check (issue 10) with a built
# `nibble`, into DIR (default build/llama_check): every family, >= 2 layers, GQA, head_dim 64
# and 128, tied and untied, llama3 RoPE scaling, a Mistral sliding window shorter than the
# sequence, and per-layer Qwen windows (qwen2: layer 1 only, as max_window_layers 1; qwen3:
# layers 0 and 2 of 3, as layer_types). Then, on a machine with transformers:
# python3 scripts/device/llama_check.py DIR/*
set -euo pipefail
cd "$(dirname "$0")/../.."
nibble=${NIBBLE:-build/release/tools/nibble}
out=${1:-build/llama_check}
rm -rf "$out"
mkdir -p "$out"
base=(--vocab 512 --ffn 384 --check 24 --check-layers all)
common=(--layers 2 "${base[@]}")
"$nibble" synth "${common[@]}" --arch llama   --hidden 256 --heads 4 --kv-heads 2 --head-dim 64  --llama3-rope -o "$out/llama_hd64_untied_l3rope" --seed 1
"$nibble" synth "${common[@]}" --arch llama   --hidden 256 --heads 2 --kv-heads 1 --head-dim 128 --tied        -o "$out/llama_hd128_tied" --seed 2
"$nibble" synth "${common[@]}" --arch mistral --hidden 256 --heads 4 --kv-heads 2 --head-dim 64  --sliding-window 8 -o "$out/mistral_hd64_window8" --seed 3
"$nibble" synth "${common[@]}" --arch qwen2   --hidden 256 --heads 4 --kv-heads 2 --head-dim 64  -o "$out/qwen2_hd64_untied" --seed 4
"$nibble" synth "${common[@]}" --arch qwen2   --hidden 256 --heads 2 --kv-heads 1 --head-dim 128 --tied -o "$out/qwen2_hd128_tied" --seed 5
"$nibble" synth "${common[@]}" --arch qwen3   --hidden 256 --heads 4 --kv-heads 2 --head-dim 128 -o "$out/qwen3_hd128_untied" --seed 6
"$nibble" synth "${common[@]}" --arch qwen3   --hidden 256 --heads 4 --kv-heads 1 --head-dim 64  --tied -o "$out/qwen3_hd64_tied" --seed 7
"$nibble" synth "${common[@]}" --arch qwen2   --hidden 256 --heads 4 --kv-heads 2 --head-dim 64  --sliding-window 8 --max-window-layers 1 -o "$out/qwen2_hd64_window8_layer1" --seed 8
"$nibble" synth --layers 3 "${base[@]}" --arch qwen3 --hidden 256 --heads 4 --kv-heads 2 --head-dim 64 --sliding-window 8 --window-layers 0,2 -o "$out/qwen3_hd64_window8_layers02" --seed 9
du -sh "$out"
