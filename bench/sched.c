// SPDX-License-Identifier: MIT
/*
 * Scheduler figures, cooperative (preemption off), so they show the
 * queues alone:
 *  - yield rate and spawn+join rate with 1 and 2 workers. Each worker gets
 *    one driver fiber (the drivers hold their workers until all have
 *    started, so each lands on its own), which spawns its own fibers: the
 *    work is split evenly and every queue operation stays on the worker's
 *    own queue, as in a server whose connections each live on one worker;
 *  - cross-worker wake-up latency: two fibers on different workers take
 *    turns through a fiber_cond_t; each turn wakes a worker that waits in
 *    its ring (IORING_OP_MSG_RING); median and p99 of one turn;
 *  - memory: RSS per fiber parked in fiber_read(), 10,000 of them.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fiber.h"

#define ROUNDS		5
#define YIELDERS	4		/* per worker */
#define YIELDS		200000		/* per yielder */
#define SPAWNS		50000		/* per worker */
#define TURNS		20000
#define READERS		10000

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void start(unsigned int workers)
{
	struct fiber_config cfg = { .workers = workers, .mode = FIBER_PREEMPT_OFF };
	int ret = fiber_sched_start(&cfg);

	if (ret) {
		fprintf(stderr, "fiber_sched_start: %s\n", strerror(-ret));
		exit(1);
	}
}

static void check(int ret, const char *what)
{
	if (ret < 0) {
		fprintf(stderr, "%s: %s\n", what, strerror(-ret));
		exit(1);
	}
}

static atomic_uint drivers_started;
static unsigned int nr_drivers;

/* Holds the worker until every driver runs: one driver per worker. */
static void driver_barrier(void)
{
	atomic_fetch_add(&drivers_started, 1);
	while (atomic_load(&drivers_started) < nr_drivers)
		;
}

static void *yielder(void *arg)
{
	long i;

	for (i = 0; i < YIELDS; i++)
		fiber_yield();
	return NULL;
}

static void *nothing(void *arg)
{
	return NULL;
}

static void *yield_driver(void *arg)
{
	fiber_t *f[YIELDERS];
	int i;

	driver_barrier();
	for (i = 0; i < YIELDERS; i++)
		check(fiber_spawn(&f[i], yielder, NULL), "fiber_spawn");
	for (i = 0; i < YIELDERS; i++)
		fiber_join(f[i], NULL);
	return NULL;
}

static void *spawn_driver(void *arg)
{
	fiber_t *f;
	long i;

	driver_barrier();
	for (i = 0; i < SPAWNS; i++) {
		check(fiber_spawn(&f, nothing, NULL), "fiber_spawn");
		fiber_join(f, NULL);
	}
	return NULL;
}

