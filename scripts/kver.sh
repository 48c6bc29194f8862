#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Prints the kernel ABI version (e.g. 6.1.0-56-amd64) that Debian's
# linux-headers metapackage for the given flavour points at. The mirror
# moves to a new ABI with each security update, so it is derived, not fixed.
flavour=${1:-amd64}
meta=linux-headers-$flavour
dep=$(dpkg-query -W -f='${Depends}' "$meta" 2>/dev/null)
[ -n "$dep" ] || dep=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: //p' | head -n 1)
kver=$(printf '%s\n' "$dep" | tr ',' '\n' | sed -n "s/^ *linux-headers-\([0-9][^ ]*-$flavour\).*/\1/p" | head -n 1)
if [ -z "$kver" ]; then
	echo "kver.sh: cannot tell the kernel version of $meta; run 'make deps' or set KVER=" >&2
	exit 1
fi
echo "$kver"
