#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Extracts the kernel's own kselftest_harness.h and kselftest.h, the
# kselftest framework (lib.mk, the runner) and checkpatch.pl with its data
# files, from Debian's linux-source-6.1 tarball into $1. They are build
# inputs, never part of the repository.
set -eu
out=$1
tarball=${LINUX_SOURCE_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
if [ ! -r "$tarball" ]; then
	echo "kselftest-headers.sh: $tarball not found; run 'make deps'" >&2
	exit 1
fi
top=$(basename "$tarball" .tar.xz)
mkdir -p "$out"
tar -xJf "$tarball" -C "$out" --strip-components=1 \
	"$top/tools/testing/selftests/kselftest_harness.h" \
	"$top/tools/testing/selftests/kselftest.h" \
	"$top/tools/testing/selftests/lib.mk" \
	"$top/tools/testing/selftests/Makefile" \
	"$top/tools/testing/selftests/run_kselftest.sh" \
	"$top/tools/testing/selftests/kselftest" \
	"$top/scripts/subarch.include" \
	"$top/scripts/checkpatch.pl" \
	"$top/scripts/spelling.txt" \
	"$top/scripts/const_structs.checkpatch"
