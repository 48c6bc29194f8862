#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# scripts/gdb/libfiber.py works on a live process and on its core file:
# gdb runs selftests/gdb.c, whose fibers wait, run and were preempted in
# known functions; `info fibers` lists each in its state and function,
# `fiber bt` walks each one's frames, `fiber ID` selects a fiber for
# `info locals`, `up` and `frame`; then gdb writes a core file and does
# it all again there. TAP on stdout.
#
#   selftests/gdb.sh PROGRAM [RUNNER...]
#
# PROGRAM is the built selftests/gdb; a RUNNER (qemu-user, for another
# architecture) means the test skips: it runs natively only.
set -uo pipefail

prog=${1:?usage: gdb.sh PROGRAM [RUNNER...]}
shift
tests=0
failed=0

skip() {
	echo "ok 1 gdb # SKIP $*"
	echo "1..1"
	exit 0
}

[ $# -eq 0 ] || skip "natively only, not under $*"
command -v gdb > /dev/null || skip "gdb is not installed"
gdb -batch -nx -ex 'python import gdb' > /dev/null 2>&1 || skip "this gdb has no Python"

script=$(cd "$(dirname "$0")/.." && pwd)/scripts/gdb/libfiber.py
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The same commands on the process and on the core, each after a marker.
looks=()
look() {
	looks+=(-ex "echo @@ $1\\n" -ex "$2")
}
look fibers "info fibers"
for role in locker sleeper joiner yielder reader returned "spinner[0]" "spinner[1]" "spinner[2]"; do
	look "bt $role" "fiber bt ids.$role"
done
look "select yielder" "fiber ids.yielder"
look "yielder locals" "info locals"
look "yielder stored" "print scene.yields"
look select "fiber ids.sleeper"
look locals "info locals"
look up "up"
look "frame 1" "frame 1"
look "bt selected" "backtrace"
look which "fiber"
look none "fiber none"
look "bt thread" "backtrace"

timeout 120 gdb -batch -nx -ex 'set pagination off' -ex 'handle SIGURG nostop noprint pass' \
	-ex "source $script" -ex run "${looks[@]}" -ex "gcore $tmp/core" \
	-ex 'echo @@ continue\n' -ex 'fiber ids.locker' -ex continue "$prog" > "$tmp/live" 2>&1
if grep -q 'ptrace: Operation not permitted' "$tmp/live"; then
	skip "gdb may not trace processes here (ptrace: Operation not permitted)"
fi
timeout 120 gdb -batch -nx -ex "source $script" "${looks[@]}" "$prog" "$tmp/core" \
	> "$tmp/core.out" 2>&1

# The output of look NAME in file.
section() {
	awk -v name="@@ $2" '$0 == name { on = 1; next } /^@@ / { on = 0 } on' "$1"
}

# The functions of a backtrace, innermost first, on one line between spaces.
frames() {
	section "$1" "$2" | sed -n 's/^#[0-9]*  *\(0x[0-9a-f]* in \)\{0,1\}\([^ ]*\).*/\2/p' |
		tr '\n' ' ' | sed 's/^/ /'
}

result() {
	local desc=$1 file=$2 name=$3 passed=$4

	tests=$((tests + 1))
	if [ "$passed" = yes ]; then
		echo "ok $tests $desc"
		return
	fi
	failed=$((failed + 1))
	echo "not ok $tests $desc"
	section "$file" "$name" | sed 's/^/# /'
}

# expect DESCRIPTION FILE LOOK REGEX: a line of the look matches.
expect() {
	local passed=no

	section "$2" "$3" | grep -Eq -- "$4" && passed=yes
	result "$1" "$2" "$3" $passed
}

# expect_frames DESCRIPTION FILE LOOK "f g h": the backtrace has these
# functions in a row, and starts at frame 1 (frame 0 is the thread's).
expect_frames() {
	local passed=no

	case "$(frames "$2" "$3")" in
	*" $4 "*) section "$2" "$3" | grep -Eq '^#1 ' && passed=yes ;;
	esac
	result "$1" "$2" "$3" $passed
}

