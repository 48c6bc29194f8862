#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Unpacks a Debian amd64 kernel of another suite (its image, headers and
# kbuild tools), and the arm64 headers of the same version, into $3, for
# the kernel matrix: $1 the suite (e.g. bookworm-backports), $2 the kernel
# series (e.g. 6.12). The newest version of that series in the suite is
# taken; its ABI names (e.g. 6.12.95+deb12-amd64) are written to $3/kver
# and $3/kver-arm64. The arm64 headers use the host's kbuild tools (their
# scripts link resolves to the amd64 package's). The suite is read from the
# mirror this machine's apt sources already name, with apt state of its
# own under $3: the system's apt configuration is left as it is.
set -eu
suite=$1
series=$2
root=$3

# The first non-security Debian archive URI in the machine's sources.
mirror=$(
	{
		cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *//p' | tr ' ' '\n'
		cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p'
	} | grep -v security | grep -m1 '/debian/\{0,1\}$'
) || { echo "debian-kernel.sh: no Debian mirror in /etc/apt sources" >&2; exit 1; }

rm -rf "$root"
mkdir -p "$root/apt/lists/partial" "$root/apt/cache/archives/partial" "$root/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
	> "$root/apt/sources.list"
set -- -o Dir::Etc::sourcelist="$root/apt/sources.list" -o Dir::Etc::sourceparts=- \
	-o Dir::State::Lists="$root/apt/lists" -o Dir::Cache="$root/apt/cache" \
	-o Debug::NoLocking=1
apt-get "$@" -q update >/dev/null
kver=$(apt-cache "$@" search --names-only "^linux-image-$series\.[0-9.]*[^ ]*-amd64-unsigned\$" |
	sed -n "s/^linux-image-\($series\.[^ ]*-amd64\)-unsigned .*/\1/p" |
	grep -vE -- '-(rt|cloud)-amd64$' | sort -V | tail -n 1)
[ -n "$kver" ] || { echo "debian-kernel.sh: no linux-image-$series in $suite" >&2; exit 1; }
abi=${kver%-amd64}
cd "$root/debs"
set -- "$@" download "linux-image-$kver-unsigned" "linux-headers-$kver" \
	"linux-headers-$abi-common" "linux-kbuild-$abi" "linux-headers-$abi-arm64:arm64"
apt-get -q "$@" >/dev/null 2>&1 || apt-get "$@"
for deb in *.deb; do
	dpkg -x "$deb" "$root"
done
cd "$root"
rm -rf debs apt
# The headers include their common part by its installed path: point it here.
sed -i "s|^include /usr/src/|include $root/usr/src/|" \
	"usr/src/linux-headers-$kver/Makefile" "usr/src/linux-headers-$abi-arm64/Makefile"
echo "$kver" > kver
echo "$abi-arm64" > kver-arm64
