#!/usr/bin/env python3
"""Nibble's Llama-family models against transformers' classes (issue 10, device check).

Input: directories written by `nibble synth --arch A -o DIR --check N` (scripts/device/llama_check.sh
makes them): a random checkpoint (config.json + model.safetensors), Nibble's logits for N random
tokens in full precision and with every linear layer in MXFP4 (nibble_logits_{fp,mxfp4}.f32),
Nibble's greedy continuations (32 tokens) and mxfp4_dequant/, the same checkpoint with each
MXFP4 layer replaced by its exact dequantized weights.

For each directory, on every device available (cuda, cpu), transformers' own class for the
architecture loads the checkpoint in float32 and:
  - its logits for the N tokens are compared with Nibble's (max |diff| / max |logit|, bound
    below), and its greedy continuation of 32 tokens must equal Nibble's;
  - the same with mxfp4_dequant/ against Nibble's MXFP4 logits and continuation.
Prints one line per case and a summary; exits 1 if any case fails.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

# Bound on max |logit difference| / max |logit| (float32 on both sides, different summation
# orders and, on CUDA, different kernels: ~1e-6 expected; 1e-4 leaves room, a wrong RoPE,
# bias, norm or mask gives > 1e-1).
REL_BOUND = 1e-4


def load(path, device):
    kwargs = {"dtype": torch.float32}
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except TypeError:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    return model.to(device).eval()


def greedy(model, tokens, n, device):
    ids = torch.tensor([tokens], device=device)
    out = []
    past = None
    with torch.no_grad():
        for _ in range(n):
            res = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = int(torch.argmax(res.logits[0, -1]).item())
            out.append(nxt)
            ids = torch.tensor([[nxt]], device=device)
    return out


def check(directory, device):
    meta = json.load(open(os.path.join(directory, "nibble_check.json")))
    tokens, vocab = meta["tokens"], meta["vocab"]
    ok = True
    lines = []
    for tag, path in (("fp", directory), ("mxfp4", os.path.join(directory, "mxfp4_dequant"))):
        model = load(path, device)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokens], device=device)).logits[0].float().cpu().numpy()
        ours = np.fromfile(os.path.join(directory, f"nibble_logits_{tag}.f32"), dtype=np.float32)
        ours = ours.reshape(len(tokens), vocab)
        if not np.all(np.isfinite(ours)) or not np.all(np.isfinite(logits)):
            rel = float("nan")
        else:
            rel = float(np.max(np.abs(ours - logits)) / np.max(np.abs(logits)))
        cont = greedy(model, tokens, 32, device)
        same = cont == meta[f"greedy_{tag}"]
        first_diff = next((i for i, (a, b) in enumerate(zip(cont, meta[f"greedy_{tag}"])) if a != b), None)
        case_ok = rel < REL_BOUND and same
        ok &= case_ok
        lines.append(f"{'ok  ' if case_ok else 'FAIL'} {os.path.basename(directory):24s} {device:4s} {tag:5s} "
                     f"{type(model).__name__:20s} max|diff|/max|logit| {rel:.2e} "
                     f"greedy32 {'identical' if same else f'differs at {first_diff}'}")
        del model
    return ok, lines


def main():
    dirs = sys.argv[1:]
    devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, devices {devices}, "
          f"bound {REL_BOUND:g}")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print("GPU:", torch.cuda.get_device_name(0))
    all_ok = True
    for d in dirs:
        for dev in devices:
            ok, lines = check(d, dev)
            all_ok &= ok
            print("\n".join(lines), flush=True)
    print("ALL OK" if all_ok else "SOME CASES FAILED")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
