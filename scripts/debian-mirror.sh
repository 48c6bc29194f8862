#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Prints the first non-security Debian archive URI this machine's apt
# sources name, for the scripts that fetch from another suite: the
# mirror is the machine's own, never one written into the repository.
set -eu
{
	cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *//p' | tr ' ' '\n'
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p'
} | grep -v security | grep -m1 '/debian/\{0,1\}$' ||
	{ echo "debian-mirror.sh: no Debian mirror in /etc/apt sources" >&2; exit 1; }
