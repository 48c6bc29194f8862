// SPDX-License-Identifier: GPL-2.0
/*
 * Fibers spinning without function calls on one worker all make progress
 * and get near-equal shares when preempted; cooperatively, the first one
 * keeps the worker to itself.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>

#define NR_FIBERS	4
#define RUN_NS		1000000000ULL

struct spin {
	atomic_bool *stop;
	volatile uint64_t count;
};

static void *spin_main(void *arg)
{
	struct spin *s = arg;

	while (!atomic_load_explicit(s->stop, memory_order_relaxed))
		s->count++;
	return NULL;
}

/* Runs NR_FIBERS spinners for RUN_NS; returns min/max of their counts. */
static double run(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
		  uint64_t *preemptions, bool *skipped)
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = 1000000 };
	struct spin s[NR_FIBERS];
	fiber_t *f[NR_FIBERS];
	atomic_bool stop = false;
	uint64_t min = UINT64_MAX, max = 0;
	int ret, i;

	*skipped = false;
	ret = fiber_sched_start(&cfg);
	if (ret == -ENODEV) {
		*skipped = true;
		return 0;
	}
	EXPECT_EQ(0, ret);
	for (i = 0; i < NR_FIBERS; i++) {
		s[i].stop = &stop;
		s[i].count = 0;
		EXPECT_EQ(0, fiber_spawn(&f[i], spin_main, &s[i]));
	}
	fiber_sleep(RUN_NS);
	atomic_store(&stop, true);
	for (i = 0; i < NR_FIBERS; i++) {
		EXPECT_EQ(0, fiber_join(f[i], NULL));
		min = s[i].count < min ? s[i].count : min;
		max = s[i].count > max ? s[i].count : max;
		TH_LOG("mode %s fiber %d: %lu", fiber_preempt_mode_name(mode), i, s[i].count);
	}
	*preemptions = FIBER_STAT_SUM(preemptions);
	EXPECT_EQ(0, fiber_sched_stop());
	return max ? (double)min / max : 0;
}

FIBER_MODE_FIXTURE(fair);

TEST_F(fair, near_equal_shares)
{
	uint64_t preemptions;
	bool skipped;
	double ratio = run(_metadata, variant->mode, &preemptions, &skipped);

	if (skipped)
		SKIP(return, "kmod mode: /dev/fiber_preempt absent (module not loaded)");
	TH_LOG("min/max %.3f, %lu preemptions", ratio, preemptions);
	ASSERT_LT(0, preemptions);
	/* 1 s of 1 ms slices over 4 fibers: each within 2x of the best. */
	ASSERT_LT(0.5, ratio);
}

TEST(cooperative_monopoly)
{
	uint64_t preemptions;
	bool skipped;
	double ratio = run(_metadata, FIBER_PREEMPT_OFF, &preemptions, &skipped);

	ASSERT_FALSE(skipped);
	ASSERT_EQ(0, preemptions);
	/* The first spinner never lets the others start before the stop. */
	ASSERT_EQ(0, ratio);
}

TEST_HARNESS_MAIN
