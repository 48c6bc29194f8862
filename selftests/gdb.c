// SPDX-License-Identifier: GPL-2.0
/*
 * The program selftests/gdb.sh debugs with scripts/gdb/libfiber.py: it
 * puts fibers in every state, each in a known function of its own, then
 * stops itself with SIGTRAP for gdb to look, live and in a core file.
 * Blocked: on a fiber mutex, in a sleep, in a join, in a read (with
 * io_uring); runnable after a yield; preempted and running: three
 * spinners on two workers in signal mode; one returned and not joined.
 * gdb finds the fibers' ids in `ids`. If gdb continues, the program ends
 * the scene and exits 0.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fiber_test.h"

#define NOINLINE	__attribute__((noinline, noclone))
/* Keeps each call a call, not a jump: the caller has work after it. */
#define AFTER_CALL()	__asm__ volatile("" ::: "memory")
#define NR_SPINNERS	3
#define NAP_NS		100000000ULL
#define WAIT_NS		5000000000ULL

static struct {
	fiber_mutex_t lock;		/* held by main: the locker waits */
	int pipe[2];			/* the reader waits for a byte */
	fiber_t *sleeper;
	atomic_bool stop;
	atomic_int waiting;		/* fibers about to wait */
	atomic_ulong spins;
	unsigned int mark;		/* the sleeper's local, which gdb reads */
	unsigned int mark_seen;		/* where the sleeper leaves it: it stays live */
	unsigned long yields;		/* the yielder's local, as it was stored */
} scene = { .lock = FIBER_MUTEX_INITIALIZER, .mark = 42 };

/* Read by gdb: which fiber is which (0: not spawned). */
struct {
	uint64_t locker, sleeper, joiner, reader, yielder, returned;
	uint64_t spinner[NR_SPINNERS];
} ids;

/* mark stays live across the calls, in a callee-saved register or on the stack. */
static NOINLINE void gd_sleep(void)
{
	unsigned int mark = scene.mark;

	atomic_fetch_add(&scene.waiting, 1);
	while (!atomic_load(&scene.stop))
		fiber_sleep(NAP_NS);
	scene.mark_seen = mark;
}

static NOINLINE void gd_join(void)
{
	atomic_fetch_add(&scene.waiting, 1);
	fiber_join(scene.sleeper, NULL);
	AFTER_CALL();
}

static NOINLINE void gd_lock(void)
{
	atomic_fetch_add(&scene.waiting, 1);
	fiber_mutex_lock(&scene.lock);
	fiber_mutex_unlock(&scene.lock);
	AFTER_CALL();
}

static NOINLINE void gd_read(void)
{
	char c;

	atomic_fetch_add(&scene.waiting, 1);
	fiber_read(scene.pipe[0], &c, 1);
	AFTER_CALL();
}

/*
 * yields stays in a callee-saved register, and fiber_yield() switches
 * without a frame of its own: the switch frame holds it.
 */
static NOINLINE void gd_yield(void)
{
	unsigned long yields = 0;

	atomic_fetch_add(&scene.waiting, 1);
	while (!atomic_load(&scene.stop)) {
		scene.yields = ++yields;
		fiber_yield();
	}
}

static NOINLINE void gd_spin(void)
{
	while (!atomic_load_explicit(&scene.stop, memory_order_relaxed))
		atomic_fetch_add_explicit(&scene.spins, 1, memory_order_relaxed);
}

static void *sleeper(void *arg) { gd_sleep(); return NULL; }
static void *joiner(void *arg) { gd_join(); return NULL; }
static void *locker(void *arg) { gd_lock(); return NULL; }
static void *reader(void *arg) { gd_read(); return NULL; }
static void *yielder(void *arg) { gd_yield(); return NULL; }
static void *spinner(void *arg) { gd_spin(); return NULL; }
static void *returns(void *arg) { return NULL; }

/* err: a negative errno value, or 0. */
static void die(const char *what, int err)
{
	if (err)
		fprintf(stderr, "gdb scene: %s: %s\n", what, strerror(-err));
	else
		fprintf(stderr, "gdb scene: %s\n", what);
	exit(1);
}

/* Spawns fn as a fiber named name; its id goes to *id. */
static fiber_t *spawn(void *(*fn)(void *), const char *name, uint64_t *id)
{
	fiber_t *f;
	int err = fiber_spawn(&f, fn, NULL);

	if (err)
		die("fiber_spawn", err);
	fiber_set_name(f, name);
	*id = fiber_id(f);
	return f;
}

/* Every waiter has counted itself in, and a spinner was preempted. */
static bool scene_set(fiber_t *const *spinners, int waiters)
{
	struct fiber_stats st;
	uint64_t preemptions = 0;

	for (int i = 0; i < NR_SPINNERS; i++)
		if (!fiber_stats(spinners[i], &st))
			preemptions += st.preemptions;
	return atomic_load(&scene.waiting) == waiters && preemptions;
}

int main(void)
{
	/* Slices of 10 ms: the yielder is almost always seen runnable. */
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_SIGNAL,
				    .slice_ns = 10000000 };
	fiber_t *locker_f, *joiner_f, *reader_f = NULL, *yielder_f, *returned_f;
	fiber_t *spinners[NR_SPINNERS];
	struct fiber_worker_stats st;
	int err, waiters = 4;

	if (pipe(scene.pipe))
		die("pipe", -errno);
	err = fiber_sched_start(&cfg);
	if (err)
		die("fiber_sched_start", err);
	fiber_mutex_lock(&scene.lock);
	scene.sleeper = spawn(sleeper, "sleeper", &ids.sleeper);
	joiner_f = spawn(joiner, "joiner", &ids.joiner);
	locker_f = spawn(locker, "locker", &ids.locker);
	yielder_f = spawn(yielder, "yielder", &ids.yielder);
	returned_f = spawn(returns, "returned", &ids.returned);
	/* Without a ring, a fiber's read holds its worker. */
	if (!fiber_worker_stats(0, &st) && st.ring_entries) {
		reader_f = spawn(reader, "reader", &ids.reader);
		waiters++;
	}
	for (int i = 0; i < NR_SPINNERS; i++)
		spinners[i] = spawn(spinner, "spinner", &ids.spinner[i]);

	FIBER_WAIT_FOR(scene_set(spinners, waiters), WAIT_NS);
	if (!scene_set(spinners, waiters))
		die("waiters or preemptions missing after 5 s", 0);
	/* Until each waiter has parked past its count. */
	usleep(50000);

	raise(SIGTRAP);

	atomic_store(&scene.stop, true);
	fiber_mutex_unlock(&scene.lock);
	if (reader_f && write(scene.pipe[1], "x", 1) != 1)
		die("write", -errno);
	for (int i = 0; i < NR_SPINNERS; i++)
		fiber_join(spinners[i], NULL);
	fiber_join(locker_f, NULL);
	fiber_join(yielder_f, NULL);
	fiber_join(returned_f, NULL);
	if (reader_f)
		fiber_join(reader_f, NULL);
	/* The joiner frees the sleeper. */
	fiber_join(joiner_f, NULL);
	err = fiber_sched_stop();
	if (err)
		die("fiber_sched_stop", err);
	return 0;
}
