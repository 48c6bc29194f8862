// SPDX-License-Identifier: GPL-2.0
/*
 * Fiber locks: fiber_mutex_t and fiber_cond_t park the fiber, never the
 * worker; they work across workers, from threads, and while the holder
 * is preempted.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "kselftest_harness.h"
#include "fiber_test.h"

#define NR_ADDERS	8
#define ADDS		500

static fiber_mutex_t counter_lock = FIBER_MUTEX_INITIALIZER;
static volatile unsigned long counter;

/*
 * A read, a pause of some microseconds, then a write: a preemption in the
 * pause, with another adder run meanwhile, loses an update unless the
 * mutex keeps the others out.
 */
static void *adder(void *arg)
{
	int i, j;

	for (i = 0; i < ADDS; i++) {
		unsigned long v;

		fiber_mutex_lock(&counter_lock);
		v = counter;
		for (j = 0; j < 50000; j++)
			__asm__ volatile("" ::: "memory");
		counter = v + 1;
		fiber_mutex_unlock(&counter_lock);
	}
	return NULL;
}

FIBER_MODE_FIXTURE(locked);

/*
 * 8 adders on 2 workers, preempted with 100 us slices while they hold the
 * mutex: no update is lost, and holders were preempted (else the test
 * would prove nothing).
 */
TEST_F(locked, no_lost_update_under_preemption)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *f[NR_ADDERS];
	int i;

	counter = 0;
	FIBER_START(&cfg);
	for (i = 0; i < NR_ADDERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], adder, NULL));
	for (i = 0; i < NR_ADDERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	TH_LOG("%lu preemptions", (unsigned long)FIBER_STAT_SUM(preemptions));
	ASSERT_LT(0, FIBER_STAT_SUM(preemptions));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ((unsigned long)NR_ADDERS * ADDS, counter);
}

TEST(errors)
{
	fiber_mutex_t m;
	fiber_cond_t c;

	ASSERT_EQ(-EINVAL, fiber_mutex_init(NULL));
	ASSERT_EQ(-EINVAL, fiber_mutex_lock(NULL));
	ASSERT_EQ(-EINVAL, fiber_cond_init(NULL));
	ASSERT_EQ(-EINVAL, fiber_cond_signal(NULL));
	ASSERT_EQ(0, fiber_mutex_init(&m));
	ASSERT_EQ(0, fiber_cond_init(&c));
	ASSERT_EQ(-EPERM, fiber_mutex_unlock(&m));
	ASSERT_EQ(-EPERM, fiber_cond_wait(&c, &m));
	ASSERT_EQ(0, fiber_mutex_lock(&m));
	ASSERT_EQ(-EDEADLK, fiber_mutex_lock(&m));
	ASSERT_EQ(-EBUSY, fiber_mutex_trylock(&m));
	ASSERT_EQ(0, fiber_mutex_unlock(&m));
	ASSERT_EQ(-EPERM, fiber_mutex_unlock(&m));
	ASSERT_EQ(0, fiber_mutex_trylock(&m));
	ASSERT_EQ(0, fiber_mutex_unlock(&m));
	ASSERT_EQ(0, fiber_cond_signal(&c));
	ASSERT_EQ(0, fiber_cond_broadcast(&c));
}

static fiber_mutex_t held = FIBER_MUTEX_INITIALIZER;
static atomic_int ticks;
static atomic_bool waiter_done;

static void *holder(void *arg)
{
	fiber_mutex_lock(&held);
	fiber_sleep(50000000);
	fiber_mutex_unlock(&held);
	return NULL;
}

static void *waiter(void *arg)
{
	fiber_mutex_lock(&held);
	fiber_mutex_unlock(&held);
	atomic_store(&waiter_done, true);
	return NULL;
}

static void *ticker(void *arg)
{
	while (!atomic_load(&waiter_done)) {
		atomic_fetch_add(&ticks, 1);
		fiber_sleep(1000000);
	}
	return NULL;
}

/*
 * One worker: the holder sleeps 50 ms with the mutex, a waiter waits for
 * it, and a third fiber keeps running meanwhile. A waiter that blocked
 * the worker would stop the ticker and the holder, for good.
 */
