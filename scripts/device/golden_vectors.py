#!/usr/bin/env python3
"""Golden vectors for Nibble's format codecs, from independent implementations.

Runs where ml_dtypes and PyTorch are installed (the lent GPU machine; no GPU needed):

    python3 scripts/device/golden_vectors.py OUT_DIR

and writes small little-endian binary files plus manifest.json (versions, layouts) into OUT_DIR.
They are committed under tests/data/golden/ and checked by tests/format/golden_test.cpp.

Files (N = number of F32 probe inputs):
  f32_inputs.bin            N x f32: ties and neighbours of every format, edges, random values
  e2m1_ml_dtypes.bin        N x u8: ml_dtypes.float4_e2m1fn code of each input (NaN inputs: 0xff)
  e4m3_ml_dtypes.bin        N x u8: ml_dtypes.float8_e4m3fn
  e4m3_torch.bin            N x u8: torch float32 -> float8_e4m3fn
  e5m2_ml_dtypes.bin        N x u8: ml_dtypes.float8_e5m2
  e5m2_torch.bin            N x u8: torch float32 -> float8_e5m2
  bf16_torch.bin            N x u16: torch float32 -> bfloat16
  f16_torch.bin             N x u16: torch float32 -> float16
  e4m3_from_bf16_ml_dtypes.bin  65536 x u8: every BF16 bit pattern -> float8_e4m3fn
  e5m2_from_bf16_ml_dtypes.bin  65536 x u8: every BF16 bit pattern -> float8_e5m2
  e2m1_decode_ml_dtypes.bin 16 x f32, e8m0_decode_ml_dtypes.bin 256 x f32,
  e4m3_decode_ml_dtypes.bin 256 x f32, e5m2_decode_ml_dtypes.bin 256 x f32: every code decoded
"""
import json
import os
import sys

import ml_dtypes
import numpy as np
import torch


def neighbours(values):
    """Each value and one F32 ulp either side of it."""
    v = np.asarray(values, dtype=np.float32)
    return np.concatenate([v, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))])


def midpoints(dtype):
    """Midpoints between consecutive finite non-negative values of an ml_dtypes type (exact in F32)."""
    bits = np.arange(256 if np.dtype(dtype).itemsize == 1 else 16, dtype=np.uint8)
    values = bits.view(dtype).astype(np.float64) if dtype != ml_dtypes.float4_e2m1fn else \
        np.array([float(ml_dtypes.float4_e2m1fn(x)) for x in [0, 0.5, 1, 1.5, 2, 3, 4, 6]])
    values = np.unique(values[np.isfinite(values) & (values >= 0)])
    mids = (values[1:] + values[:-1]) / 2
    step = values[-1] - values[-2]
    edges = [values[-1] + step / 2, values[-1] + step, values[-1] * 2]  # the overflow boundary
    return np.concatenate([values, mids, edges]).astype(np.float32)


def probe_inputs(rng):
    parts = []
    parts.append(midpoints(ml_dtypes.float4_e2m1fn))
    parts.append(midpoints(ml_dtypes.float8_e4m3fn))
    parts.append(midpoints(ml_dtypes.float8_e5m2))
    parts.append(np.arange(-80, 81, dtype=np.float32) / 8)  # multiples of 1/8 in [-10, 10]
    parts.append(np.array([0.0, 1e-30, 1e-45, 2.0**-149, 2.0**-126, 2.0**-127, 2.0**-9, 2.0**-10,
                           2.0**-16, 2.0**-17, 464.0, 480.0, 500.0, 1e4, 61440.0, 65536.0, 1e30,
                           3.4e38], dtype=np.float32))
    magnitudes = np.exp2(rng.uniform(-20, 20, 2048)).astype(np.float32)
    parts.append(magnitudes)
    parts.append(rng.normal(0, 3, 1024).astype(np.float32))
    x = neighbours(np.concatenate(parts))
    x = np.concatenate([x, -x])
    specials = np.array([np.inf, -np.inf, np.nan, -np.nan, -0.0], dtype=np.float32)
    return np.concatenate([x, specials]).astype(np.float32)


