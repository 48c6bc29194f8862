// SPDX-License-Identifier: GPL-2.0
/*
 * The scheduler's queues under stress: fibers spawning fibers, yield
 * storms, joins and spawns across workers and threads, timers. Every fiber
 * runs to completion exactly once, never on two workers at once, and
 * never changes worker after its first run unless migration is allowed.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "fiber_test.h"

#define TREE_DEPTH	11			/* 4095 fibers */
#define TREE_NODES	((1 << (TREE_DEPTH + 1)) - 1)
#define YIELDS		4

struct node {
	atomic_int entered;
	atomic_int on_cpu;
	int worker;
};

static struct node nodes[TREE_NODES];
static atomic_int overlaps, moves, failures;

/* One stretch of running: alone on this fiber, on the worker it expects. */
static void run_stretch(struct node *n, bool first)
{
	int worker = fiber_worker_index();

	if (atomic_exchange(&n->on_cpu, 1))
		atomic_fetch_add(&overlaps, 1);
	if (first)
		n->worker = worker;
	else if (n->worker != worker)
		atomic_fetch_add(&moves, 1), n->worker = worker;
	for (volatile int i = 0; i < 200; i++)
		;
	atomic_store(&n->on_cpu, 0);
}

static void *tree_fiber(void *arg)
{
	long id = (long)arg;
	struct node *n = &nodes[id];
	fiber_t *kids[2];
	int i, k = 0;

	if (atomic_fetch_add(&n->entered, 1))
		atomic_fetch_add(&overlaps, 1);
	run_stretch(n, true);
	for (i = 1; i <= 2; i++)
		if (2 * id + i < TREE_NODES && !fiber_spawn(&kids[k], tree_fiber, (void *)(2 * id + i)))
			k++;
		else if (2 * id + i < TREE_NODES)
			atomic_fetch_add(&failures, 1);
	for (i = 0; i < YIELDS; i++) {
		fiber_yield();
		run_stretch(n, false);
	}
	while (k--)
		if (fiber_join(kids[k], NULL))
			atomic_fetch_add(&failures, 1);
	run_stretch(n, false);
	return NULL;
}

static void reset(void)
{
	memset(nodes, 0, sizeof(nodes));
	atomic_store(&overlaps, 0);
	atomic_store(&moves, 0);
	atomic_store(&failures, 0);
}

static void run_tree(struct __test_metadata *_metadata, unsigned int flags)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF, .flags = flags };
	fiber_t *root;
	int i;

	reset();
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&root, tree_fiber, (void *)0L));
	ASSERT_EQ(0, fiber_join(root, NULL));
	TH_LOG("%lu fibers stolen, %lu switches, %d moves after the first run",
	       (unsigned long)FIBER_STAT_SUM(steals), (unsigned long)FIBER_STAT_SUM(switches),
	       atomic_load(&moves));
	/* The second worker got work only by stealing it. */
	ASSERT_LT(0, FIBER_STAT_SUM(steals));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(0, atomic_load(&failures));
	ASSERT_EQ(0, atomic_load(&overlaps));
	for (i = 0; i < TREE_NODES; i++)
		ASSERT_EQ(1, atomic_load(&nodes[i].entered)) TH_LOG("fiber %d", i);
}

/*
 * A binary tree of 4095 fibers, each spawning its two children, yielding,
 * then joining them, on 2 workers: idle workers steal spawned fibers, but
 * a fiber that has run stays on its worker.
 */
TEST(spawn_tree_pinned)
{
	run_tree(_metadata, 0);
	ASSERT_EQ(0, atomic_load(&moves));
}

/* The same with FIBER_MIGRATE: fibers move, still never two places at once. */
TEST(spawn_tree_migrating)
{
	run_tree(_metadata, FIBER_MIGRATE);
	ASSERT_LT(0, atomic_load(&moves));
}

#define STORM_FIBERS	64
#define STORM_YIELDS	2000

static void *storm_fiber(void *arg)
{
	struct node *n = arg;
	int i;

	atomic_fetch_add(&n->entered, 1);
	run_stretch(n, true);
	for (i = 0; i < STORM_YIELDS; i++) {
		fiber_yield();
		run_stretch(n, false);
	}
	return NULL;
}