TEST(waiter_parks_not_worker)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_t *h, *w, *t;

	atomic_store(&ticks, 0);
	atomic_store(&waiter_done, false);
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&h, holder, NULL));
	ASSERT_EQ(0, fiber_spawn(&w, waiter, NULL));
	ASSERT_EQ(0, fiber_spawn(&t, ticker, NULL));
	ASSERT_EQ(0, fiber_join(w, NULL));
	ASSERT_EQ(0, fiber_join(h, NULL));
	ASSERT_EQ(0, fiber_join(t, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("ticker ran %d times while the waiter waited", atomic_load(&ticks));
	ASSERT_LT(5, atomic_load(&ticks));
}

/* A bounded queue: producers and consumers on different workers. */
#define QUEUE_SIZE	4
#define ITEMS		4000
#define NR_PAIRS	4

static struct {
	fiber_mutex_t lock;
	fiber_cond_t not_full, not_empty;
	int items[QUEUE_SIZE];
	unsigned int head, len;
	unsigned char seen[NR_PAIRS * ITEMS];
	atomic_int dupes;
} q = { FIBER_MUTEX_INITIALIZER, FIBER_COND_INITIALIZER, FIBER_COND_INITIALIZER };

static void *producer(void *arg)
{
	int base = (int)(intptr_t)arg * ITEMS, i;

	for (i = 0; i < ITEMS; i++) {
		fiber_mutex_lock(&q.lock);
		while (q.len == QUEUE_SIZE)
			fiber_cond_wait(&q.not_full, &q.lock);
		q.items[(q.head + q.len++) % QUEUE_SIZE] = base + i;
		fiber_cond_signal(&q.not_empty);
		fiber_mutex_unlock(&q.lock);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	int i, item;

	for (i = 0; i < ITEMS; i++) {
		fiber_mutex_lock(&q.lock);
		while (!q.len)
			fiber_cond_wait(&q.not_empty, &q.lock);
		item = q.items[q.head];
		q.head = (q.head + 1) % QUEUE_SIZE;
		q.len--;
		fiber_cond_signal(&q.not_full);
		fiber_mutex_unlock(&q.lock);
		if (q.seen[item]++)
			atomic_fetch_add(&q.dupes, 1);
	}
	return NULL;
}

/*
 * 4 producers and 4 consumers through a 4-slot queue on 2 workers, with
 * preemption: every item arrives exactly once, and wake-ups crossed
 * workers.
 */
TEST_F(locked, producers_consumers_across_workers)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode, .slice_ns = 200000 };
	fiber_t *p[NR_PAIRS], *c[NR_PAIRS];
	int i;

	memset(q.seen, 0, sizeof(q.seen));
	FIBER_START(&cfg);
	for (i = 0; i < NR_PAIRS; i++) {
		ASSERT_EQ(0, fiber_spawn(&c[i], consumer, NULL));
		ASSERT_EQ(0, fiber_spawn(&p[i], producer, (void *)(intptr_t)i));
	}
	for (i = 0; i < NR_PAIRS; i++) {
		ASSERT_EQ(0, fiber_join(p[i], NULL));
		ASSERT_EQ(0, fiber_join(c[i], NULL));
	}
	TH_LOG("%lu wake-ups of sleeping workers", (unsigned long)FIBER_STAT_SUM(wakeups));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(0, atomic_load(&q.dupes));
	for (i = 0; i < NR_PAIRS * ITEMS; i++)
		ASSERT_EQ(1, q.seen[i]) TH_LOG("item %d", i);
}

static fiber_mutex_t tw_lock = FIBER_MUTEX_INITIALIZER;
static fiber_cond_t tw_cond = FIBER_COND_INITIALIZER;

struct timed {
	uint64_t wait_ns;
	int ret;
	uint64_t waited;
	bool held_after;
};

static void *timed_waiter(void *arg)
{
	struct timed *t = arg;
	uint64_t start = test_now_ns();

	fiber_mutex_lock(&tw_lock);
	t->ret = fiber_cond_timedwait(&tw_cond, &tw_lock, start + t->wait_ns);
	t->waited = test_now_ns() - start;
	/* Held again: a second unlock fails. */
	t->held_after = fiber_mutex_unlock(&tw_lock) == 0 &&
			fiber_mutex_unlock(&tw_lock) == -EPERM;
	return NULL;
}

