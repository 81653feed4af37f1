#!/usr/bin/env bash
# scripts/device/make_sysroot.sh DEST: copies the Debian headers and libraries that
# scripts/device/check.sh's plain build needs (the lent GPU machines lack the -dev packages)
# from this (Debian 12, x86-64) machine into DEST/{include,lib}. Nothing from outside Debian.
set -euo pipefail
DEST=${1:?usage: make_sysroot.sh DEST}
mkdir -p "$DEST/include" "$DEST/lib"
for d in fmt gtest gmock hwy CLI; do cp -r "/usr/include/$d" "$DEST/include/"; done
LIB=/usr/lib/x86_64-linux-gnu
cp "$LIB/libgtest.a" "$LIB/libgtest_main.a" "$DEST/lib/"
cp -L "$LIB/libhwy.so.1" "$DEST/lib/libhwy.so.1"
ln -sf libhwy.so.1 "$DEST/lib/libhwy.so"
echo "sysroot in $DEST: $(du -sh "$DEST" | cut -f1)"
