// SPDX-License-Identifier: GPL-2.0
/*
 * A signal handler running on a fiber's worker is never preempted into a
 * fiber switch: the preemption waits until the handler returns.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <signal.h>
#include <stdatomic.h>

#define HANDLER_NS	100000000ULL	/* 100 slices of 1 ms, 25 scheduler ticks */

static atomic_bool in_handler;
static atomic_bool stop;
static atomic_int other_ran_in_handler;

/* Spins in the program's own code, looking at the clock now and then. */
static void slow_handler(int sig)
{
	uint64_t end = test_thread_cpu_ns() + HANDLER_NS;
	volatile unsigned long i;

	atomic_store(&in_handler, true);
	do {
		for (i = 0; i < 100000; i++)
			;
	} while (test_thread_cpu_ns() < end);
	atomic_store(&in_handler, false);
}

static void *signalled(void *arg)
{
	raise(SIGUSR1);
	atomic_store(&stop, true);
	return NULL;
}

static void *watcher(void *arg)
{
	while (!atomic_load(&stop))
		if (atomic_load(&in_handler))
			atomic_fetch_add(&other_ran_in_handler, 1);
	return NULL;
}

FIBER_MODE_FIXTURE(sig);

TEST_F_TIMEOUT(sig, handler_not_preempted, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 1000000 };
	struct sigaction sa = { .sa_handler = slow_handler };
	struct fiber_worker_stats st;
	fiber_t *a, *b;

	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));
	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&a, signalled, NULL));
	ASSERT_EQ(0, fiber_spawn(&b, watcher, NULL));
	ASSERT_EQ(0, fiber_join(a, NULL));
	ASSERT_EQ(0, fiber_join(b, NULL));
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	ASSERT_EQ(0, fiber_sched_stop());

	TH_LOG("deferred in a handler %lu, preemptions %lu", st.deferred_signal, st.preemptions);
	ASSERT_EQ(0, atomic_load(&other_ran_in_handler));
	ASSERT_LT(0, st.deferred_signal);
}

TEST_HARNESS_MAIN