/* Operations per second with one driver per worker. */
static double rate(unsigned int workers, void *(*driver)(void *), double ops_per_driver)
{
	fiber_t *d[2];
	double t;
	unsigned int i;

	start(workers);
	nr_drivers = workers;
	atomic_store(&drivers_started, 0);
	t = now_ns();
	for (i = 0; i < workers; i++)
		check(fiber_spawn(&d[i], driver, NULL), "fiber_spawn");
	for (i = 0; i < workers; i++)
		fiber_join(d[i], NULL);
	t = now_ns() - t;
	fiber_sched_stop();
	return workers * ops_per_driver / t * 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median_rate(unsigned int workers, void *(*driver)(void *), double ops)
{
	double r[ROUNDS];
	int i;

	for (i = 0; i < ROUNDS; i++)
		r[i] = rate(workers, driver, ops);
	qsort(r, ROUNDS, sizeof(r[0]), cmp_double);
	return r[ROUNDS / 2];
}

/* Two fibers on two workers take turns; turn_ns[i] is turn i's latency. */
static struct {
	fiber_mutex_t lock;
	fiber_cond_t cond;
	int turn;
	double sent;
	double turn_ns[TURNS];
} pp = { .lock = FIBER_MUTEX_INITIALIZER, .cond = FIBER_COND_INITIALIZER };

static void *player(void *arg)
{
	int me = (int)(long)arg, i;

	driver_barrier();
	for (i = me; i < TURNS; i += 2) {
		fiber_mutex_lock(&pp.lock);
		while (pp.turn != i)
			fiber_cond_wait(&pp.cond, &pp.lock);
		if (i)
			pp.turn_ns[i] = now_ns() - pp.sent;
		pp.turn = i + 1;
		pp.sent = now_ns();
		fiber_cond_signal(&pp.cond);
		fiber_mutex_unlock(&pp.lock);
	}
	return NULL;
}

static void wake_latency(void)
{
	struct fiber_worker_stats st;
	fiber_t *a, *b;
	uint64_t wakeups = 0;
	unsigned int i;
	int sameworker = 0;

	start(2);
	nr_drivers = 2;
	atomic_store(&drivers_started, 0);
	pp.turn = 0;
	check(fiber_spawn(&a, player, (void *)0L), "fiber_spawn");
	check(fiber_spawn(&b, player, (void *)1L), "fiber_spawn");
	fiber_join(a, NULL);
	fiber_join(b, NULL);
	for (i = 0; i < 2; i++)
		if (!fiber_worker_stats(i, &st))
			wakeups += st.wakeups, sameworker += !st.switches;
	fiber_sched_stop();
	qsort(pp.turn_ns + 1, TURNS - 1, sizeof(double), cmp_double);
	printf("sched: cross-worker wake-up: median %.1f us, p99 %.1f us "
	       "(%d turns between fibers on 2 workers through a fiber_cond_t; %lu wake-ups of a waiting worker)\n",
	       pp.turn_ns[TURNS / 2] / 1e3, pp.turn_ns[TURNS * 99 / 100] / 1e3, TURNS,
	       (unsigned long)wakeups);
}

static long rss_kib(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int sv[2];

static void *reader(void *arg)
{
	char c;

	return (void *)(long)fiber_read(sv[0], &c, 1);
}

static uint64_t io_ops(void)
{
	struct fiber_worker_stats st;

	return fiber_worker_stats(0, &st) ? 0 : st.io_ops;
}

static void parked_memory(void)
{
	struct rlimit nofile;
	static fiber_t *f[READERS];
	struct fiber_worker_stats st;
	long before, after;
	char c = 0;
	int i, bad = 0;

	getrlimit(RLIMIT_NOFILE, &nofile);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv)) {
		perror("socketpair");
		exit(1);
	}
	/* Enough ring entries that every read is in flight at once. */
	{
		struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF,
					    .ring_entries = 16384 };

		check(fiber_sched_start(&cfg), "fiber_sched_start");
	}
	fiber_worker_stats(0, &st);
	if (!st.ring_entries) {
		printf("sched: memory: SKIP (no io_uring here: fiber_read() would block the worker)\n");
		fiber_sched_stop();
		return;
	}
	before = rss_kib();
	for (i = 0; i < READERS; i++)
		check(fiber_spawn(&f[i], reader, NULL), "fiber_spawn");
	while (io_ops() < READERS)
		usleep(10000);
	usleep(50000);
	after = rss_kib();
	for (i = 0; i < READERS; i++)
		if (send(sv[1], &c, 1, 0) != 1)
			bad++;
	for (i = 0; i < READERS; i++) {
		void *ret;

		fiber_join(f[i], &ret);
		bad += ret != (void *)1L;
	}
	fiber_sched_stop();
	close(sv[0]);
	close(sv[1]);
	printf("sched: memory: %.1f KiB RSS per fiber parked in fiber_read() (%d fibers, "
	       "256 KiB stacks reserved, %d reads failed; goal <= 16 KiB)\n",
	       (double)(after - before) / READERS, READERS, bad);
}

int main(void)
{
	double y1, y2, s1, s2;

	y1 = median_rate(1, yield_driver, (double)YIELDERS * YIELDS);
	y2 = median_rate(2, yield_driver, (double)YIELDERS * YIELDS);
	printf("sched: yield: 1 worker %.1f M/s, 2 workers %.1f M/s, scaling %.2fx "
	       "(%d yielders per worker, median of %d runs; goal >= 1.7x on 2 CPUs)\n",
	       y1 / 1e6, y2 / 1e6, y2 / y1, YIELDERS, ROUNDS);
	s1 = median_rate(1, spawn_driver, SPAWNS);
	s2 = median_rate(2, spawn_driver, SPAWNS);
	printf("sched: spawn+join: 1 worker %.0f k/s, 2 workers %.0f k/s, scaling %.2fx "
	       "(one driver per worker spawning and joining an empty fiber, median of %d runs)\n",
	       s1 / 1e3, s2 / 1e3, s2 / s1, ROUNDS);
	wake_latency();
	parked_memory();
	return 0;
}
