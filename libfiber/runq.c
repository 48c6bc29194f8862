// SPDX-License-Identifier: MIT
/*
 * Run queues: one pair per worker, a global one, stealing and wake-ups.
 *
 * Each worker owns two FIFO queues under one short lock of its own:
 * "pinned", fibers that must run on it (they have run there, and their
 * code may keep thread-local addresses in registers), and "shared",
 * fibers any worker may take (spawned by a fiber and never run yet). A
 * yield, a preemption and an I/O completion of a fiber that stays on its
 * worker touch only that worker's lock, which nobody else takes unless it
 * steals or wakes.
 *
 * The global queue takes the fibers spawned by threads that are not
 * workers, and, as in Go, fibers allowed to migrate (FIBER_MIGRATE*) when
 * they yield or are preempted: that is what spreads CPU-bound fibers
 * evenly over busy workers, which never steal. Every fiber queued gets a
 * ticket from the CPU's counter and a worker takes whichever of its
 * queues' heads and the global head is oldest, so together they behave
 * as one FIFO; the global lock is taken only while that queue is not
 * empty.
 *
 * runnext: a fiber spawned or woken by the fiber running on the same
 * worker (a lock handed over, a join) runs next, as Go's runnext does, so
 * a wake-up costs no trip through the queue and no thief takes a fiber
 * its spawner is about to wait for; a streak of RUNNEXT_MAX such picks
 * lets the queue's head go first, so two fibers waking each other cannot
 * starve the rest.
 *
 * Fibers preempted on a worker they stay on are not here: only their
 * worker touches them, in its own queue (sched.c: preempted_turn()), and
 * they run after the fibers queued here while they ran.
 *
 * A worker with nothing to do steals half of a victim's shared queue (the
 * oldest half), looking at the others in turn from a random one, and
 * otherwise waits: in its ring, with its next timer as the timeout, or on
 * a futex without a ring. Whoever queues work for a waiting worker wakes
 * it, at most once per wait (rq.woken, under its lock): another worker
 * with a ring by IORING_OP_MSG_RING, any other thread by the worker's
 * eventfd. Queuing stealable work while some worker waits wakes one of
 * them. Lost wake-ups are ruled out in the usual way: a worker sets
 * rq.sleeping under its lock and counts itself in nr_idle before it looks
 * for work one last time, and whoever queues work reads both after.
 */
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define RUNNEXT_MAX	4
#define SPINS_BEFORE_YIELD	128

void fiber_spin_wait(uint32_t *lock)
{
	unsigned int spins = 0;

	do {
		while (__atomic_load_n(lock, __ATOMIC_RELAXED)) {
			if (++spins < SPINS_BEFORE_YIELD) {
				fiber_cpu_relax();
			} else {
				sched_yield();
				spins = 0;
			}
		}
	} while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE));
}

