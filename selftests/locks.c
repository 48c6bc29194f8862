// SPDX-License-Identifier: GPL-2.0
/*
 * Fibers that take pthread locks never deadlock their worker and never
 * share a lock: a fiber holding a mutex, rwlock, spin lock or running a
 * pthread_once initializer is not preempted, and one that waits for a
 * lock another fiber holds (even one that sleeps holding it) lets the
 * worker run the holder. Built with libfiber.so and with libfiber.a.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <pthread.h>
#include <stdatomic.h>

#define NR_FIBERS	4
#define ROUNDS		40
#define SECTION_SPINS	1000000UL	/* ~1 ms natively: many slices of 100 us */

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t rwlock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_spinlock_t spin;
static pthread_mutex_t recursive;

static atomic_int inside;		/* fibers in the critical section */
static atomic_int overlaps;		/* times two were inside at once */
static atomic_ulong ticks;		/* bumped by a fiber that takes no lock */
static atomic_int ran_while_held;	/* ...and it ran during a section */
static atomic_bool stop;

static void section(void)
{
	unsigned long before = atomic_load(&ticks);
	volatile unsigned long i;

	if (atomic_fetch_add(&inside, 1))
		atomic_fetch_add(&overlaps, 1);
	for (i = 0; i < SECTION_SPINS; i++)
		;
	atomic_fetch_sub(&inside, 1);
	if (atomic_load(&ticks) != before)
		atomic_fetch_add(&ran_while_held, 1);
}

static void *mutex_main(void *arg)
{
	for (int r = 0; r < ROUNDS; r++) {
		pthread_mutex_lock(&mutex);
		section();
		pthread_mutex_unlock(&mutex);
	}
	return NULL;
}

static void *rwlock_main(void *arg)
{
	for (int r = 0; r < ROUNDS; r++) {
		pthread_rwlock_wrlock(&rwlock);
		section();
		pthread_rwlock_unlock(&rwlock);
	}
	return NULL;
}

static void *spin_main(void *arg)
{
	for (int r = 0; r < ROUNDS; r++) {
		pthread_spin_lock(&spin);
		section();
		pthread_spin_unlock(&spin);
	}
	return NULL;
}

/* Holds the recursive mutex across a sleep, taking it twice. */
static void *recursive_main(void *arg)
{
	for (int r = 0; r < ROUNDS / 4; r++) {
		pthread_mutex_lock(&recursive);
		pthread_mutex_lock(&recursive);
		if (atomic_fetch_add(&inside, 1))
			atomic_fetch_add(&overlaps, 1);
		fiber_sleep(1000000);
		atomic_fetch_sub(&inside, 1);
		pthread_mutex_unlock(&recursive);
		pthread_mutex_unlock(&recursive);
		fiber_yield();
	}
	return NULL;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_int once_runs;

static void slow_init(void)
{
	atomic_fetch_add(&once_runs, 1);
	section();
	fiber_sleep(5000000);		/* stops, holding the once */
	section();
}

static void *once_main(void *arg)
{
	pthread_once(&once, slow_init);
	if (atomic_load(&once_runs) != 1)
		atomic_fetch_add(&overlaps, 1);	/* returned before init finished */
	return NULL;
}

static void *ticker_main(void *arg)
{
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		atomic_fetch_add_explicit(&ticks, 1, memory_order_relaxed);
	return NULL;
}

/* NR_FIBERS fibers of fn and one ticker on `workers` workers, to the end. */
static void run(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
		unsigned int workers, void *(*fn)(void *), bool expect_deferrals)
{
	struct fiber_config cfg = { .workers = workers, .mode = mode, .slice_ns = 100000 };
	pthread_mutexattr_t attr;
	fiber_t *f[NR_FIBERS], *ticker;
	int i;

	atomic_store(&inside, 0);
	atomic_store(&overlaps, 0);
	atomic_store(&ran_while_held, 0);
	atomic_store(&stop, false);
	pthread_spin_init(&spin, PTHREAD_PROCESS_PRIVATE);
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&recursive, &attr);
	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&ticker, ticker_main, NULL));
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], fn, NULL));
	/* A deadlock never gets past here: the harness's timeout fails it. */
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	atomic_store(&stop, true);
	ASSERT_EQ(0, fiber_join(ticker, NULL));
	TH_LOG("%d overlaps; one worker's ticker ran during %d sections; %lu deferred_off, %lu preemptions",
	       atomic_load(&overlaps), atomic_load(&ran_while_held),
	       FIBER_STAT_SUM(deferred_off), FIBER_STAT_SUM(preemptions));
	ASSERT_EQ(0, atomic_load(&overlaps));
	if (expect_deferrals)
		ASSERT_LT(0, FIBER_STAT_SUM(deferred_off));
	/* With one worker, nothing else runs while a lock is held. */
	if (workers == 1 && expect_deferrals)
		ASSERT_EQ(0, atomic_load(&ran_while_held));
	ASSERT_EQ(0, fiber_sched_stop());
}

FIBER_MODE_FIXTURE(locks);

TEST_F_TIMEOUT(locks, mutex_held_across_slices, 120)
{
	run(_metadata, variant->mode, 1, mutex_main, true);
}

TEST_F_TIMEOUT(locks, mutex_two_workers, 120)
{
	run(_metadata, variant->mode, 2, mutex_main, true);
}

TEST_F_TIMEOUT(locks, rwlock_held_across_slices, 120)
{
	run(_metadata, variant->mode, 1, rwlock_main, true);
}

TEST_F_TIMEOUT(locks, spin_lock_held_across_slices, 120)
{
	run(_metadata, variant->mode, 1, spin_main, true);
}

TEST_F_TIMEOUT(locks, recursive_mutex_of_a_sleeping_sibling, 120)
{
	run(_metadata, variant->mode, 1, recursive_main, false);
}

TEST_F_TIMEOUT(locks, once_initializer_runs_alone, 120)
{
	atomic_store(&once_runs, 0);
	run(_metadata, variant->mode, 1, once_main, false);
	if (!_metadata->skip)
		ASSERT_EQ(1, atomic_load(&once_runs));
}

TEST_HARNESS_MAIN
