// SPDX-License-Identifier: GPL-2.0
/*
 * The scheduler API: spawn, join, yield, sleep, self, workers, errors, idle
 * cost, and what a switch keeps per fiber (the FP control state).
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <fenv.h>
#include <stdatomic.h>
#include <sys/resource.h>

static void *ret_arg(void *arg)
{
	return arg;
}

TEST(spawn_join_returns_value)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f;
	void *ret = NULL;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&f, ret_arg, (void *)0x1234));
	ASSERT_EQ(0, fiber_join(f, &ret));
	ASSERT_EQ((void *)0x1234, ret);
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST(errors)
{
	struct fiber_config bad_slice = { .slice_ns = 1000 };
	struct fiber_config bad_mode = { .mode = 17 };
	struct fiber_worker_stats st;
	fiber_t *f;

	ASSERT_EQ(-EINVAL, fiber_spawn(&f, ret_arg, NULL));
	ASSERT_EQ(-EINVAL, fiber_sched_stop());
	ASSERT_EQ(-EINVAL, fiber_sched_start(&bad_slice));
	ASSERT_EQ(-EINVAL, fiber_sched_start(&bad_mode));
	ASSERT_EQ(0, fiber_sched_start(NULL));
	ASSERT_EQ(-EALREADY, fiber_sched_start(NULL));
	ASSERT_NE(FIBER_PREEMPT_AUTO, fiber_sched_mode());
	ASSERT_EQ(-EINVAL, fiber_worker_stats(1, &st));
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	ASSERT_EQ(-EINVAL, fiber_spawn(&f, NULL, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(-EINVAL, fiber_preempt_mode_parse("fast"));
	ASSERT_EQ(FIBER_PREEMPT_SIGNAL, fiber_preempt_mode_parse("signal"));
	ASSERT_STREQ("kmod", fiber_preempt_mode_name(FIBER_PREEMPT_KMOD));
	ASSERT_EQ(NULL, fiber_preempt_mode_name(9));
}

static void *self_checks(void *arg)
{
	fiber_t *self = fiber_self();

	if (!self || fiber_worker_index() < 0)
		return (void *)1;
	if (fiber_join(self, NULL) != -EDEADLK)
		return (void *)2;
	if (fiber_sched_stop() != -EDEADLK)
		return (void *)3;
	return NULL;
}

TEST(self_and_deadlocks)
{
	fiber_t *f;
	void *ret;

	ASSERT_EQ(NULL, fiber_self());
	ASSERT_EQ(-1, fiber_worker_index());
	ASSERT_EQ(0, fiber_sched_start(NULL));
	ASSERT_EQ(0, fiber_spawn(&f, self_checks, NULL));
	ASSERT_EQ(0, fiber_join(f, &ret));
	ASSERT_EQ(NULL, ret);
	ASSERT_EQ(0, fiber_sched_stop());
}

struct pingpong {
	atomic_bool go;
	int log[8];
	atomic_int n;
};

struct player {
	struct pingpong *pp;
	int id;
};

static void *play(void *arg)
{
	struct player *p = arg;
	int i;

	while (!atomic_load(&p->pp->go))
		fiber_yield();
	for (i = 0; i < 4; i++) {
		p->pp->log[atomic_fetch_add(&p->pp->n, 1)] = p->id;
		fiber_yield();
	}
	return NULL;
}

TEST(yield_alternates)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct pingpong pp = { 0 };
	struct player pa = { &pp, 0 }, pb = { &pp, 1 };
	fiber_t *a, *b;
	int i;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&a, play, &pa));
	ASSERT_EQ(0, fiber_spawn(&b, play, &pb));
	atomic_store(&pp.go, true);
	ASSERT_EQ(0, fiber_join(a, NULL));
	ASSERT_EQ(0, fiber_join(b, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(8, atomic_load(&pp.n));
	/* One worker, a FIFO run queue: strict alternation. */
	for (i = 1; i < 8; i++)
		ASSERT_NE(pp.log[i - 1], pp.log[i]) TH_LOG("entry %d", i);
}

/* The rounding mode in effect; -1 when MXCSR and the x87 unit disagree. */
static int rounding_mode(void)
{
#ifdef __x86_64__
	uint32_t mxcsr;
	uint16_t cw;

	__asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(cw));
	if (((mxcsr >> 13) & 3) != ((cw >> 10) & 3))
		return -1;
#endif
	return fegetround();
}

static void *keep_rounding(void *arg)
{
	int mode = (int)(intptr_t)arg, i;

	if (fesetround(mode))
		return (void *)1;
	for (i = 0; i < 1000; i++) {
		fiber_yield();
		if (rounding_mode() != mode)
			return (void *)2;
	}
	fesetround(FE_TONEAREST);
	return NULL;
}

/*
 * Fibers taking turns on one worker each keep their own rounding mode:
 * the switch saves and loads it (only when it differs, which this must
 * not get wrong), and the worker's own stays the default.
 */
