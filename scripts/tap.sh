# SPDX-License-Identifier: GPL-2.0
# Sourced by the check scripts that print TAP: tap STATUS DESCRIPTION
# [LOG FILE] numbers the lines and shows the end of the log of a failure;
# tap_end prints the plan and returns whether all passed.
n=0
fails=0

tap() {
	n=$((n + 1))
	echo "$1 $n $2"
	[ "$1" = ok ] && return
	fails=$((fails + 1))
	[ -n "${3:-}" ] && tail -n 40 "$3" | sed 's/^/# /'
}

tap_end() {
	echo "1..$n"
	[ "$fails" -eq 0 ]
}
