// SPDX-License-Identifier: GPL-2.0
/*
 * Starting, stopping and forking race with nothing: statistics read while
 * the scheduler starts and stops, two threads stopping it at once,
 * spawns racing with a stop, restarts, and fork() from a fiber, whose
 * child finds the scheduler stopped and may start its own.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define CYCLES		200
#define MAX_SPAWNED	4096

static atomic_bool done;

static void *read_stats(void *arg)
{
	struct fiber_worker_stats st;

	while (!atomic_load(&done)) {
		fiber_worker_stats(0, &st);
		fiber_worker_stats(fiber_worker_count() - 1, &st);
	}
	return NULL;
}

TEST(stats_while_starting_and_stopping)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	pthread_t reader;
	int i;

	atomic_store(&done, false);
	ASSERT_EQ(0, pthread_create(&reader, NULL, read_stats, NULL));
	for (i = 0; i < CYCLES; i++) {
		ASSERT_EQ(0, fiber_sched_start(&cfg));
		ASSERT_EQ(0, fiber_sched_stop());
	}
	atomic_store(&done, true);
	pthread_join(reader, NULL);
}

static void *nap(void *arg)
{
	fiber_sleep(20000000);
	return NULL;
}

/* Long enough for both stoppers to be under way, even emulated. */
static void *long_nap(void *arg)
{
	fiber_sleep(300000000);
	return NULL;
}

#define SWAP_RESULTS(a, b) do { void *__t = (a); (a) = (b); (b) = __t; } while (0)

static void *stop_thread(void *arg)
{
	return (void *)(intptr_t)fiber_sched_stop();
}

TEST(two_threads_stop)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	pthread_t a, b;
	void *ra, *rb;
	fiber_t *f;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&f, long_nap, NULL));
	ASSERT_EQ(0, pthread_create(&a, NULL, stop_thread, NULL));
	ASSERT_EQ(0, pthread_create(&b, NULL, stop_thread, NULL));
	pthread_join(a, &ra);
	pthread_join(b, &rb);
	/* One stops it; the other is told someone else is, or that it has. */
	if (ra)
		SWAP_RESULTS(ra, rb);
	ASSERT_EQ(0, (intptr_t)ra);
	ASSERT_TRUE((intptr_t)rb == -EALREADY || (intptr_t)rb == -EINVAL)
		TH_LOG("second stop returned %ld", (long)(intptr_t)rb);
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(-EINVAL, fiber_sched_stop());
}

static fiber_t *spawned[MAX_SPAWNED];
static atomic_int nr_spawned;

static void *spawn_until_refused(void *arg)
{
	fiber_t *f;

	while (atomic_load(&nr_spawned) < MAX_SPAWNED) {
		if (fiber_spawn(&f, nap, NULL))
			break;
		spawned[atomic_fetch_add(&nr_spawned, 1)] = f;
	}
	return NULL;
}

TEST(spawn_during_stop)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	pthread_t spawner;
	fiber_t *f;
	int i;

	atomic_store(&nr_spawned, 0);
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&f, nap, NULL));
	ASSERT_EQ(0, pthread_create(&spawner, NULL, spawn_until_refused, NULL));
	while (!atomic_load(&nr_spawned))
		usleep(100);
	ASSERT_EQ(0, fiber_sched_stop());
	pthread_join(spawner, NULL);
	TH_LOG("%d fibers spawned while the stop began", atomic_load(&nr_spawned));
	ASSERT_GT(MAX_SPAWNED, atomic_load(&nr_spawned));	/* the stop refused some */
	/* Every spawn that succeeded ran: its join returns. */
	ASSERT_EQ(0, fiber_join(f, NULL));
	for (i = 0; i < atomic_load(&nr_spawned); i++)
		ASSERT_EQ(0, fiber_join(spawned[i], NULL));
	ASSERT_EQ(-EINVAL, fiber_spawn(&f, nap, NULL));
}

static void *spawn_one(void *arg)
{
	fiber_t *f;
	void *ret = NULL;

	if (fiber_spawn(&f, nap, NULL) || fiber_join(f, &ret))
		return (void *)1L;
	return ret;
}

/*
 * Start and stop cycles in one process, with fibers spawned by the thread
 * and by fibers: whatever the last cycle counted (fibers spawned on one
 * worker and returned on another, by a thread and on a worker) must not
 * keep the next stop waiting.
 */
TEST(restart_cycles)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f[4];
	void *ret;
	int cycle, i;

	for (cycle = 0; cycle < 20; cycle++) {
		ASSERT_EQ(0, fiber_sched_start(&cfg));
		for (i = 0; i < 4; i++)
			ASSERT_EQ(0, fiber_spawn(&f[i], spawn_one, NULL));
		for (i = 0; i < 4; i++) {
			ASSERT_EQ(0, fiber_join(f[i], &ret));
			ASSERT_EQ(NULL, ret);
		}
		ASSERT_EQ(0, fiber_sched_stop());
	}
}

static void *child_work(void *arg)
{
	return (void *)0x5a;
}

/* In the child: the scheduler is stopped, and a new one works. */
static int child_checks(void)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f;
	void *ret;

	if (fiber_self() || fiber_worker_index() != -1 || fiber_worker_count())
		return 1;
	if (fiber_spawn(&f, child_work, NULL) != -EINVAL)
		return 2;
	if (fiber_sched_start(&cfg) || fiber_spawn(&f, child_work, NULL) ||
	    fiber_join(f, &ret) || ret != (void *)0x5a)
		return 3;
	if (fiber_sched_stop())
		return 4;
	return 0;
}

static void *forker(void *arg)
{
	int status = -1;
	pid_t pid = fork();

	if (pid == 0)
		_exit(child_checks());
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return (void *)-1;
	return (void *)(intptr_t)status;
}

FIBER_MODE_FIXTURE(fork);

TEST_F_TIMEOUT(fork, from_a_fiber, 60)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode };
	fiber_t *f, *other;
	void *status;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&other, nap, NULL));
	ASSERT_EQ(0, fiber_spawn(&f, forker, NULL));
	ASSERT_EQ(0, fiber_join(f, &status));
	ASSERT_EQ(0, fiber_join(other, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_TRUE(WIFEXITED((intptr_t)status)) TH_LOG("child status %#lx", (long)status);
	ASSERT_EQ(0, WEXITSTATUS((intptr_t)status));
}

TEST_HARNESS_MAIN