/*
 * 64 fibers yielding 2000 times each on 2 workers, migrating, preempted
 * by signals with 100 us slices on top.
 */
TEST(yield_storm_migrating)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_SIGNAL, .slice_ns = 100000,
				    .flags = FIBER_MIGRATE_PREEMPTED };
	fiber_t *f[STORM_FIBERS];
	int i;

	reset();
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < STORM_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], storm_fiber, &nodes[i]));
	for (i = 0; i < STORM_FIBERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%d moves", atomic_load(&moves));
	ASSERT_EQ(0, atomic_load(&overlaps));
	ASSERT_LT(0, atomic_load(&moves));
	for (i = 0; i < STORM_FIBERS; i++)
		ASSERT_EQ(1, atomic_load(&nodes[i].entered));
}

#define SPAWNER_THREADS	4
#define SPAWNS		500

static void *counted(void *arg)
{
	atomic_fetch_add(&((struct node *)arg)->entered, 1);
	fiber_yield();
	return NULL;
}

static void *spawner_thread(void *arg)
{
	struct node *base = arg;
	fiber_t *f[SPAWNS];
	int i;

	for (i = 0; i < SPAWNS; i++)
		if (fiber_spawn(&f[i], counted, &base[i]))
			atomic_fetch_add(&failures, 1), f[i] = NULL;
	for (i = 0; i < SPAWNS; i++)
		if (f[i] && fiber_join(f[i], NULL))
			atomic_fetch_add(&failures, 1);
	return NULL;
}

/*
 * 4 threads spawning and joining 500 fibers each at once, through the
 * global queue, onto 2 workers that sleep and are woken in between.
 */
TEST(spawns_from_threads)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_OFF };
	pthread_t t[SPAWNER_THREADS];
	int i;

	reset();
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < SPAWNER_THREADS; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, spawner_thread, &nodes[i * SPAWNS]));
	for (i = 0; i < SPAWNER_THREADS; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(0, atomic_load(&failures));
	for (i = 0; i < SPAWNER_THREADS * SPAWNS; i++)
		ASSERT_EQ(1, atomic_load(&nodes[i].entered)) TH_LOG("fiber %d", i);
}

#define SLEEPERS	200
#define SLEEP_STEP_NS	1000000

struct sleeper {
	uint64_t deadline, woke;
	int order;
	int rc;				/* fiber_cond_timedwait()'s */
	bool late;			/* its deadline had passed before it slept */
};

static atomic_int wake_order, waiting;
static fiber_mutex_t gate_lock = FIBER_MUTEX_INITIALIZER;
static fiber_cond_t gate = FIBER_COND_INITIALIZER;
static fiber_cond_t never_signalled = FIBER_COND_INITIALIZER;
static bool gate_open;

/*
 * Waits for the gate, then until its deadline. The wait takes the
 * deadline itself, as fiber_cond_timedwait() does: a relative sleep
 * computed from the clock ends late by however long the thread was off
 * its CPU between that reading and fiber_sleep()'s own, and an emulated
 * vCPU stalled there for more than the 1 ms between two deadlines once
 * (two sleepers woke swapped, with either 0.3 or 1 ms between them).
 */
static void *timed_sleeper(void *arg)
{
	struct sleeper *s = arg;

	fiber_mutex_lock(&gate_lock);
	atomic_fetch_add(&waiting, 1);
	while (!gate_open)
		fiber_cond_wait(&gate, &gate_lock);
	s->late = test_now_ns() >= s->deadline;
	s->rc = fiber_cond_timedwait(&never_signalled, &gate_lock, s->deadline);
	fiber_mutex_unlock(&gate_lock);
	s->woke = test_now_ns();
	s->order = atomic_fetch_add(&wake_order, 1);
	return NULL;
}

/*
 * 200 fibers on one worker wait until deadlines 1 ms apart, in a
 * shuffled order: none wakes early, and they wake in deadline order (the
 * worker's timer heap). They wait at a gate first, so the deadlines start
 * once all exist, however slow spawning is (emulated, it is).
 */
