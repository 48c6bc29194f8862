// SPDX-License-Identifier: GPL-2.0
/*
 * Fibers that call malloc/free and stdio, or libfiber itself, in loops on
 * one worker with the smallest slice never deadlock: a fiber is never
 * preempted inside libc holding an arena or FILE lock, or inside libfiber
 * holding the scheduler's lock, that the next fiber would wait on. Built
 * twice: with libfiber.so, and with libfiber.a inside the program.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define NR_FIBERS	8
#define TARGET		100		/* preemptions to see */
#define DEFERRED_TARGET	20		/* deferrals in libfiber to see */
#define TIME_LIMIT_NS	30000000000ULL

static FILE *sink;
static atomic_bool stop;

static void *churn_main(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	uint64_t seed = id + 1, sum = 0;
	void *p[16] = { 0 };
	char buf[64];
	int i, j;

	for (i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
		for (j = 0; j < 16; j++) {
			free(p[j]);
			p[j] = malloc(16 + test_rand(&seed) % 4096);
			if (!p[j])
				return (void *)1;
			memset(p[j], (int)id, 16);
		}
		fprintf(sink, "fiber %lu round %d\n", (unsigned long)id, i);
		snprintf(buf, sizeof(buf), "%d %lu", i, (unsigned long)seed);
		/* Some work in the program's own code, where preemption lands. */
		for (j = 0; j < 2000; j++)
			sum += (uint64_t)buf[j % 8] * j;
	}
	for (j = 0; j < 16; j++)
		free(p[j]);
	return (void *)(uintptr_t)(sum == 42);
}

/* Preemption waits while a fiber is in libfiber, even linked in statically. */
static void *stats_main(void *arg)
{
	struct fiber_worker_stats st;

	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		fiber_worker_stats(0, &st);
	return NULL;
}

static bool churned_enough(void)
{
	return FIBER_STAT_SUM(preemptions) >= TARGET && FIBER_STAT_SUM(deferred_pc);
}

static bool deferred_enough(void)
{
	return FIBER_STAT_SUM(deferred_pc) >= DEFERRED_TARGET;
}

/*
 * Runs NR_FIBERS fibers of fn on one worker with the smallest slice until
 * enough() or the time limit; leaves the scheduler running for the
 * caller's statistics. A deadlock stops the counts; the harness times it out.
 */
static void run_fibers(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
		       void *(*fn)(void *), bool (*enough)(void))
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = 10000 };
	fiber_t *f[NR_FIBERS];
	uint64_t deadline;
	void *ret;
	uintptr_t i;

	FIBER_START(&cfg);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], fn, (void *)i));
	deadline = test_now_ns() + TIME_LIMIT_NS;
	while (!enough() && test_now_ns() < deadline)
		fiber_sleep(10000000);
	atomic_store(&stop, true);
	for (i = 0; i < NR_FIBERS; i++) {
		ASSERT_EQ(0, fiber_join(f[i], &ret));
		ASSERT_EQ(NULL, ret);
	}
}

FIBER_MODE_FIXTURE(libc);

TEST_F_TIMEOUT(libc, malloc_and_stdio_never_deadlock, 300)
{
	sink = fopen("/dev/null", "w");
	ASSERT_NE(NULL, sink);
	run_fibers(_metadata, variant->mode, churn_main, churned_enough);
	if (_metadata->skip)
		return;
	TH_LOG("%lu preemptions, %lu deferred outside the program's code",
	       FIBER_STAT_SUM(preemptions), FIBER_STAT_SUM(deferred_pc));
	ASSERT_LE(TARGET, FIBER_STAT_SUM(preemptions));
	ASSERT_LT(0, FIBER_STAT_SUM(deferred_pc));
	ASSERT_EQ(0, fiber_sched_stop());
	fclose(sink);
}

TEST_F_TIMEOUT(libc, libfiber_code_not_preempted, 300)
{
	run_fibers(_metadata, variant->mode, stats_main, deferred_enough);
	if (_metadata->skip)
		return;
	TH_LOG("%lu deferred in libfiber, %lu preemptions",
	       FIBER_STAT_SUM(deferred_pc), FIBER_STAT_SUM(preemptions));
	ASSERT_LE(DEFERRED_TARGET, FIBER_STAT_SUM(deferred_pc));
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST_HARNESS_MAIN
