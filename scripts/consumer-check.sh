#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Builds a program against an installed libfiber, as a user's build
# would: make install into a staging DESTDIR (PREFIX=/usr), then
# examples/consumer.c compiled with only what pkg-config gives through
# that DESTDIR, linked dynamically and then statically (libfiber.a and
# liburing.a, libc dynamic as libfiber requires), and each run. TAP on
# stdout. Usage: consumer-check.sh WORKDIR (emptied first).
work=${1:?}
cc=${CC:-gcc}
. "$(dirname "$0")/tap.sh"

rm -rf "$work"
mkdir -p "$work"
dest=$work/destdir
log=$work/log

if make --no-print-directory install DESTDIR="$dest" PREFIX=/usr > "$log" 2>&1; then
	tap ok "consumer: make install DESTDIR= PREFIX=/usr"
else
	tap "not ok" "consumer: make install DESTDIR= PREFIX=/usr" "$log"
	tap_end
	exit 1
fi

export PKG_CONFIG_SYSROOT_DIR="$dest"
export PKG_CONFIG_PATH="$dest/usr/lib/pkgconfig"

# build_and_run NAME PKG_CONFIG_FLAGS BEFORE_FLAGS AFTER_FLAGS
build_and_run() {
	name=$1 exe=$work/consumer-$1
	if ! flags=$(pkg-config $2 --cflags --libs libfiber 2> "$log"); then
		tap "not ok" "consumer ($name): pkg-config $2 --cflags --libs libfiber" "$log"
		return
	fi
	# shellcheck disable=SC2086
	if ! $cc -O2 -Wall -Werror -o "$exe" examples/consumer.c $3 $flags $4 > "$log" 2>&1; then
		echo "flags: $flags" >> "$log"
		tap "not ok" "consumer ($name): build" "$log"
		return
	fi
	# The dynamic one needs libfiber.so.1; the static one neither it nor
	# liburing.so.
	needed=$(readelf -d "$exe" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')
	case $name in
	static)  echo "$needed" | grep -qE 'libfiber|liburing' && linked=no || linked=yes ;;
	dynamic) echo "$needed" | grep -q 'libfiber\.so\.1' && linked=yes || linked=no ;;
	esac
	if [ "$linked" = no ]; then
		echo "NEEDED: $needed" > "$log"
		tap "not ok" "consumer ($name): linked as asked" "$log"
		return
	fi
	if LD_LIBRARY_PATH="$dest/usr/lib" timeout 60 "$exe" > "$log" 2>&1 &&
	   grep -q '^consumer: ok' "$log"; then
		tap ok "consumer ($name): pkg-config${2:+ $2} build and run: $(cat "$log")"
	else
		tap "not ok" "consumer ($name): run" "$log"
	fi
}

build_and_run dynamic "" "" ""
# libfiber.a and liburing.a, then libc and the rest dynamically.
build_and_run static --static -Wl,-Bstatic -Wl,-Bdynamic
tap_end
