#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Reads the TAP output of every test program (files given as arguments,
# one per program; a program's exit status is on its last line as
# "@@FP end rc=N" or in a NAME.rc file beside it) and prints each
# failure, then "N passed, M failed[, K skipped]". Exits non-zero on any
# failure or when nothing ran. A program that crashed or stopped before
# its plan was complete counts as one more failure.
for f in "$@"; do
	[ -e "$f" ] || continue
	rcfile=${f%.*}.rc
	awk -v name="$(basename "${f%.*}")" -v rcfile="$rcfile" '
		BEGIN { plan = -1; seen = 0 }
		/^1\.\.[0-9]+/ { if (plan < 0) plan = substr($1, 4) + 0 }
		/^ok / {
			seen++
			if ($0 ~ /# *SKIP/) print "S " name ": " $0; else print "P " name ": " $0
		}
		/^not ok / { seen++; bad++; print "F " name ": " $0 }
		/^@@FP end / { rc = $3; sub("rc=", "", rc) }
		END {
			if (rc == "" && (getline line < rcfile) > 0) rc = line
			if (rc != "" && rc != 0 && !bad)
				print "F " name ": exited with status " rc " without a failing test"
			else if (plan >= 0 && seen < plan)
				print "F " name ": stopped after " seen " of " plan " tests"
		}' "$f"
done | awk '
	/^P / { p++ }
	/^S / { s++; print "SKIP " substr($0, 3) }
	/^F / { f++; print "FAIL " substr($0, 3) }
	END {
		line = (p + 0) " passed, " (f + 0) " failed"
		if (s) line = line ", " s " skipped"
		print line
		exit (f > 0 || p + f + s == 0) ? 1 : 0
	}'
