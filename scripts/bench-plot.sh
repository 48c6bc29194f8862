#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Draws make bench's VM figures as SVG charts with gnuplot, from the text
# the benchmarks print (nothing else is read):
#   slices.svg   throughput a CPU-bound fiber loses against the slice
#                length, per mode (bench/preempt slices: "slice N us: ...
#                throughput loss X%", kmod's)
#   server.svg   short requests' latency percentiles per mode, alone and
#                with long requests in flight (bench/server.sh: "server:
#                impl=httpd mode=M ... rate=R long=K p50_us= p99_us=
#                p999_us=", the fixed-rate runs)
# Usage: bench-plot.sh OUTDIR TITLE FILE...
out=${1:?} title=${2:?}
shift 2
if ! command -v gnuplot >/dev/null; then
	echo "bench-plot: no gnuplot (make deps installs gnuplot-nox): no charts"
	exit 0
fi
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# slice_us loss_percent, per mode: a file per mode.
cat "$@" 2>/dev/null | tr -d '\r' | awk -v dir="$tmp" '
	/^slice +[0-9]+ us: .*throughput loss/ {
		mode = "kmod"	# bench/preempt slices times kmod only
		if (match($0, /mode=[a-z]+/)) mode = substr($0, RSTART + 5, RLENGTH - 5)
		loss = $NF; sub("%", "", loss)
		print $2, loss > (dir "/slices." mode)
	}'
# mode-long p50 p99 p999, in the order printed.
cat "$@" 2>/dev/null | tr -d '\r' | awk -v dir="$tmp" '
	/^server: impl=httpd / && !/rate=closed/ {
		for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		label = f["mode"] (f["long"] == 0 ? " alone" : " + " f["long"] " long")
		printf "\"%s\" %s %s %s\n", label, f["p50_us"], f["p99_us"], f["p999_us"]
		rate = f["rate"]
	}
	END { if (rate) print rate > (dir "/rate") }' > "$tmp/server"

made=
if ls "$tmp"/slices.* >/dev/null 2>&1; then
	plots=
	for f in "$tmp"/slices.*; do
		plots="$plots${plots:+, }'$f' using 1:2 with linespoints title '${f##*.}'"
	done
	gnuplot <<GP && made="$made $out/slices.svg"
set terminal svg size 720,440 dynamic font 'sans,12'
set termoption noenhanced
set output '$out/slices.svg'
set title 'Throughput lost to preemption, by slice ($title)'
set xlabel 'slice (us)'
set ylabel 'throughput loss (%)'
set logscale x
set xrange [8:1250]
set xtics (10, 20, 50, 100, 200, 500, 1000)
set yrange [0:*]
set grid
set key top right
plot $plots
GP
fi
if [ -s "$tmp/server" ]; then
	rate=$(cat "$tmp/rate")
	gnuplot <<GP && made="$made $out/server.svg"
set terminal svg size 820,460 dynamic font 'sans,12'
set termoption noenhanced
set output '$out/server.svg'
set title 'Short requests to httpd at $rate requests/s: latency ($title)'
set ylabel 'latency (us)'
set logscale y
set format y '%.0f'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -20
set grid ytics
set key top left
plot '$tmp/server' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'
GP
fi
if [ -n "$made" ]; then
	echo "bench-plot: charts:$made"
else
	echo "bench-plot: no figures to draw"
fi
