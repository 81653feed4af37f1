#!/usr/bin/env bash
# scripts/device/gemv_profile.sh: Nsight Compute's view of one sm80_mxfp4_gemv launch, on the
# GPU machine: where the warps stall, how busy the memory system and each pipe is. Builds with
# scripts/device/check.sh (CHECK_BUILD_ONLY=1; the same environment, CHECK_BUNDLE too) unless
# check.sh has built or linked the benchmark already, then profiles the first
# M = 1 launches of cuda_gemv_bench on one shape (the clocks left alone, as METHOD.md says).
#
#   PROFILE_SHAPE=down PROFILE_ARGS=--llama scripts/device/gemv_profile.sh
#
# Environment: PROFILE_SHAPE (a substring of a benchmark shape's name, default "down"),
# PROFILE_ARGS (more cuda_gemv_bench arguments, default --llama), PROFILE_SKIP (launches of
# the kernel skipped first, default 3: past the first, eager ones), OUT, and check.sh's.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/build/device-check}
mkdir -p "$OUT"
[[ -x $ROOT/build/device/cuda_gemv_bench ]] || CHECK_BUILD_ONLY=1 bash "$ROOT/scripts/device/check.sh" || exit 1
if [[ -n ${CHECK_BUNDLE:-} ]]; then
  source "$ROOT/scripts/device/bundle.sh"
  LD_LIBRARY_PATH=$(bundle_library_path "$CHECK_BUNDLE") && export LD_LIBRARY_PATH
fi
shape=${PROFILE_SHAPE:-down}
report=$OUT/ncu_${shape//[^A-Za-z0-9]/_}.txt
ncu --clock-control none --kernel-name regex:mxfp4_gemv_kernel \
    --launch-skip "${PROFILE_SKIP:-3}" --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section SchedulerStats --section Occupancy --section LaunchStats \
    --section InstructionStats --section SourceCounters \
    --metrics 'regex:^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$' \
    "$ROOT/build/device/cuda_gemv_bench" ${PROFILE_ARGS:---llama} --shape "$shape" --reps 3 \
    > "$report" 2>&1
rc=$?
# The report without its per-source tables (kept in the file).
sed -n '/mxfp4_gemv_kernel/,$p' "$report" | grep -vE '^\s*$|^\s*-+( -+)*\s*$' | grep -v issue_stalled | head -150
# Where the warps wait: the stall reasons, warps per issued instruction, largest first.
echo "stall reasons (warps stalled per issued instruction):"
grep -E 'issue_stalled_.*_per_issue_active' "$report" | awk '{printf "  %-40s %s\n", $1, $NF}' |
  sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | sort -k2 -gr | head -14
echo "ncu: rc=$rc (full report: $report)"
