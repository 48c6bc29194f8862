// SPDX-License-Identifier: GPL-2.0
/*
 * A fiber's signal mask is its own: one that blocks a signal and yields
 * keeps it blocked when it resumes, and the fibers that run meanwhile
 * have the worker's mask, so they are still preempted.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <signal.h>
#include <stdatomic.h>

#define TARGET		20
#define TIME_LIMIT_NS	20000000000ULL

static atomic_bool stop;
static atomic_int mask_wrong;

static bool usr1_blocked(void)
{
	sigset_t cur;

	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	return sigismember(&cur, SIGUSR1);
}

static void *blocker_main(void *arg)
{
	sigset_t usr1;

	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	while (!atomic_load(&stop)) {
		fiber_yield();
		if (!usr1_blocked())
			atomic_fetch_add(&mask_wrong, 1);
	}
	pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
	return NULL;
}

static void *spinner_main(void *arg)
{
	unsigned long n = 0;

	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		if (!(++n & 0xfffff) && usr1_blocked())
			atomic_fetch_add(&mask_wrong, 1);
	return NULL;
}

FIBER_MODE_FIXTURE(sigmask);

TEST_F_TIMEOUT(sigmask, blocked_signal_stays_with_its_fiber, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *blocker, *a, *b;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&blocker, blocker_main, NULL));
	ASSERT_EQ(0, fiber_spawn(&a, spinner_main, NULL));
	ASSERT_EQ(0, fiber_spawn(&b, spinner_main, NULL));
	FIBER_WAIT_FOR(FIBER_STAT_SUM(preemptions) >= TARGET, TIME_LIMIT_NS);
	atomic_store(&stop, true);
	ASSERT_EQ(0, fiber_join(blocker, NULL));
	ASSERT_EQ(0, fiber_join(a, NULL));
	ASSERT_EQ(0, fiber_join(b, NULL));
	TH_LOG("%lu preemptions, %lu deferred for the signal mask, %d wrong masks seen",
	       FIBER_STAT_SUM(preemptions), FIBER_STAT_SUM(deferred_signal),
	       atomic_load(&mask_wrong));
	ASSERT_LE(TARGET, FIBER_STAT_SUM(preemptions));
	ASSERT_EQ(0, atomic_load(&mask_wrong));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_FALSE(usr1_blocked());
}

TEST_HARNESS_MAIN