def codes_ml_dtypes(x, dtype):
    with np.errstate(all="ignore"):
        out = x.astype(dtype).view(np.uint8).copy()
    if dtype == ml_dtypes.float4_e2m1fn:
        out[np.isnan(x)] = 0xFF  # no NaN in E2M1: not compared
    return out


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261124)
    x = probe_inputs(rng)
    xt = torch.from_numpy(x.copy())
    files = {}

    errors = {}

    def save(name, make, description):
        # One failing generator (an older ml_dtypes without a type, say) must not lose the rest.
        try:
            array = np.ascontiguousarray(make())
        except Exception as e:  # noqa: BLE001 - reported in the manifest
            errors[name] = repr(e)
            print("failed:", name, repr(e), file=sys.stderr)
            return
        array.tofile(os.path.join(out_dir, name))
        files[name] = {"dtype": str(array.dtype), "count": int(array.size), "description": description}

    save("f32_inputs.bin", lambda: x, "probe inputs (F32)")
    save("e2m1_ml_dtypes.bin", lambda: codes_ml_dtypes(x, ml_dtypes.float4_e2m1fn), "ml_dtypes float4_e2m1fn codes")
    save("e4m3_ml_dtypes.bin", lambda: codes_ml_dtypes(x, ml_dtypes.float8_e4m3fn), "ml_dtypes float8_e4m3fn codes")
    save("e5m2_ml_dtypes.bin", lambda: codes_ml_dtypes(x, ml_dtypes.float8_e5m2), "ml_dtypes float8_e5m2 codes")
    save("e4m3_torch.bin", lambda: xt.to(torch.float8_e4m3fn).view(torch.uint8).numpy(), "torch float8_e4m3fn codes")
    save("e5m2_torch.bin", lambda: xt.to(torch.float8_e5m2).view(torch.uint8).numpy(), "torch float8_e5m2 codes")
    save("bf16_torch.bin", lambda: xt.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), "torch bfloat16 bits")
    save("f16_torch.bin", lambda: xt.to(torch.float16).view(torch.int16).numpy().view(np.uint16), "torch float16 bits")

    bf16_all = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    save("e4m3_from_bf16_ml_dtypes.bin", lambda: codes_ml_dtypes(bf16_all, ml_dtypes.float8_e4m3fn),
         "every BF16 pattern -> ml_dtypes float8_e4m3fn")
    save("e5m2_from_bf16_ml_dtypes.bin", lambda: codes_ml_dtypes(bf16_all, ml_dtypes.float8_e5m2),
         "every BF16 pattern -> ml_dtypes float8_e5m2")

    codes16 = np.arange(16, dtype=np.uint8)
    save("e2m1_decode_ml_dtypes.bin", lambda: codes16.view(ml_dtypes.float4_e2m1fn).astype(np.float32),
         "every E2M1 code decoded by ml_dtypes")
    codes256 = np.arange(256, dtype=np.uint8)
    save("e8m0_decode_ml_dtypes.bin", lambda: codes256.view(ml_dtypes.float8_e8m0fnu).astype(np.float32),
         "every E8M0 code decoded by ml_dtypes")
    save("e4m3_decode_ml_dtypes.bin", lambda: codes256.view(ml_dtypes.float8_e4m3fn).astype(np.float32),
         "every E4M3FN code decoded by ml_dtypes")
    save("e5m2_decode_ml_dtypes.bin", lambda: codes256.view(ml_dtypes.float8_e5m2).astype(np.float32),
         "every E5M2 code decoded by ml_dtypes")

    # What the generators do out of range (recorded, then documented in src/format/*.h).
    def show(dtype, values):
        with np.errstate(all="ignore"):
            return {str(v): str(np.float32(v).astype(dtype).astype(np.float32)) for v in values}

    def attempt(f):
        try:
            return f()
        except Exception as e:  # noqa: BLE001
            return repr(e)

    notes = {
        "e2m1_out_of_range": attempt(lambda: show(ml_dtypes.float4_e2m1fn, [6.5, 7.0, 10.0, 1e30, np.inf, -np.inf])),
        "e4m3_out_of_range": attempt(lambda: show(ml_dtypes.float8_e4m3fn, [449.0, 464.0, 465.0, 1e30, np.inf])),
        "e5m2_out_of_range": attempt(lambda: show(ml_dtypes.float8_e5m2, [57345.0, 61440.0, 1e30])),
        "torch_e4m3_out_of_range": attempt(lambda: {str(v): str(torch.tensor([v]).to(torch.float8_e4m3fn).float().item())
                                    for v in [449.0, 464.0, 465.0, 1e30, float("inf")]}),
        "torch_e5m2_out_of_range": attempt(lambda: {str(v): str(torch.tensor([v]).to(torch.float8_e5m2).float().item())
                                    for v in [57345.0, 61440.0, 1e30]}),
    }
    manifest = {
        "generator": "scripts/device/golden_vectors.py",
        "ml_dtypes": ml_dtypes.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "byte_order": "little",
        "files": files,
        "errors": errors,
        "notes": notes,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(notes, indent=1))
    print("wrote", len(files), "files,", sum(os.path.getsize(os.path.join(out_dir, n)) for n in files), "bytes")


if __name__ == "__main__":
    main()