TEST(rounding_mode_is_per_fiber)
{
	static const int modes[] = { FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO };
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f[4];
	void *ret;
	int i;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], keep_rounding, (void *)(intptr_t)modes[i]));
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, fiber_join(f[i], &ret));
		EXPECT_EQ(NULL, ret) TH_LOG("fiber %d: %s", i,
					    ret == (void *)2 ? "its mode changed" : "fesetround failed");
	}
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(FE_TONEAREST, rounding_mode());
}

static void *sleeper(void *arg)
{
	uint64_t start = test_now_ns();

	fiber_sleep(20000000);
	*(uint64_t *)arg = test_now_ns() - start;
	return NULL;
}

static void *joiner(void *arg)
{
	fiber_t *target;
	uint64_t slept = 0;
	void *ret;

	if (fiber_spawn(&target, sleeper, &slept))
		return (void *)1;
	if (fiber_join(target, &ret) || ret)
		return (void *)2;
	*(uint64_t *)arg = slept;
	return NULL;
}

TEST(sleep_and_join_from_fiber)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	uint64_t slept = 0;
	fiber_t *f;
	void *ret;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&f, joiner, &slept));
	ASSERT_EQ(0, fiber_join(f, &ret));
	ASSERT_EQ(NULL, ret);
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_LE(20000000, slept);
	ASSERT_GT(2000000000, slept);
}

#define MANY 1000

static void *add_one(void *arg)
{
	fiber_yield();
	atomic_fetch_add((atomic_long *)arg, 1);
	fiber_yield();
	return NULL;
}

TEST(many_fibers_many_workers)
{
	struct fiber_config cfg = { .workers = 4, .mode = FIBER_PREEMPT_OFF,
				    .stack_size = 16384 };
	static fiber_t *f[MANY];
	atomic_long sum = 0;
	uint64_t switches;
	int i;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < MANY; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], add_one, &sum));
	for (i = 0; i < MANY; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	switches = FIBER_STAT_SUM(switches);
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(MANY, atomic_load(&sum));
	ASSERT_LE(3 * MANY, switches);
}

/* Deep recursion, each frame touching its 512 bytes: far past 16 KiB. */
static int recurse(int depth, int limit)
{
	volatile char frame[512];

	frame[0] = (char)depth;
	if (depth == limit)
		return 0;
	return recurse(depth + 1, limit) + frame[0];
}

static void *overflow(void *arg)
{
	return (void *)(uintptr_t)recurse(0, 1 << 20);
}

static void *add_one_last(void *arg)
{
	fiber_yield();
	fiber_yield();
	atomic_fetch_add((atomic_long *)arg, 1);
	return NULL;
}

static long count_mappings(void)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	long lines = 0;
	int c;

	if (!maps)
		return -1;
	while ((c = fgetc(maps)) != EOF)
		lines += c == '\n';
	fclose(maps);
	return lines;
}

/*
 * Detached fibers all run, fiber_sched_stop() waits for them, and each
 * one's stack goes back as it returns, whether it was detached before
 * (most) or after (the last ones) it returned: a leak keeps thousands of
 * stacks mapped.
 */
TEST(detached_fibers_are_released)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	atomic_long done = 0;
	long before, after;
	fiber_t *f;
	int i;

	ASSERT_EQ(-EINVAL, fiber_detach(NULL));
	before = count_mappings();
	ASSERT_LT(0, before);
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < 3000; i++) {
		ASSERT_EQ(0, fiber_spawn(&f, add_one_last, &done));
		ASSERT_EQ(0, fiber_detach(f));
	}
	for (i = 0; i < 50; i++) {
		ASSERT_EQ(0, fiber_spawn(&f, add_one_last, &done));
		fiber_sleep(1000000);
		ASSERT_EQ(0, fiber_detach(f));
	}
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(3050, atomic_load(&done));
	after = count_mappings();
	EXPECT_GE(before + 64, after) TH_LOG("%ld mappings before, %ld after", before, after);
}

/* The guard page turns a stack overflow into SIGSEGV, not corruption. */
TEST_SIGNAL(stack_guard_page, SIGSEGV)
{
	struct fiber_config cfg = { .mode = FIBER_PREEMPT_OFF, .stack_size = 16384 };
	fiber_t *f;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&f, overflow, NULL));
	fiber_join(f, NULL);
}

static uint64_t process_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ULL +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ULL;
}

TEST(idle_workers_cost_nothing)
{
	struct fiber_config cfg = { .workers = 4, .mode = FIBER_PREEMPT_AUTO,
				    .slice_ns = 10000 };
	uint64_t cpu;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	cpu = process_cpu_ns();
	fiber_sleep(300000000);
	cpu = process_cpu_ns() - cpu;
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%lu ns of CPU in 300 ms idle", cpu);
	ASSERT_GT(30000000, cpu);
}

TEST_HARNESS_MAIN
