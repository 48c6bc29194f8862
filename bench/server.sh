#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The server benchmark: what preemption buys an HTTP server whose requests
# are mostly short with a few long ones among them. Runs natively and in
# the VM (busybox sh). Both servers get one worker thread.
#
#  1. Throughput of GET / with wrk (closed loop, 32 connections):
#     examples/httpd in each mode against bench/uring_plain, a plain
#     liburing event loop serving the same routes.
#  2. Latency of short requests with bench/loadgen (open loop) at half of
#     the throughput httpd reached in mode off: first alone, then with
#     LONG requests (/spin?us=10000: 10 ms of CPU without a call) always
#     in flight beside them, in each mode.
#
#   server.sh [--bin DIR] [--modes kmod+signal+off] [--duration-ms D]
#             [--long K] [--slice-us S] [--demo]
#
# DIR holds examples/httpd, bench/uring_plain and bench/loadgen (the build
# tree), or all three side by side, and wrk if it is not on the PATH (the
# VM, where this script's own directory is the default). --demo measures
# only httpd and prints one summary line per mode.
set -u

dir=$(dirname "$0")
modes="signal off"
duration_ms=3000
long=2
slice_us=100
demo=
while [ $# -gt 0 ]; do
	case $1 in
	--bin) dir=$2; shift ;;
	--modes) modes=$(echo "$2" | tr + ' '); shift ;;
	--duration-ms) duration_ms=$2; shift ;;
	--long) long=$2; shift ;;
	--slice-us) slice_us=$2; shift ;;
	--demo) demo=1 ;;
	*) echo "server.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
if [ -x "$dir/examples/httpd" ]; then
	httpd=$dir/examples/httpd
	uring_plain=$dir/bench/uring_plain
	loadgen=$dir/bench/loadgen
else
	httpd=$dir/httpd
	uring_plain=$dir/uring_plain
	loadgen=$dir/loadgen
fi
wrk=$(command -v wrk || true)
[ -z "$wrk" ] && [ -x "$dir/wrk" ] && wrk=$dir/wrk
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wrk_s=$(( (duration_ms + 999) / 1000 ))

# Starts a server in the background; sets pid and port, or returns 1.
start() {
	"$@" > "$tmp/server.out" 2>&1 &
	pid=$!
	i=0
	while ! grep -q 'listening on' "$tmp/server.out"; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 $pid 2>/dev/null; then
			echo "server: $* did not start: $(cat "$tmp/server.out")"
			return 1
		fi
		sleep 0.05
	done
	port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$tmp/server.out")
}

stop() {
	kill -TERM $pid
	wait $pid
}

# wrk's "Requests/sec" and its 50% and 99% latencies in us: "rps p50 p99".
measure_wrk() {
	"$wrk" -t1 -c32 -d"${wrk_s}s" --latency "http://127.0.0.1:$port/" 2>&1 | awk '
		function us(v) {
			if (v ~ /us$/) return v + 0
			if (v ~ /ms$/) return v * 1000
			if (v ~ /s$/) return v * 1000000
			return v
		}
		/^ +50%/ { p50 = us($2) }
		/^ +99%/ { p99 = us($2) }
		/^Requests\/sec:/ { rps = $2 }
		END { printf "%d %d %d\n", rps, p50, p99 }'
}

# One line per wrk run, in the benchmark's format.
wrk_line() {
	set -- $2 "$1"
	echo "server: $4 workers=1 rate=closed long=0 p50_us=$2 p99_us=$3 p999_us=na rps=$1"
}

# loadgen's figures as "p50 p99 p999 rps", or "" when it failed.
measure_loadgen() {
	"$loadgen" --port "$port" --rate "$1" --duration-ms "$duration_ms" --long "$2" \
		--long-us 10000 > "$tmp/loadgen.out" 2>&1
	sed -n 's/.* p50_us=\([0-9]*\) p99_us=\([0-9]*\) p999_us=\([0-9]*\) .* rps=\([0-9]*\).*/\1 \2 \3 \4/p' \
		"$tmp/loadgen.out"
}

capacity=0
thr_modes=off
[ -z "$demo" ] && for m in $modes; do [ "$m" = off ] || thr_modes="$thr_modes $m"; done
if [ -z "$wrk" ]; then
	echo "server: SKIP throughput: wrk is not installed (make deps installs it)"
else
	plain=0
	if [ -z "$demo" ] && start "$uring_plain" --port 0; then
		figures=$(measure_wrk)
		stop
		plain=${figures%% *}
		wrk_line "impl=uring_plain mode=none" "$figures"
	fi
	for mode in $thr_modes; do
		start "$httpd" --port 0 --workers 1 --mode "$mode" --slice-us "$slice_us" || continue
		figures=$(measure_wrk)
		stop
		[ -z "$demo" ] && wrk_line "impl=httpd mode=$mode" "$figures"
		[ "$mode" = off ] || continue
		capacity=${figures%% *}
		[ "$plain" -gt 0 ] && echo "server: throughput httpd/uring_plain mode=off" \
			"$(awk "BEGIN { printf \"%.2f\", $capacity / $plain }")"
	done
fi
# Half of what one worker can do; without wrk, a rate any machine keeps up with.
rate=$((capacity / 2))
[ "$rate" -gt 0 ] || rate=1000

for mode in $modes; do
	start "$httpd" --port 0 --workers 1 --mode "$mode" --slice-us "$slice_us" || continue
	alone=$(measure_loadgen $rate 0)
	[ -n "$alone" ] || echo "server: loadgen failed: $(cat "$tmp/loadgen.out")"
	with=$(measure_loadgen $rate "$long")
	[ -n "$with" ] || echo "server: loadgen failed: $(cat "$tmp/loadgen.out")"
	stop
	[ -n "$alone" ] && [ -n "$with" ] || continue
	set -- $alone
	alone_p99=$2
	[ -z "$demo" ] && echo "server: impl=httpd mode=$mode workers=1 rate=$rate long=0" \
		"p50_us=$1 p99_us=$2 p999_us=$3 rps=$4"
	set -- $with
	[ -z "$demo" ] && echo "server: impl=httpd mode=$mode workers=1 rate=$rate long=$long" \
		"p50_us=$1 p99_us=$2 p999_us=$3 rps=$4"
	echo "server: mode=$mode short_p99_us=$2 alone_p99_us=$alone_p99 long_inflight=$long" \
		"ratio=$(awk "BEGIN { printf \"%.1f\", $2 / ($alone_p99 ? $alone_p99 : 1) }")"
done
