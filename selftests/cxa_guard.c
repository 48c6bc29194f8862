// SPDX-License-Identifier: GPL-2.0
/*
 * C++ function-local statics whose constructors run a while, or stop in
 * a fiber_sleep(), are constructed once, by one fiber, while the other
 * fibers of the worker wait without blocking it: the constructor is not
 * preempted into a sibling that would wait on the guard for good. (The
 * static is in cxa_guard_static.cc.)
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>

#define NR_FIBERS	4

int cxa_guard_use_static(void);
int cxa_guard_constructions(void);

static atomic_int early_returns;

static void *use_static(void *arg)
{
	if (cxa_guard_use_static() != 42)
		atomic_fetch_add(&early_returns, 1);
	return NULL;
}

FIBER_MODE_FIXTURE(guard);

TEST_F_TIMEOUT(guard, static_constructed_once, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *f[NR_FIBERS];
	int i;

	FIBER_START(&cfg);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], use_static, NULL));
	/* A deadlock never gets past here: the harness's timeout fails it. */
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(1, cxa_guard_constructions());
	ASSERT_EQ(0, atomic_load(&early_returns));
}

TEST_HARNESS_MAIN