# The checks of one gdb session's output, each TAP line led by what.
check_looks() {
	local what=$1 file=$2 row sleeper stored i passed

	row='^[ *] +[0-9]+ +'
	expect "$what: info fibers: the locker blocked on its mutex, in gd_lock" "$file" fibers \
		"${row}locker +blocked on fiber mutex 0x[0-9a-f]+ +gd_lock at .*selftests/gdb\\.c:[0-9]+\$"
	expect "$what: info fibers: the sleeper blocked in a sleep, in gd_sleep" "$file" fibers \
		"${row}sleeper +blocked in sleep(, [0-9]+\\.[0-9]{3} ms left)? +gd_sleep at "
	sleeper=$(section "$file" fibers | sed -n 's/^[ *] *\([0-9]*\) *sleeper .*/\1/p')
	expect "$what: info fibers: the joiner blocked in a join of the sleeper, in gd_join" \
		"$file" fibers "${row}joiner +blocked in join of fiber ${sleeper:-?} +gd_join at "
	expect "$what: info fibers: the yielder runnable, in gd_yield" "$file" fibers \
		"${row}yielder +runnable +gd_yield at "
	expect "$what: info fibers: a spinner preempted, in gd_spin" "$file" fibers \
		"${row}spinner +preempted, runnable +gd_spin at "
	expect "$what: info fibers: a spinner running on a worker's thread, in gd_spin" \
		"$file" fibers "${row}spinner +running on worker [0-9]+ \\(thread [0-9]+\\) +gd_spin at "
	expect "$what: info fibers: the returned fiber, without frames" "$file" fibers \
		"${row}returned +returned, not joined\$"

	expect_frames "$what: fiber bt: the locker, from its switch frame" "$file" "bt locker" \
		"fiber_mutex_lock gd_lock locker fiber_entry"
	expect_frames "$what: fiber bt: the sleeper" "$file" "bt sleeper" \
		"fiber_sleep gd_sleep sleeper fiber_entry"
	expect_frames "$what: fiber bt: the joiner" "$file" "bt joiner" \
		"fiber_join gd_join joiner fiber_entry"
	expect_frames "$what: fiber bt: the yielder" "$file" "bt yielder" \
		"gd_yield yielder fiber_entry"
	# Without io_uring (ids.reader 0) there is no reader.
	if section "$file" fibers | grep -Eq "${row}reader "; then
		expect "$what: info fibers: the reader blocked in a read, in gd_read" "$file" fibers \
			"${row}reader +blocked in read on fd [0-9]+ +gd_read at "
		expect_frames "$what: fiber bt: the reader" "$file" "bt reader" \
			"fiber_read gd_read reader fiber_entry"
	else
		tests=$((tests + 1))
		echo "ok $tests $what: the reader # SKIP no io_uring: no fiber waits in a read"
	fi
	expect "$what: fiber bt: the returned fiber has no frames" "$file" "bt returned" \
		'^Fiber [0-9]+ has no frames: returned, not joined\.$'

	# The preempted spinner: the trampoline, then the interrupted function.
	passed=no
	for i in 0 1 2; do
		if section "$file" "bt spinner[$i]" | grep -q '(preempted, runnable):$'; then
			case "$(frames "$file" "bt spinner[$i]")" in
			" <signal gd_spin spinner fiber_entry ") passed=yes ;;
			esac
		fi
	done
	result "$what: fiber bt: the preempted spinner, from its upcall frame" "$file" \
		"bt spinner[0]" $passed
	passed=no
	for i in 0 1 2; do
		if section "$file" "bt spinner[$i]" | grep -q '(running on worker .*):$'; then
			case "$(frames "$file" "bt spinner[$i]")" in
			*" gd_spin spinner fiber_entry ") passed=yes ;;
			esac
		fi
	done
	result "$what: fiber bt: a running spinner, from its thread" "$file" "bt spinner[0]" \
		$passed

	# Kept by the switch frame itself: its callee-saved registers are right.
	stored=$(section "$file" "yielder stored" | sed -n "s/^\$[0-9]* = //p")
	expect "$what: info locals in the yielder's frame: what it stored" "$file" \
		"yielder locals" "^yields = ${stored:-?}\$"
	expect "$what: fiber ID selects the sleeper's frame in gd_sleep" "$file" select \
		'^#[0-9]+ +0x[0-9a-f]+ in gd_sleep \(\) at '
	expect "$what: info locals in the sleeper's frame" "$file" locals '^mark = 42$'
	expect "$what: up goes to the fiber's caller" "$file" up \
		'^#[0-9]+ +0x[0-9a-f]+ in sleeper \(arg='
	expect "$what: frame 1 is the fiber's innermost frame" "$file" "frame 1" '^#1 '
	expect_frames "$what: backtrace shows the selected fiber's frames" "$file" "bt selected" \
		"fiber_sleep gd_sleep sleeper fiber_entry"
	expect "$what: fiber says which is selected" "$file" which \
		'^\[Current fiber is [0-9]+ "sleeper" \(blocked in sleep'
	case "$(frames "$file" "bt thread")" in
	*" main "*) passed=yes ;;
	*) passed=no ;;
	esac
	result "$what: fiber none: the thread's own frames again" "$file" "bt thread" $passed
}

# check_session WHAT FILE: the checks of one gdb session's output; on a
# failure, what gdb printed before the first look too (the program's
# errors, gdb's).
check_session() {
	local before=$failed

	check_looks "$@"
	if [ "$failed" -ne "$before" ]; then
		echo "# $1: gdb's output up to the first look:"
		sed '/^@@ /q' "$2" | sed 's/^/# /'
	fi
}

check_session live "$tmp/live"
passed=no
[ -s "$tmp/core" ] && passed=yes
result "live: gcore wrote a core file" "$tmp/live" continue $passed
expect "live: the program goes on and exits after a fiber was selected" "$tmp/live" continue \
	'exited normally'
check_session core "$tmp/core.out"

echo "1..$tests"
[ "$failed" -eq 0 ]
