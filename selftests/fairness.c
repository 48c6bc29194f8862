// SPDX-License-Identifier: GPL-2.0
/*
 * Fibers spinning without function calls on one worker all make progress
 * and get near-equal shares when preempted, beside fibers that yield too;
 * cooperatively, the first one keeps the worker to itself.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>

#define NR_FIBERS	4
#define RUN_NS		1000000000ULL

struct spin {
	atomic_bool *stop;
	volatile uint64_t count;
	uint64_t run_ns;		/* its time on a worker, at its end */
	int worker;			/* where it first ran */
	bool moved;			/* it ran on another worker later */
} __attribute__((aligned(128)));	/* no false sharing between workers */

static void *spin_main(void *arg)
{
	struct spin *s = arg;
	struct fiber_stats st;

	s->worker = fiber_worker_index();
	while (!atomic_load_explicit(s->stop, memory_order_relaxed)) {
		s->count++;
		if (!(s->count & 0xfff) && fiber_worker_index() != s->worker)
			s->moved = true;
	}
	if (fiber_stats(fiber_self(), &st) == 0)
		s->run_ns = st.run_ns;
	return NULL;
}

/* min/max of a set of counts: 1 is perfectly even. */
struct spread {
	uint64_t min, max;
};

static void spread_add(struct spread *sp, uint64_t v)
{
	sp->min = v < sp->min ? v : sp->min;
	sp->max = v > sp->max ? v : sp->max;
}

static double spread_ratio(const struct spread *sp)
{
	return sp->max ? (double)sp->min / sp->max : 0;
}

/*
 * Runs nr spinners under cfg for RUN_NS (times the slowdown); returns min/max of their counts
 * (work done) and in *time_ratio min/max of their time on a worker.
 * *moved: whether any spinner ran on more than one worker.
 */
static double run(struct __test_metadata *_metadata, const struct fiber_config *cfg, int nr,
		  uint64_t *preemptions, bool *moved, bool *skipped, double *time_ratio)
{
	struct spread work = { UINT64_MAX, 0 }, time = { UINT64_MAX, 0 };
	struct spin s[NR_FIBERS];
	fiber_t *f[NR_FIBERS];
	atomic_bool stop = false;
	int ret, i;

	*skipped = false;
	*moved = false;
	ret = fiber_sched_start(cfg);
	if (ret == -ENODEV) {
		*skipped = true;
		return 0;
	}
	EXPECT_EQ(0, ret);
	for (i = 0; i < nr; i++) {
		memset(&s[i], 0, sizeof(s[i]));
		s[i].stop = &stop;
		EXPECT_EQ(0, fiber_spawn(&f[i], spin_main, &s[i]));
	}
	fiber_sleep(RUN_NS * test_slowdown());
	atomic_store(&stop, true);
	for (i = 0; i < nr; i++) {
		EXPECT_EQ(0, fiber_join(f[i], NULL));
		spread_add(&work, s[i].count);
		spread_add(&time, s[i].run_ns);
		*moved |= s[i].moved;
		TH_LOG("mode %s fiber %d: %lu, %lu us on a worker",
		       fiber_preempt_mode_name(cfg->mode), i, s[i].count, s[i].run_ns / 1000);
	}
	*preemptions = FIBER_STAT_SUM(preemptions);
	EXPECT_EQ(0, fiber_sched_stop());
	if (time_ratio)
		*time_ratio = spread_ratio(&time);
	return spread_ratio(&work);
}

FIBER_MODE_FIXTURE(fair);

TEST_F(fair, near_equal_shares)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 1000000 };
	uint64_t preemptions;
	bool skipped, moved;
	double ratio = run(_metadata, &cfg, NR_FIBERS, &preemptions, &moved, &skipped, NULL);

	if (skipped)
		SKIP(return, "kmod mode: /dev/fiber_preempt absent (module not loaded)");
	TH_LOG("min/max %.3f, %lu preemptions", ratio, preemptions);
	ASSERT_LT(0, preemptions);
	/* 1 s of 1 ms slices over 4 fibers: each within 2x of the best. */
	ASSERT_LT(0.5, ratio);
}

