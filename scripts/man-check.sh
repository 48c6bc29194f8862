#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Lints the man pages and checks that every function fiber.h declares has
# one, as TAP on stdout: a line per page (groff -man -ww prints nothing;
# a .so link names a page that exists and lists the function in its NAME
# section), then a line per function of fiber.h. Usage: man-check.sh
# MANDIR HEADER
mandir=${1:?}
header=${2:?}
n=0
fails=0

tap() {	# STATUS DESCRIPTION [DETAIL]
	n=$((n + 1))
	echo "$1 $n $2"
	[ "$1" = ok ] || { fails=$((fails + 1)); [ -z "$3" ] || echo "$3" | sed 's/^/# /'; }
}

# The page a file stands for: itself, or the target of its .so line.
target() {
	if head -n1 "$1" | grep -q '^\.so '; then
		echo "$mandir/$(head -n1 "$1" | sed 's/^\.so man[0-9]\///')"
	else
		echo "$1"
	fi
}

# The names a page's NAME section lists.
names() {
	sed -n '/^\.SH NAME/{n;p;}' "$1" | sed 's/ \\-.*//; s/,/ /g'
}

for page in "$mandir"/*.[0-9]; do
	name=${page##*/}
	if head -n1 "$page" | grep -q '^\.so '; then
		real=$(target "$page")
		if [ ! -f "$real" ]; then
			tap "not ok" "man $name: .so link" "$real does not exist"
		elif ! names "$real" | tr ' ' '\n' | grep -qx "${name%.*}"; then
			tap "not ok" "man $name: .so link" "${real##*/} does not list ${name%.*}"
		else
			tap ok "man $name: .so link to ${real##*/}"
		fi
	elif ! command -v groff >/dev/null; then
		tap ok "man $name: groff -man -ww # SKIP groff not installed"
	else
		out=$(groff -man -ww -z "$page" 2>&1)
		if [ -z "$out" ]; then
			tap ok "man $name: groff -man -ww"
		else
			tap "not ok" "man $name: groff -man -ww" "$out"
		fi
	fi
done

for fn in $(grep -oE '^[a-z][^(]*\bfiber_[a-z_]+\(' "$header" |
	    grep -oE 'fiber_[a-z_]+\($' | tr -d '(' | sort -u); do
	page=$mandir/$fn.3
	if [ -f "$page" ] && names "$(target "$page")" | tr ' ' '\n' | grep -qx "$fn"; then
		tap ok "man page for $fn()"
	else
		tap "not ok" "man page for $fn()" "no $page listing $fn in its NAME section"
	fi
done
echo "1..$n"
[ "$fails" -eq 0 ]
