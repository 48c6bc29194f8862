// SPDX-License-Identifier: GPL-2.0
/*
 * Every fiber has its own errno: a value set before a preemption or a
 * yield is the value read after it, though other fibers set theirs on the
 * same worker meanwhile.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>

#define NR_FIBERS	4
#define TARGET		200		/* preemptions between a set and a read */
#define YIELDS		20000
#define TIME_LIMIT_NS	30000000000ULL

static atomic_bool stop;
static atomic_long mismatches, checks;

/* Sets errno, spins in the program's own code (preemptible), reads it back. */
static void *preempted_main(void *arg)
{
	int mine = 1000 + (int)(uintptr_t)arg;
	volatile unsigned long spin;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		errno = mine;
		for (spin = 0; spin < 20000; spin++)
			;
		/* Read errno from memory, as after a call that may set it. */
		__asm__ volatile("" ::: "memory");
		if (errno != mine)
			atomic_fetch_add(&mismatches, 1);
		atomic_fetch_add(&checks, 1);
	}
	return NULL;
}

FIBER_MODE_FIXTURE(errno_fiber);

TEST_F_TIMEOUT(errno_fiber, kept_across_preemption, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *f[NR_FIBERS];
	uintptr_t i;

	atomic_store(&stop, false);
	atomic_store(&mismatches, 0);
	atomic_store(&checks, 0);
	FIBER_START(&cfg);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], preempted_main, (void *)i));
	FIBER_WAIT_FOR(FIBER_STAT_SUM(preemptions) >= TARGET, TIME_LIMIT_NS);
	atomic_store(&stop, true);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	TH_LOG("%lu preemptions, %ld checks, %ld saw another fiber's errno",
	       FIBER_STAT_SUM(preemptions), atomic_load(&checks), atomic_load(&mismatches));
	ASSERT_LE(TARGET, FIBER_STAT_SUM(preemptions));
	ASSERT_EQ(0, atomic_load(&mismatches));
	ASSERT_EQ(0, fiber_sched_stop());
}

static void *yielding_main(void *arg)
{
	int mine = 2000 + (int)(uintptr_t)arg, i;
	long bad = 0;

	for (i = 0; i < YIELDS; i++) {
		errno = mine;
		fiber_yield();
		if (errno != mine)
			bad++;
	}
	return (void *)bad;
}

/* Two workers, each running fibers that set errno and yield. */
TEST(kept_across_yield)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f[NR_FIBERS];
	long bad = 0;
	void *ret;
	uintptr_t i;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], yielding_main, (void *)i));
	for (i = 0; i < NR_FIBERS; i++) {
		ASSERT_EQ(0, fiber_join(f[i], &ret));
		bad += (long)ret;
	}
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%ld of %d reads saw another fiber's errno", bad, NR_FIBERS * YIELDS);
	ASSERT_EQ(0, bad);
}

TEST_HARNESS_MAIN