/*
 * 3 spinners on 2 workers: pinned by default (shares 2:1:1, min/max 0.5),
 * near-equal shares when they may move. The shares compared are time on
 * a worker, which is what the scheduler hands out: work done also
 * depends on the CPU, and in the VMs it went as low as 0.69 in a run
 * where a vCPU also ran the signal monitor.
 */
TEST_F(fair, three_on_two_workers_migrating)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode, .slice_ns = 1000000,
				    .flags = FIBER_MIGRATE_PREEMPTED };
	uint64_t preemptions;
	bool skipped, moved;
	double time_ratio;
	double ratio = run(_metadata, &cfg, 3, &preemptions, &moved, &skipped, &time_ratio);

	if (skipped)
		SKIP(return, "kmod mode: /dev/fiber_preempt absent (module not loaded)");
	TH_LOG("min/max work %.3f, time %.3f, %lu preemptions", ratio, time_ratio, preemptions);
	ASSERT_TRUE(moved);
	ASSERT_LT(0.8, time_ratio);
}

TEST_F(fair, three_on_two_workers_pinned)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode, .slice_ns = 1000000 };
	uint64_t preemptions;
	bool skipped, moved;
	double time_ratio;

	run(_metadata, &cfg, 3, &preemptions, &moved, &skipped, &time_ratio);
	if (skipped)
		SKIP(return, "kmod mode: /dev/fiber_preempt absent (module not loaded)");
	TH_LOG("min/max time %.3f, %lu preemptions", time_ratio, preemptions);
	ASSERT_LT(0, preemptions);
	ASSERT_FALSE(moved);
}

#define NR_YIELDERS	4

struct yielder {
	atomic_bool *stop;
	uint64_t count;
};

static void *yield_main(void *arg)
{
	struct yielder *y = arg;

	while (!atomic_load_explicit(y->stop, memory_order_relaxed)) {
		y->count++;
		fiber_yield();
	}
	return NULL;
}

/*
 * Fibers that ran their slice out wait for the others, those that yield
 * included, but only one round: yielders that are always runnable must
 * not starve them. Each spinner is preempted about once a slice.
 */
TEST_F(fair, spinners_beside_yielders)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 1000000 };
	struct spin s[2] = { 0 };
	struct yielder y[NR_YIELDERS] = { 0 };
	fiber_t *fs[2], *fy[NR_YIELDERS];
	struct fiber_stats st;
	atomic_bool stop = false;
	int i;

	FIBER_START(&cfg);
	for (i = 0; i < NR_YIELDERS; i++) {
		y[i].stop = &stop;
		ASSERT_EQ(0, fiber_spawn(&fy[i], yield_main, &y[i]));
	}
	for (i = 0; i < 2; i++) {
		s[i].stop = &stop;
		ASSERT_EQ(0, fiber_spawn(&fs[i], spin_main, &s[i]));
	}
	fiber_sleep(RUN_NS * test_slowdown());
	atomic_store(&stop, true);
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(0, fiber_stats(fs[i], &st));
		TH_LOG("spinner %d: %lu preemptions", i, st.preemptions);
		/* About 1000 for a 1 ms slice; starved, 1. */
		EXPECT_LE(50, st.preemptions);
		ASSERT_EQ(0, fiber_join(fs[i], NULL));
	}
	for (i = 0; i < NR_YIELDERS; i++) {
		ASSERT_EQ(0, fiber_join(fy[i], NULL));
		EXPECT_LT(0, y[i].count);
	}
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST(cooperative_monopoly)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF, .slice_ns = 1000000 };
	uint64_t preemptions;
	bool skipped, moved;
	double ratio = run(_metadata, &cfg, NR_FIBERS, &preemptions, &moved, &skipped, NULL);

	ASSERT_FALSE(skipped);
	ASSERT_EQ(0, preemptions);
	/* The first spinner never lets the others start before the stop. */
	ASSERT_EQ(0, ratio);
}

TEST_HARNESS_MAIN
