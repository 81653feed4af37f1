#!/usr/bin/env python3
"""Instructions on the hot path of a kernel's main loop, counted in its SASS.

    nvcc -I src -O3 -DNDEBUG --generate-code=arch=compute_90a,code=sm_90a -std=c++20 \\
        -x cu -cubin src/kernels/cuda/sm80_mxfp4_gemv.cu -o /tmp/gemv.cubin
    scripts/device/sass_hot_path.py /tmp/gemv.cubin bfloat16Li2ELb0ELb1ELb0E [--list]

For every kernel whose mangled name contains the given text: the first loop (a backward
branch) holding at least --min-mma HMMA instructions, walked from its head to its branch back,
taking every unconditional forward branch and every conditional one that skips more than
--skip instructions (the rare paths: sm80_mxfp4_gemv's reduction at a tile group's end), so
the count is one trip round the loop as it runs in the steady state. Prints the trip's length,
per chunk of 8 HMMA (two tiles of sm80_mxfp4_gemv), and its opcode mix; --list prints the
trip's instructions.

nvdisasm: --nvdisasm, else $NVDISASM, else `nvdisasm` on PATH, else the one in the Triton
install of the lent GPU machines (the development machine has nvcc and ptxas only; copy that
binary back through $OUT to read SASS here). docs/perf.md quotes counts made with this script.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys


def find_nvdisasm(given):
    if given:
        return given
    if os.environ.get("NVDISASM"):
        return os.environ["NVDISASM"]
    if shutil.which("nvdisasm"):
        return "nvdisasm"
    try:
        import triton  # the lent machines' PyTorch brings it

        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    sys.exit("sass_hot_path.py: no nvdisasm (give --nvdisasm PATH or set NVDISASM)")


def functions(sass):
    """Yields (name, instructions, labels) per function: labels map to instruction indices."""
    for body in re.split(r"\n(?=\.text\.)", sass):
        if not body.startswith(".text."):
            continue
        name = body.split(":", 1)[0][len(".text."):]
        instructions, labels, pending = [], {}, []
        for line in body.splitlines():
            label = re.match(r"\s*(\.L_x_\d+):", line)
            if label:
                pending.append(label.group(1))
                continue
            ins = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
            if ins:
                for label_name in pending:
                    labels[label_name] = len(instructions)
                pending = []
                instructions.append(ins.group(1))
        yield name, instructions, labels


def branch_target(ins, labels):
    m = re.search(r"\bBRA\b.*`\((\.L_x_\d+)\)", ins)
    return labels.get(m.group(1)) if m else None


def opcode(ins):
    return re.sub(r"^@!?U?P\w+\s+", "", ins).split()[0].split(".")[0]


def hot_trip(instructions, labels, min_mma, skip):
    for end, ins in enumerate(instructions):
        head = branch_target(ins, labels)
        if head is None or head >= end:
            continue
        if sum("HMMA" in x for x in instructions[head:end + 1]) < min_mma:
            continue
        # pc only moves forward (a taken branch has target > pc), so the walk ends at `end`.
        trip, pc = [], head
        while pc <= end:
            ins = instructions[pc]
            trip.append(ins)
            target = branch_target(ins, labels)
            if pc != end and target is not None and target > pc and (
                    not ins.startswith("@") or target - pc > skip):
                pc = target
                continue
            pc += 1
        return trip
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cubin")
    parser.add_argument("kernel", help="text the kernel's mangled name contains")
    parser.add_argument("--nvdisasm")
    parser.add_argument("--min-mma", type=int, default=16)
    parser.add_argument("--skip", type=int, default=48)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    sass = subprocess.run([find_nvdisasm(args.nvdisasm), "-c", args.cubin], check=True,
                          capture_output=True, text=True).stdout
    found = False
    for name, instructions, labels in functions(sass):
        if args.kernel not in name:
            continue
        found = True
        trip = hot_trip(instructions, labels, args.min_mma, args.skip)
        if trip is None:
            print(f"{name}: no loop with {args.min_mma} HMMA")
            continue
        mix = collections.Counter(opcode(x) for x in trip)
        chunks = mix["HMMA"] / 8
        print(f"{name}: {len(trip)} instructions a trip, {len(trip) / chunks:.1f} per 8 HMMA")
        print("  " + ", ".join(f"{op} {n}" for op, n in mix.most_common()))
        if args.list:
            print("\n".join("    " + x for x in trip))
    if not found:
        sys.exit(f"sass_hot_path.py: no kernel named like {args.kernel} in {args.cubin}")


if __name__ == "__main__":
    main()
