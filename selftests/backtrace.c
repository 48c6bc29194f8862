// SPDX-License-Identifier: GPL-2.0
/*
 * fiber_backtrace() on fibers in every state, each stopped three calls
 * deep in known functions (bt_outer -> bt_middle -> bt_inner*): blocked on
 * a fiber mutex, runnable after a yield, preempted while spinning (the
 * first address inside the spinning function), the caller itself, one
 * running on another worker (-EBUSY), not started and returned (0). The
 * names come from dladdr() (the test is linked with -rdynamic).
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <string.h>

#include "kselftest_harness.h"
#include "fiber_test.h"

#define MAX_PCS	64

enum bt_how { BT_LOCK, BT_YIELD, BT_SPIN, BT_SELF };

struct bt {
	enum bt_how how;
	fiber_mutex_t *lock;
	fiber_t *target;		/* an observer's: whose backtrace it takes */
	atomic_bool stop;
	atomic_bool deep;		/* it reached the innermost function */
	void *pcs[MAX_PCS];		/* BT_SELF: its own backtrace */
	int n;
	volatile unsigned long spins;
};

#define NOINLINE __attribute__((noinline, noclone))
/* Keeps each call a call, not a jump: the caller has work after it. */
#define AFTER_CALL() __asm__ volatile("" ::: "memory")

NOINLINE void bt_inner_lock(struct bt *b)
{
	atomic_store(&b->deep, true);
	fiber_mutex_lock(b->lock);
	fiber_mutex_unlock(b->lock);
	AFTER_CALL();
}

NOINLINE void bt_inner_yield(struct bt *b)
{
	atomic_store(&b->deep, true);
	while (!atomic_load(&b->stop))
		fiber_yield();
	AFTER_CALL();
}

NOINLINE void bt_inner_spin(struct bt *b)
{
	atomic_store(&b->deep, true);
	while (!atomic_load_explicit(&b->stop, memory_order_relaxed))
		b->spins++;
}

NOINLINE void bt_inner_self(struct bt *b)
{
	b->n = fiber_backtrace(fiber_self(), b->pcs, MAX_PCS);
	AFTER_CALL();
}

NOINLINE void bt_middle(struct bt *b)
{
	switch (b->how) {
	case BT_LOCK:
		bt_inner_lock(b);
		break;
	case BT_YIELD:
		bt_inner_yield(b);
		break;
	case BT_SPIN:
		bt_inner_spin(b);
		break;
	case BT_SELF:
		bt_inner_self(b);
		break;
	}
	AFTER_CALL();
}

NOINLINE void *bt_outer(void *arg)
{
	bt_middle(arg);
	AFTER_CALL();
	return NULL;
}

static const char *name_of(void *pc)
{
	Dl_info info;

	/* A return address: look at the call, one byte before. */
	if (!dladdr((char *)pc - 1, &info) || !info.dli_sname)
		return "?";
	return info.dli_sname;
}

/*
 * Whether inner, bt_middle, bt_outer come in that order with nothing of
 * the program's between them, and nothing after (the walk stops at the
 * fiber's first frame).
 */
static bool chain_found(struct __test_metadata *_metadata, void **pcs, int n, const char *inner)
{
	int i;

	for (i = 0; i < n; i++)
		TH_LOG("  #%d %p %s", i, pcs[i], name_of(pcs[i]));
	for (i = 0; i + 2 < n; i++)
		if (!strcmp(name_of(pcs[i]), inner))
			return !strcmp(name_of(pcs[i + 1]), "bt_middle") &&
			       !strcmp(name_of(pcs[i + 2]), "bt_outer") && i + 3 == n;
	return false;
}

static void wait_deep(struct bt *b)
{
	FIBER_WAIT_FOR(atomic_load(&b->deep), 10000000000ULL);
	/* Past the store, into the call or the loop. */
	fiber_sleep(20000000);
}

/* Taken by a fiber of the same worker, while the target waits in the run queue. */
static void *observe(void *arg)
{
	struct bt *obs = arg;

	obs->n = fiber_backtrace(obs->target, obs->pcs, MAX_PCS);
	return NULL;
}

/* Starts b's fiber as *f, and once it is deep, has obs take its backtrace. */
static void observed(struct __test_metadata *_metadata, struct bt *b, fiber_t **f,
		     struct bt *obs)
{
	fiber_t *o;

	ASSERT_EQ(0, fiber_spawn(f, bt_outer, b));
	wait_deep(b);
	obs->target = *f;
	ASSERT_EQ(0, fiber_spawn(&o, observe, obs));
	ASSERT_EQ(0, fiber_join(o, NULL));
}

