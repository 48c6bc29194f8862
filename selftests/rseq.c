// SPDX-License-Identifier: GPL-2.0
/*
 * A fiber preempted inside an rseq critical section resumes at the
 * section's abort handler, never in the middle: a counter updated only
 * by committed sections loses no increment.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>
#include <sys/rseq.h>

#define NR_FIBERS	2
#define SPIN		20000
#define TARGET		200		/* preemptions to see */
#define TIME_LIMIT_NS	20000000000ULL

long rseq_increment(struct rseq *rs, long *counter, unsigned long spin);

static long counter;
static atomic_bool stop;

struct tally {
	long commits;
	long aborts;
};

static void *increment_main(void *arg)
{
	struct tally *t = arg;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() +
						  __rseq_offset);

		if (rseq_increment(rs, &counter, SPIN))
			t->aborts++;
		else
			t->commits++;
	}
	return NULL;
}

FIBER_MODE_FIXTURE(rseq);

TEST_F_TIMEOUT(rseq, no_lost_update, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 100000 };
	struct tally t[NR_FIBERS] = { 0 };
	fiber_t *f[NR_FIBERS];
	uint64_t deadline, preempted;
	long commits = 0;
	int i;

	if (!__rseq_size)
		SKIP(return, "glibc did not register rseq (glibc.pthread.rseq=0?)");
	FIBER_START(&cfg);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], increment_main, &t[i]));
	deadline = test_now_ns() + TIME_LIMIT_NS;
	while (FIBER_STAT_SUM(preemptions) < TARGET && test_now_ns() < deadline)
		fiber_sleep(10000000);
	atomic_store(&stop, true);
	for (i = 0; i < NR_FIBERS; i++) {
		ASSERT_EQ(0, fiber_join(f[i], NULL));
		commits += t[i].commits;
	}
	preempted = FIBER_STAT_SUM(preemptions);
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%ld commits, aborts %ld/%ld, %lu preemptions", commits,
	       t[0].aborts, t[1].aborts, preempted);
	ASSERT_LE(TARGET, preempted);
	ASSERT_EQ(commits, counter);
	ASSERT_LT(0, t[0].aborts + t[1].aborts);
}

TEST_HARNESS_MAIN