TEST(timers_in_deadline_order)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	static struct sleeper s[SLEEPERS];
	fiber_t *f[SLEEPERS];
	uint64_t seed = 88172645463325252ULL, start;
	int i;

	atomic_store(&wake_order, 0);
	atomic_store(&waiting, 0);
	gate_open = false;
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < SLEEPERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], timed_sleeper, &s[i]));
	while (atomic_load(&waiting) < SLEEPERS)
		usleep(1000);
	fiber_mutex_lock(&gate_lock);
	/* Time for all 200 to run to their sleep before the first deadline. */
	start = test_now_ns() + 100000000;
	for (i = 0; i < SLEEPERS; i++)
		s[i].deadline = start + (uint64_t)i * SLEEP_STEP_NS;
	for (i = SLEEPERS - 1; i > 0; i--) {
		int j = test_rand(&seed) % (i + 1);
		uint64_t d = s[i].deadline;

		s[i].deadline = s[j].deadline;
		s[j].deadline = d;
	}
	gate_open = true;
	fiber_cond_broadcast(&gate);
	fiber_mutex_unlock(&gate_lock);
	for (i = 0; i < SLEEPERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	for (i = 0; i < SLEEPERS; i++) {
		int j, earlier = 0;

		ASSERT_FALSE(s[i].late) TH_LOG("sleeper %d ran only after its deadline", i);
		ASSERT_EQ(-ETIMEDOUT, s[i].rc) TH_LOG("sleeper %d", i);
		ASSERT_LE(s[i].deadline, s[i].woke);
		for (j = 0; j < SLEEPERS; j++)
			earlier += s[j].deadline < s[i].deadline;
		ASSERT_EQ(earlier, s[i].order) TH_LOG("sleeper %d", i);
	}
}

#define DRAIN_CYCLES	60
#define DRAIN_SPINNERS	2
#define DRAIN_BURST_NS	20000000ULL

struct drain_spinner {
	atomic_bool *stop;
	atomic_bool done;
};

static void *drain_spin(void *arg)
{
	struct drain_spinner *d = arg;
	volatile unsigned long n = 0;

	while (!atomic_load_explicit(d->stop, memory_order_relaxed))
		n++;
	atomic_store(&d->done, true);
	return NULL;
}

static void *short_work(void *arg)
{
	volatile unsigned long n = (uintptr_t)arg;

	while (n)
		n--;
	return NULL;
}

/*
 * A worker favours the fibers queued before its preempted ones, counting
 * the global queue too; when other workers empty that queue first, it
 * must still run its preempted fibers rather than wait for work with
 * them queued. Spinners beside bursts of short fibers spawned from this
 * thread (to the global queue), on four workers: each cycle's spinners
 * all end. Stranded, a spinner never ends and the join never returns.
 */
TEST(preempted_fibers_outlive_a_drained_queue)
{
	struct fiber_config cfg = { .workers = 4, .mode = FIBER_PREEMPT_SIGNAL, .slice_ns = 100000 };
	struct drain_spinner d[DRAIN_SPINNERS];
	fiber_t *spinner[DRAIN_SPINNERS], *f;
	atomic_bool stop;
	unsigned int seed = 1;
	uint64_t start;
	int cycle, i;

	FIBER_START(&cfg);
	for (cycle = 0; cycle < DRAIN_CYCLES; cycle++) {
		atomic_store(&stop, false);
		for (i = 0; i < DRAIN_SPINNERS; i++) {
			d[i].stop = &stop;
			atomic_store(&d[i].done, false);
			ASSERT_EQ(0, fiber_spawn(&spinner[i], drain_spin, &d[i]));
		}
		for (start = test_now_ns(); test_now_ns() - start < DRAIN_BURST_NS;) {
			ASSERT_EQ(0, fiber_spawn(&f, short_work, (void *)(uintptr_t)(rand_r(&seed) % 5000)));
			ASSERT_EQ(0, fiber_detach(f));
			usleep(rand_r(&seed) % 300);
		}
		atomic_store(&stop, true);
		for (i = 0; i < DRAIN_SPINNERS; i++) {
			FIBER_WAIT_FOR(atomic_load(&d[i].done), 10000000000ULL);
			ASSERT_TRUE(atomic_load(&d[i].done)) TH_LOG("cycle %d: spinner %d stranded", cycle, i);
			ASSERT_EQ(0, fiber_join(spinner[i], NULL));
		}
	}
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST_HARNESS_MAIN