static unsigned int load(const unsigned int *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void store(unsigned int *p, unsigned int v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static bool stealable(const struct fiber *f)
{
	return f->pinned < 0 && f->timer_worker < 0;
}

static void futex_wake(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Sends w, which waits for work, its one wake-up for this wait. */
static void send_wake(struct fiber_worker *w)
{
	struct fiber_worker *self = fiber_tls_worker;

	__atomic_fetch_add(&w->wakeups, 1, __ATOMIC_RELAXED);
	if (!w->has_ring) {
		__atomic_fetch_add(&w->rq.futex, 1, __ATOMIC_RELEASE);
		futex_wake(&w->rq.futex);
		return;
	}
	if (self && self->has_msg_ring && fiber_io_msg_ring(self, w))
		return;
	fiber_io_wake(w);
}

/*
 * Marks w woken if it waits and has not been woken since it began to;
 * rq.lock held. True: the caller sends the wake-up, once unlocked.
 */
static bool claim_wake(struct fiber_worker *w)
{
	if (!w->rq.sleeping || w->rq.woken)
		return false;
	w->rq.woken = true;
	return true;
}

/* Some worker waits while stealable work was queued: wake one. */
static void wake_idle(struct fiber_worker *except)
{
	unsigned int i;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&fiber_sched.nr_idle, __ATOMIC_RELAXED))
		return;
	for (i = 0; i < fiber_sched.nr_workers; i++) {
		struct fiber_worker *w = &fiber_sched.workers[i];
		bool wake;

		if (w == except || !__atomic_load_n(&w->rq.sleeping, __ATOMIC_RELAXED))
			continue;
		fiber_spin_lock(&w->rq.lock);
		wake = claim_wake(w);
		fiber_spin_unlock(&w->rq.lock);
		if (wake) {
			send_wake(w);
			return;
		}
	}
}

/* rq.lock held. */
static void rq_push_locked(struct fiber_worker *w, struct fiber *f, bool shared)
{
	f->ticket = fiber_arch_ticks();
	fiber_queue_push(shared ? &w->rq.shared : &w->rq.pinned, f);
	store(&w->rq.len, w->rq.len + 1);
	if (shared)
		store(&w->rq.nr_shared, w->rq.nr_shared + 1);
}

/* Queues runnable f on w (any thread), waking w or an idle worker. */
void fiber_runq_push(struct fiber_worker *w, struct fiber *f)
{
	bool shared = stealable(f), wake;

	f->state = FIBER_RUNNABLE;
	fiber_spin_lock(&w->rq.lock);
	rq_push_locked(w, f, shared);
	wake = claim_wake(w);
	fiber_spin_unlock(&w->rq.lock);
	if (wake)
		send_wake(w);
	else if (shared)
		wake_idle(w);
}

void fiber_global_push(struct fiber *f)
{
	f->state = FIBER_RUNNABLE;
	f->ticket = fiber_arch_ticks();
	fiber_spin_lock(&fiber_sched.global.lock);
	fiber_queue_push(&fiber_sched.global.q, f);
	store(&fiber_sched.global.len, fiber_sched.global.len + 1);
	fiber_spin_unlock(&fiber_sched.global.lock);
	wake_idle(NULL);
}

/*
 * Makes a parked fiber runnable, from any thread: on the worker it must
 * run on, else on the caller's worker (as its runnext when the caller is
 * that worker), else in the global queue.
 */
void fiber_wake(struct fiber *f)
{
	struct fiber_worker *self = fiber_tls_worker;
	int target = f->timer_worker >= 0 ? f->timer_worker : f->pinned;
	struct fiber *old;

	if (target < 0 && !self) {
		fiber_global_push(f);
		return;
	}
	if (target >= 0 && (!self || (int)self->index != target)) {
		fiber_runq_push(&fiber_sched.workers[target], f);
		return;
	}
	/* The caller's own worker: the woken fiber runs next. */
	f->state = FIBER_RUNNABLE;
	old = self->runnext;
	self->runnext = f;
	if (old)
		fiber_runq_push(self, old);
}

/* The older head of w's queues; rq.lock held. */
static struct fiber *rq_head_locked(struct fiber_worker *w)
{
	struct fiber *mine = w->rq.pinned.head, *shared = w->rq.shared.head;

	return mine && (!shared || mine->ticket < shared->ticket) ? mine : shared;
}

/* Takes f, the head of one of w's queues; rq.lock held. */
static void rq_pop_locked(struct fiber_worker *w, struct fiber *f)
{
	if (f == w->rq.pinned.head) {
		fiber_queue_pop(&w->rq.pinned);
	} else {
		fiber_queue_pop(&w->rq.shared);
		store(&w->rq.nr_shared, w->rq.nr_shared - 1);
	}
	store(&w->rq.len, w->rq.len - 1);
}

/* The oldest of w's queues' heads and the global queue's head, taken. */
static struct fiber *queues_pop(struct fiber_worker *w)
{
	struct fiber *f = NULL, *g;

	if (!load(&w->rq.len) && !load(&fiber_sched.global.len))
		return NULL;
	fiber_spin_lock(&w->rq.lock);
	f = rq_head_locked(w);
	if (load(&fiber_sched.global.len)) {
		fiber_spin_lock(&fiber_sched.global.lock);
		g = fiber_sched.global.q.head;
		if (g && (!f || g->ticket < f->ticket)) {
			fiber_queue_pop(&fiber_sched.global.q);
			store(&fiber_sched.global.len, fiber_sched.global.len - 1);
			fiber_spin_unlock(&fiber_sched.global.lock);
			fiber_spin_unlock(&w->rq.lock);
			return g;
		}
		fiber_spin_unlock(&fiber_sched.global.lock);
	}
	if (f)
		rq_pop_locked(w, f);
	fiber_spin_unlock(&w->rq.lock);
	return f;
}

/*
 * Takes the older half of victim's shared queue: returns the first, and
 * queues the rest on w.
 */
static struct fiber *steal_from(struct fiber_worker *w, struct fiber_worker *victim)
{
	struct fiber *first, *f, *last;
	unsigned int n, i;

	if (!load(&victim->rq.nr_shared))
		return NULL;
	fiber_spin_lock(&victim->rq.lock);
	n = (victim->rq.nr_shared + 1) / 2;
	first = victim->rq.shared.head;
	last = first;
	for (i = 1; i < n; i++)
		last = last->next;
	if (first) {
		victim->rq.shared.head = last->next;
		if (!last->next)
			victim->rq.shared.tail = NULL;
		last->next = NULL;
		store(&victim->rq.nr_shared, victim->rq.nr_shared - n);
		store(&victim->rq.len, victim->rq.len - n);
	}
	fiber_spin_unlock(&victim->rq.lock);
	if (!first)
		return NULL;
	w->steals += n;
	f = first->next;
	if (f) {
		fiber_spin_lock(&w->rq.lock);
		while (f) {
			struct fiber *next = f->next;

			rq_push_locked(w, f, true);
			f = next;
		}
		fiber_spin_unlock(&w->rq.lock);
	}
	return first;
}

static struct fiber *steal(struct fiber_worker *w)
{
	unsigned int n = fiber_sched.nr_workers, start, i;
	struct fiber *f;

	if (n < 2)
		return NULL;
	/* A victim to start from that differs between picks and workers. */
	start = (unsigned int)((w->ticks + w->index) * 0x9e3779b97f4a7c15ULL >> 32) % n;
	for (i = 0; i < n; i++) {
		struct fiber_worker *victim = &fiber_sched.workers[(start + i) % n];

		if (victim != w && (f = steal_from(w, victim)))
			return f;
	}
	return NULL;
}

/* Whether another worker has something w could take; racy. */
static bool work_elsewhere(const struct fiber_worker *w)
{
	unsigned int i;

	if (load(&fiber_sched.global.len))
		return true;
	for (i = 0; i < fiber_sched.nr_workers; i++)
		if (&fiber_sched.workers[i] != w && load(&fiber_sched.workers[i].rq.nr_shared))
			return true;
	return false;
}

static bool queues_empty(const struct fiber_worker *w)
{
	return !load(&w->rq.len) && !load(&fiber_sched.global.len);
}

/*
 * Whether nothing else waits to run on w, preempted fibers included
 * (racy: for deciding to switch). On w's thread.
 */
bool fiber_runq_empty(const struct fiber_worker *w)
{
	return !w->runnext && queues_empty(w) && !w->preempted.head;
}

/* How many fibers wait to run on w, or on any worker (racy). */
unsigned int fiber_runq_len(const struct fiber_worker *w)
{
	return (w->runnext != NULL) + load(&w->rq.len) + load(&fiber_sched.global.len);
}

/* The next fiber for w, or NULL; on w's thread. */
struct fiber *fiber_runq_pick(struct fiber_worker *w)
{
	struct fiber *f;

	w->ticks++;
	if (w->runnext && (w->runnext_streak < RUNNEXT_MAX || queues_empty(w))) {
		f = w->runnext;
		w->runnext = NULL;
		w->runnext_streak++;
		return f;
	}
	w->runnext_streak = 0;
	f = queues_pop(w);
	if (!f && w->runnext) {
		f = w->runnext;
		w->runnext = NULL;
	}
	if (!f)
		f = steal(w);
	return f;
}

static void futex_wait(struct fiber_worker *w, uint32_t seen, uint64_t deadline)
{
	struct timespec ts, *tsp = NULL;

	if (deadline) {
		uint64_t now = fiber_now_ns(), left = deadline > now ? deadline - now : 0;

		ts.tv_sec = left / 1000000000ULL;
		ts.tv_nsec = left % 1000000000ULL;
		tsp = &ts;
	}
	syscall(SYS_futex, &w->rq.futex, FUTEX_WAIT_PRIVATE, seen, tsp, NULL, 0);
}

/*
 * w found nothing to run: waits until work may be there, or deadline
 * (CLOCK_MONOTONIC ns; 0: none). False when the scheduler is stopping and
 * no fiber is left.
 */
bool fiber_runq_idle(struct fiber_worker *w, uint64_t deadline)
{
	uint32_t seen = __atomic_load_n(&w->rq.futex, __ATOMIC_ACQUIRE);

	/* Set once no fiber is left. */
	if (__atomic_load_n(&fiber_sched.stopping, __ATOMIC_ACQUIRE))
		return false;
	fiber_spin_lock(&w->rq.lock);
	if (w->rq.len) {
		fiber_spin_unlock(&w->rq.lock);
		return true;
	}
	w->rq.sleeping = true;
	w->rq.woken = false;
	fiber_spin_unlock(&w->rq.lock);
	__atomic_fetch_add(&fiber_sched.nr_idle, 1, __ATOMIC_SEQ_CST);
	/* Store, then load: wake_idle() does the converse behind its fence. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);

	if (!work_elsewhere(w) && !__atomic_load_n(&fiber_sched.stopping, __ATOMIC_ACQUIRE)) {
		if (w->has_ring)
			fiber_io_wait(w, deadline);
		else
			futex_wait(w, seen, deadline);
	}

	__atomic_fetch_sub(&fiber_sched.nr_idle, 1, __ATOMIC_SEQ_CST);
	fiber_preempt_worker_wakes();
	fiber_spin_lock(&w->rq.lock);
	w->rq.sleeping = false;
	fiber_spin_unlock(&w->rq.lock);
	return true;
}

/* The scheduler stops: every waiting worker looks again. */
void fiber_runq_wake_all(void)
{
	unsigned int i;

	for (i = 0; i < fiber_sched.nr_workers; i++) {
		struct fiber_worker *w = &fiber_sched.workers[i];
		bool wake;

		fiber_spin_lock(&w->rq.lock);
		wake = claim_wake(w);
		fiber_spin_unlock(&w->rq.lock);
		if (wake)
			send_wake(w);
	}
}
