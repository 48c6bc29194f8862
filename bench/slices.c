// SPDX-License-Identifier: MIT
/*
 * How long a preempted fiber really runs, against the slice asked for:
 * two spinning fibers on one worker for a second per slice length; each
 * run's length is the time between the fiber's looks at its run count,
 * read from the CPU's counter (no system call in the loop, where signals
 * would land and be deferred). Prints the median and p90 per mode and
 * slice.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fiber.h"
#include "slices.h"

static void measure(enum fiber_preempt_mode mode, uint64_t slice_ns)
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = slice_ns };
	static struct slices sl;
	fiber_t *a, *b;
	int err;

	memset(&sl, 0, sizeof(sl));
	err = fiber_sched_start(&cfg);
	if (err == -ENODEV)
		return;
	slices_begin(&sl);
	if (err || fiber_spawn(&a, slices_spin, &sl) || fiber_spawn(&b, slices_spin, &sl)) {
		fprintf(stderr, "slices: start %s failed\n", fiber_preempt_mode_name(mode));
		return;
	}
	fiber_sleep(1000000000ULL);
	atomic_store(&sl.stop, true);
	fiber_join(a, NULL);
	fiber_join(b, NULL);
	fiber_sched_stop();
	printf("slices: mode=%s slice_us=%llu runs=%d median_us=%llu p90_us=%llu\n",
	       fiber_preempt_mode_name(mode), (unsigned long long)slice_ns / 1000,
	       atomic_load(&sl.nr_runs),
	       (unsigned long long)slices_percentile(&sl, 50) / 1000,
	       (unsigned long long)slices_percentile(&sl, 90) / 1000);
}

int main(void)
{
	static const uint64_t slices_us[] = { 100, 1000, 10000 };
	unsigned int i;

	for (i = 0; i < sizeof(slices_us) / sizeof(slices_us[0]); i++) {
		measure(FIBER_PREEMPT_KMOD, slices_us[i] * 1000);
		measure(FIBER_PREEMPT_SIGNAL, slices_us[i] * 1000);
	}
	return 0;
}
