#!/usr/bin/env python3
"""Independent check of `nibble quantize`'s gpt-oss layout with transformers' own MXFP4 code.

Dequantizes every *_blocks/*_scales pair of a `nibble quantize` output directory with
`transformers.integrations.mxfp4.convert_moe_packed_tensors` (in float32) and compares it bit
for bit with Nibble's dequantization of the same tensors (`nibble inspect DIR --dequantize
deq.safetensors`: F32 [.., N, K] per module). transformers returns experts as [E, K, N] (it
transposes for gpt-oss's x @ W forward); 2-D modules are given a leading axis of 1 and
transposed back.

    python3 scripts/device/quant_check.py OUT_DIR DEQ.safetensors [--source SRC_DIR]
    python3 scripts/device/quant_check.py --make-synthetic SRC_DIR   # stdlib only, runs anywhere

The synthetic input is a small gpt-oss-style BF16 checkpoint (fused experts [E, K, N], dense
attention, router); prepare it here, then:
    nibble quantize SRC -o OUT --mxfp4-layers moe,qkv,o
    nibble inspect OUT --dequantize DEQ.safetensors
and run the check on the device (torch + transformers).

With --source, also prints the NMSE of transformers' result against the BF16 source weights
(the quantization error, expected about 1e-2 for Gaussian weights). Exit status 1 on any
mismatch; prints one line per module.
"""
import argparse
import glob
import json
import os
import sys

import random
import struct


def make_synthetic(path, layers=2, hidden=128, inter=96, experts=4, vocab=64):
    """Writes a gpt-oss-style BF16 checkpoint with the standard library only."""
    os.makedirs(path, exist_ok=True)
    rng = random.Random()
    tensors = {}

    def bf16(shape, std=0.05):
        n = 1
        for d in shape:
            n *= d
        raw = b"".join(struct.pack("<f", rng.gauss(0.0, std))[2:] for _ in range(n))  # truncate to BF16
        tensors[name] = ("BF16", shape, raw)

    for name, shape in [("model.embed_tokens.weight", [vocab, hidden]), ("lm_head.weight", [vocab, hidden]),
                        ("model.norm.weight", [hidden])]:
        bf16(shape)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, shape in [(p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [64, hidden]),
                            (p + "self_attn.v_proj.weight", [64, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                            (p + "self_attn.sinks", [4]), (p + "mlp.router.weight", [experts, hidden]),
                            (p + "mlp.router.bias", [experts]),
                            (p + "mlp.experts.gate_up_proj", [experts, hidden, 2 * inter]),
                            (p + "mlp.experts.gate_up_proj_bias", [experts, 2 * inter]),
                            (p + "mlp.experts.down_proj", [experts, inter, hidden]),
                            (p + "mlp.experts.down_proj_bias", [experts, hidden]),
                            (p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden])]:
            bf16(shape)
    header, offset, data = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data.append(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(data))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "tie_word_embeddings": False,
                   "num_local_experts": experts, "hidden_size": hidden, "intermediate_size": inter}, f)


def load_dir(path):
    from safetensors.torch import load_file
    tensors = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        tensors.update(load_file(f))
    return tensors


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--make-synthetic":
        make_synthetic(sys.argv[2])
        return 0
    import torch
    from safetensors.torch import load_file
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("deq")
    ap.add_argument("--source")
    a = ap.parse_args()
    out = load_dir(a.out_dir)
    ours = load_file(a.deq)
    source = load_dir(a.source) if a.source else {}
    qc = json.load(open(os.path.join(a.out_dir, "config.json")))["quantization_config"]
    assert qc["quant_method"] == "mxfp4", qc
    failures = 0
    checked = 0
    for module, mine in sorted(ours.items()):
        base = module + ".weight" if module + ".weight_blocks" in out else module
        blocks, scales = out[base + "_blocks"], out[base + "_scales"]
        fused = blocks.dim() == 4
        b = blocks if fused else blocks.unsqueeze(0)
        s = scales if fused else scales.unsqueeze(0)
        theirs = convert_moe_packed_tensors(b.cuda() if torch.cuda.is_available() else b,
                                            s.cuda() if torch.cuda.is_available() else s,
                                            dtype=torch.float32).cpu()  # [E, K, N]
        theirs = theirs.transpose(1, 2).contiguous()  # [E, N, K], as ours
        if not fused:
            theirs = theirs[0]
        same_shape = tuple(theirs.shape) == tuple(mine.shape)
        same_bits = same_shape and torch.equal(theirs.view(torch.int32), mine.contiguous().view(torch.int32))
        line = f"{module}: shape {tuple(mine.shape)} {'bit-exact' if same_bits else 'MISMATCH'}"
        if not same_bits:
            failures += 1
            if same_shape:
                diff = (theirs != mine).sum().item()
                line += f" ({diff} elements differ)"
            else:
                line += f" (transformers gave {tuple(theirs.shape)})"
        if source:
            src = source.get(base)
            if src is not None:
                ref = src.float()
                if fused:  # gpt-oss BF16 experts are stored [E, K, N]
                    ref = ref.transpose(1, 2)
                nmse = ((theirs - ref) ** 2).sum().item() / (ref ** 2).sum().item()
                line += f", NMSE vs source {nmse:.4e}"
        print(line)
        checked += 1
    print(f"{checked} modules checked, {failures} mismatches; transformers "
          f"{__import__('transformers').__version__}, torch {torch.__version__}")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