/* Nobody signals: -ETIMEDOUT no earlier than the deadline, mutex held. */
TEST(timedwait_times_out)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct timed t = { .wait_ns = 30000000 }, past = { .wait_ns = 0 };
	fiber_t *f;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&f, timed_waiter, &t));
	ASSERT_EQ(0, fiber_join(f, NULL));
	/* A deadline of "now": over at once. */
	past.wait_ns = 1;
	ASSERT_EQ(0, fiber_spawn(&f, timed_waiter, &past));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(-ETIMEDOUT, t.ret);
	ASSERT_LE(30000000, t.waited);
	ASSERT_TRUE(t.held_after);
	ASSERT_EQ(-ETIMEDOUT, past.ret);
	ASSERT_TRUE(past.held_after);
}

#define NR_TIMED	64

/*
 * 64 fibers in timed waits of 1-8 ms on 2 workers while a thread signals
 * the condition 40 times, one waiter at a time: each wait ends exactly
 * once, by a signal (0) or by its timer (-ETIMEDOUT), with the mutex held
 * again. A waiter woken by both would run twice at once; one woken by
 * neither would hang the join. At most one waiter returns 0 per signal.
 */
TEST(timedwait_races_signal)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	static struct timed t[NR_TIMED];
	fiber_t *f[NR_TIMED];
	uint64_t ms = 1000000ULL * test_slowdown();
	int i, woken = 0, timed_out = 0;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < NR_TIMED; i++) {
		t[i] = (struct timed){ .wait_ns = ms + (i % 8) * ms };
		ASSERT_EQ(0, fiber_spawn(&f[i], timed_waiter, &t[i]));
	}
	/* Signals spread over the waits: some before, some after deadlines. */
	for (i = 0; i < 40; i++) {
		struct timespec ts = { 0, ms * 3 / 20 };

		fiber_mutex_lock(&tw_lock);
		fiber_cond_signal(&tw_cond);
		fiber_mutex_unlock(&tw_lock);
		nanosleep(&ts, NULL);
	}
	for (i = 0; i < NR_TIMED; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	for (i = 0; i < NR_TIMED; i++) {
		ASSERT_TRUE(t[i].ret == 0 || t[i].ret == -ETIMEDOUT) TH_LOG("waiter %d: %d", i, t[i].ret);
		ASSERT_TRUE(t[i].held_after);
		if (t[i].ret == 0) {
			woken++;
		} else {
			timed_out++;
			ASSERT_LE(t[i].wait_ns, t[i].waited);
		}
	}
	TH_LOG("%d signalled, %d timed out", woken, timed_out);
	ASSERT_LT(0, woken);
	ASSERT_GE(40, woken);
	ASSERT_LT(0, timed_out);
}

static fiber_mutex_t mixed_lock = FIBER_MUTEX_INITIALIZER;
static fiber_cond_t mixed_cond = FIBER_COND_INITIALIZER;
static int mixed_state;

static void *mixed_fiber(void *arg)
{
	fiber_mutex_lock(&mixed_lock);
	while (mixed_state != 1)
		fiber_cond_wait(&mixed_cond, &mixed_lock);
	mixed_state = 2;
	fiber_cond_broadcast(&mixed_cond);
	fiber_mutex_unlock(&mixed_lock);
	return NULL;
}

/*
 * A thread that is not a fiber and a fiber share a mutex and a condition:
 * the thread holds the mutex while the fiber waits for it, then each
 * waits for the other's signal.
 */
TEST(thread_and_fiber)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f;

	mixed_state = 0;
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_mutex_lock(&mixed_lock));
	ASSERT_EQ(0, fiber_spawn(&f, mixed_fiber, NULL));
	fiber_sleep(20000000);		/* the thread sleeps: the fiber waits for the mutex */
	mixed_state = 1;
	ASSERT_EQ(0, fiber_cond_broadcast(&mixed_cond));
	while (mixed_state != 2)
		ASSERT_EQ(0, fiber_cond_wait(&mixed_cond, &mixed_lock));
	ASSERT_EQ(0, fiber_mutex_unlock(&mixed_lock));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	/* Outside any scheduler, a thread's timed wait times out too. */
	ASSERT_EQ(0, fiber_mutex_lock(&mixed_lock));
	ASSERT_EQ(-ETIMEDOUT, fiber_cond_timedwait(&mixed_cond, &mixed_lock,
						  test_now_ns() + 5000000));
	ASSERT_EQ(0, fiber_mutex_unlock(&mixed_lock));
}

TEST_HARNESS_MAIN
