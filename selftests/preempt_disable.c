// SPDX-License-Identifier: GPL-2.0
/*
 * fiber_preempt_disable() keeps a spinning fiber on its worker, nesting
 * included, without an interrupt every retry, and a preemption that came
 * due meanwhile is taken at the end.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>

#define SECTION_NS	100000000ULL	/* 100 slices of 1 ms, 25 scheduler ticks */

struct shared {
	atomic_int other_ran;		/* the other fiber ran during the section */
	atomic_bool in_section;
	atomic_bool stop;
	int ran_in_section;
	bool yielded_at_enable;
};

static void *holder_main(void *arg)
{
	struct shared *sh = arg;
	uint64_t end, switches_before;
	int worker = fiber_worker_index();
	struct fiber_worker_stats st;

	fiber_preempt_disable();
	fiber_preempt_disable();
	atomic_store(&sh->in_section, true);
	end = test_thread_cpu_ns() + SECTION_NS;
	while (test_thread_cpu_ns() < end)
		;
	fiber_preempt_enable();		/* still disabled: nested */
	end = test_thread_cpu_ns() + SECTION_NS / 5;
	while (test_thread_cpu_ns() < end)
		;
	atomic_store(&sh->in_section, false);
	sh->ran_in_section = atomic_load(&sh->other_ran);
	fiber_worker_stats(worker, &st);
	switches_before = st.switches;
	fiber_preempt_enable();		/* the pending preemption is taken here */
	fiber_worker_stats(worker, &st);
	sh->yielded_at_enable = st.switches > switches_before;
	atomic_store(&sh->stop, true);
	return NULL;
}

static void *other_main(void *arg)
{
	struct shared *sh = arg;

	while (!atomic_load(&sh->stop)) {
		if (atomic_load(&sh->in_section))
			atomic_fetch_add(&sh->other_ran, 1);
	}
	return NULL;
}

FIBER_MODE_FIXTURE(pd);

TEST_F_TIMEOUT(pd, section_is_honoured, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 1000000 };
	struct shared sh = { 0 };
	struct fiber_worker_stats st;
	fiber_t *holder, *other;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&holder, holder_main, &sh));
	ASSERT_EQ(0, fiber_spawn(&other, other_main, &sh));
	ASSERT_EQ(0, fiber_join(holder, NULL));
	ASSERT_EQ(0, fiber_join(other, NULL));
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	ASSERT_EQ(0, fiber_sched_stop());

	TH_LOG("deferred_off %lu, preemptions %lu", st.deferred_off, st.preemptions);
	ASSERT_EQ(0, sh.ran_in_section);
	ASSERT_LT(0, st.deferred_off);
	/*
	 * Retries back off, doubling from 20 us up to the slice: about one a
	 * slice over the 120 ms section, not one every 20 us (6000).
	 */
	ASSERT_GT(2 * (SECTION_NS + SECTION_NS / 5) / cfg.slice_ns + 20, st.deferred_off);
	ASSERT_TRUE(sh.yielded_at_enable);
}

#define SECTIONS	100

/*
 * A section's code may keep a thread-local address (errno's) in a
 * register: the preemption taken at its end must not move the fiber.
 */
static void *mover_main(void *arg)
{
	long moved = 0;
	int i, before;
	uint64_t end;

	for (i = 0; i < SECTIONS; i++) {
		fiber_preempt_disable();
		before = fiber_worker_index();
		end = test_thread_cpu_ns() + 3000000;
		while (test_thread_cpu_ns() < end)
			;
		fiber_preempt_enable();
		if (fiber_worker_index() != before)
			moved++;
	}
	return (void *)moved;
}

TEST_F_TIMEOUT(pd, enable_keeps_the_worker, 300)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *f[4];
	long moved = 0;
	void *ret;
	int i;

	FIBER_START(&cfg);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], mover_main, NULL));
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, fiber_join(f[i], &ret));
		moved += (long)ret;
	}
	TH_LOG("%ld of %d sections ended on another worker; %lu deferred_off",
	       moved, 4 * SECTIONS, FIBER_STAT_SUM(deferred_off));
	ASSERT_LT(0, FIBER_STAT_SUM(deferred_off));
	ASSERT_EQ(0, moved);
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST(disable_outside_fiber_is_harmless)
{
	fiber_preempt_disable();
	fiber_preempt_enable();
	fiber_preempt_enable();
	ASSERT_EQ(NULL, fiber_self());
}

TEST_HARNESS_MAIN