TEST(blocked_on_a_mutex)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_mutex_t lock;
	struct bt b = { .how = BT_LOCK, .lock = &lock };
	void *pcs[MAX_PCS];
	fiber_t *f;
	int n;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_mutex_init(&lock));
	ASSERT_EQ(0, fiber_mutex_lock(&lock));
	ASSERT_EQ(0, fiber_spawn(&f, bt_outer, &b));
	wait_deep(&b);
	n = fiber_backtrace(f, pcs, MAX_PCS);
	EXPECT_TRUE(chain_found(_metadata, pcs, n, "bt_inner_lock"));
	/* The innermost frames are libfiber's, where it parked. */
	EXPECT_STRNE("bt_inner_lock", name_of(pcs[0]));
	ASSERT_EQ(0, fiber_mutex_unlock(&lock));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
}


TEST(runnable_after_a_yield)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct bt b = { .how = BT_YIELD }, obs = { 0 };
	fiber_t *f;

	FIBER_START(&cfg);
	observed(_metadata, &b, &f, &obs);
	EXPECT_TRUE(chain_found(_metadata, obs.pcs, obs.n, "bt_inner_yield"));
	atomic_store(&b.stop, true);
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST(the_caller_itself)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct bt b = { .how = BT_SELF };
	fiber_t *f;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&f, bt_outer, &b));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	/* From the caller of fiber_backtrace() on: bt_inner_self first. */
	ASSERT_LE(3, b.n);
	EXPECT_STREQ("bt_inner_self", name_of(b.pcs[0]));
	EXPECT_TRUE(chain_found(_metadata, b.pcs, b.n, "bt_inner_self"));
}

TEST(running_elsewhere_is_busy)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct bt b = { .how = BT_SPIN };
	void *pcs[MAX_PCS];
	fiber_t *f;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&f, bt_outer, &b));
	/* This thread is no worker: the spinner keeps the only one. */
	while (!atomic_load(&b.deep))
		usleep(1000);
	EXPECT_EQ(-EBUSY, fiber_backtrace(f, pcs, MAX_PCS));
	atomic_store(&b.stop, true);
	ASSERT_EQ(0, fiber_join(f, NULL));
	/* Returned, not yet joined by anyone else: nothing left to walk. */
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST(not_started_and_returned)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct bt b = { .how = BT_SPIN }, done = { .how = BT_SELF };
	void *pcs[MAX_PCS];
	fiber_t *spinner, *later, *d;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&d, bt_outer, &done));
	while (!done.n)
		usleep(1000);
	usleep(20000);
	EXPECT_EQ(0, fiber_backtrace(d, pcs, MAX_PCS));
	ASSERT_EQ(0, fiber_spawn(&spinner, bt_outer, &b));
	while (!atomic_load(&b.deep))
		usleep(1000);
	/* Queued behind the spinner, which never yields: not started. */
	ASSERT_EQ(0, fiber_spawn(&later, bt_outer, &done));
	EXPECT_EQ(0, fiber_backtrace(later, pcs, MAX_PCS));
	EXPECT_EQ(-EINVAL, fiber_backtrace(NULL, pcs, MAX_PCS));
	EXPECT_EQ(-EINVAL, fiber_backtrace(later, NULL, 4));
	EXPECT_EQ(-EINVAL, fiber_backtrace(later, pcs, -1));
	atomic_store(&b.stop, true);
	ASSERT_EQ(0, fiber_join(spinner, NULL));
	ASSERT_EQ(0, fiber_join(later, NULL));
	ASSERT_EQ(0, fiber_join(d, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
}

FIBER_MODE_FIXTURE(preempted);

/*
 * A preempted fiber's first address is where it was interrupted: inside
 * the spinning function, not a return address.
 */
TEST_F_TIMEOUT(preempted, at_the_interrupted_instruction, 60)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 1000000 };
	struct bt b = { .how = BT_SPIN }, obs = { 0 };
	Dl_info info;
	fiber_t *f;

	FIBER_START(&cfg);
	observed(_metadata, &b, &f, &obs);
	ASSERT_LE(3, obs.n);
	/* The interrupted PC itself: dladdr() of it, not of it - 1. */
	ASSERT_NE(0, dladdr(obs.pcs[0], &info));
	EXPECT_STREQ("bt_inner_spin", info.dli_sname ? info.dli_sname : "?");
	EXPECT_TRUE(chain_found(_metadata, obs.pcs, obs.n, "bt_inner_spin"));
	atomic_store(&b.stop, true);
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST_HARNESS_MAIN
