// SPDX-License-Identifier: MIT
/*
 * The scheduler: worker threads, fibers, join, sleep and timers.
 *
 * Each worker runs a loop on its own thread stack and switches to one
 * fiber at a time; a fiber switches back to that loop to yield, block,
 * join, exit or be preempted, having set w->action to say which. The loop
 * acts on it only once the fiber's stack is saved, so a fiber is never
 * made runnable elsewhere while its worker still runs on its stack: a
 * fiber that parks on a wait list keeps the list's lock across the switch
 * (w->park_lock), and the loop releases it, as Go's gopark() does.
 *
 * There is no lock every switch takes: run queues are per worker
 * (runq.c), timers are in a per-worker heap, and the one global mutex,
 * fiber_sched.lock, covers only the scheduler's start and stop and the
 * joins of threads that are not fibers. A new fiber may run on any
 * worker; from its first run on it stays on that worker, since its code
 * may keep thread-local addresses in registers. With FIBER_MIGRATE,
 * fibers that stopped in a libfiber call outside a preempt-off section
 * (a held lock among them: its owner is the thread) may move; with
 * FIBER_MIGRATE_PREEMPTED, preempted fibers too.
 *
 * Timed waits (fiber_sleep(), fiber_cond_timedwait()) put the fiber in
 * its worker's timer heap, which only that worker touches. A wait that
 * something else may end first (a signal) is settled by wait_token: the
 * timer and the waker both exchange it, and only the one that takes it
 * wakes the fiber. Until the worker has dropped the timer from its heap,
 * the fiber runs only there.
 *
 * Fibers on one worker share its thread's errno and signal mask: the
 * worker loop saves errno when a fiber stops and restores it before the
 * fiber runs again, and puts back a fiber's own signal mask (sigmask.c)
 * around its runs, so each fiber sees its own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_STACK_SIZE	(256 * 1024)
/*
 * Below each stack, more than the largest upcall frame (12 KiB on arm64,
 * where the SP moves once for all of it): an upcall that finds too little
 * stack faults there instead of writing over the next mapping.
 */
#define STACK_GUARD_SIZE	(16 * 1024)
#define DEFAULT_SLICE_NS	1000000ULL

struct fiber_sched fiber_sched = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.dev_fd = -1,
};

FIBER_TLS struct fiber_worker *fiber_tls_worker;
FIBER_TLS struct fiber_preempt_ctl *fiber_tls_ctl;

uint64_t fiber_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static enum fiber_sched_state sched_state(void)
{
	return __atomic_load_n(&fiber_sched.state, __ATOMIC_ACQUIRE);
}

static void set_sched_state(enum fiber_sched_state state)
{
	__atomic_store_n(&fiber_sched.state, state, __ATOMIC_RELEASE);
}

/* The timer heap: w->timers[0] ends first. Only w's thread touches it. */
static void timer_set(struct fiber_worker *w, unsigned int slot, struct fiber *f)
{
	w->timers[slot] = f;
	f->timer_slot = slot;
}

static void timer_sift_up(struct fiber_worker *w, unsigned int slot)
{
	struct fiber *f = w->timers[slot];

	while (slot) {
		unsigned int parent = (slot - 1) / 2;

		if (w->timers[parent]->wake_ns <= f->wake_ns)
			break;
		timer_set(w, slot, w->timers[parent]);
		slot = parent;
	}
	timer_set(w, slot, f);
}

static void timer_sift_down(struct fiber_worker *w, unsigned int slot)
{
	struct fiber *f = w->timers[slot];

	for (;;) {
		unsigned int child = 2 * slot + 1;

		if (child >= w->nr_timers)
			break;
		if (child + 1 < w->nr_timers &&
		    w->timers[child + 1]->wake_ns < w->timers[child]->wake_ns)
			child++;
		if (f->wake_ns <= w->timers[child]->wake_ns)
			break;
		timer_set(w, slot, w->timers[child]);
		slot = child;
	}
	timer_set(w, slot, f);
}

/*
 * Puts f, about to park in a timed wait ending at f->wake_ns, in the heap
 * of w, its worker (on w's thread). Returns false when out of memory.
 */
static bool timer_add(struct fiber_worker *w, struct fiber *f)
{
	if (w->nr_timers == w->timers_cap) {
		unsigned int cap = w->timers_cap ? 2 * w->timers_cap : 64;
		struct fiber **timers = realloc(w->timers, cap * sizeof(*timers));

		if (!timers)
			return false;
		w->timers = timers;
		w->timers_cap = cap;
	}
	f->wait_token = 1;
	__atomic_store_n(&f->timer_worker, (int)w->index, __ATOMIC_RELAXED);
	timer_set(w, w->nr_timers++, f);
	timer_sift_up(w, w->nr_timers - 1);
	return true;
}

static void timer_remove(struct fiber_worker *w, struct fiber *f)
{
	unsigned int slot = f->timer_slot;
	struct fiber *last = w->timers[--w->nr_timers];

	if (slot < w->nr_timers) {
		timer_set(w, slot, last);
		timer_sift_down(w, slot);
		timer_sift_up(w, last->timer_slot);
	}
	/* Dropped: from now on the fiber may run anywhere it may. */
	__atomic_store_n(&f->timer_worker, -1, __ATOMIC_RELEASE);
}

bool fiber_wait_end(struct fiber *f)
{
	return __atomic_exchange_n(&f->wait_token, 0, __ATOMIC_ACQ_REL);
}

/* Wakes the fibers whose timed waits have ended by now. */
static void timers_expire(struct fiber_worker *w, uint64_t now)
{
	while (w->nr_timers && w->timers[0]->wake_ns <= now) {
		struct fiber *f = w->timers[0];

		timer_remove(w, f);
		/* Lost: whoever ended the wait first has woken it. */
		if (fiber_wait_end(f))
			fiber_runq_push(w, f);
	}
}

/* Where the fiber stops, which decides whether it may change worker. */
enum fiber_stop {
	STOP_CALL,		/* in a libfiber call: moves with FIBER_MIGRATE */
	STOP_PREEMPTED,		/* at any instruction: FIBER_MIGRATE_PREEMPTED */
	STOP_HERE,		/* inside state tied to this worker: never moves */
};

/* Whether the fiber stopping now may resume on another worker. */
static bool may_migrate(struct fiber *f, enum fiber_stop where)
{
	unsigned int need = where == STOP_PREEMPTED ? FIBER_MIGRATE_PREEMPTED : FIBER_MIGRATE;

	return where != STOP_HERE && (fiber_sched.flags & need) && !f->preempt_off;
}

/* Back to the worker's loop; returns when the fiber runs again. */
static void switch_to_worker(struct fiber_worker *w, enum fiber_action action,
			     enum fiber_stop where)
{
	struct fiber *f = w->current;

	w->action = action;
	f->preempt_off = w->ctl.preempt_off;
	f->pinned = may_migrate(f, where) ? -1 : (int)w->index;
	fiber_switch(&f->sp, w->sched_sp);
}

/*
 * Called on the fiber's stack by the upcall handler, or when a preemption
 * that came due during a preempt-off section is taken at its end.
 */
void fiber_preempted(struct fiber_worker *w)
{
	w->current->stats.preemptions++;
	switch_to_worker(w, FIBER_ACT_PREEMPTED, STOP_PREEMPTED);
}

/*
 * A yield that keeps the fiber on its worker, whatever the program
 * allows: for waits inside calls the program believes are plain libc ones
 * (an interposed lock), across which the compiler may keep thread-local
 * addresses, and for an I/O call waiting for room in its worker's ring.
 */
void fiber_yield_here(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (w && w->current)
		switch_to_worker(w, FIBER_ACT_YIELD, STOP_HERE);
}

/*
 * Parks the calling fiber until fiber_wake() or fiber_runq_push(). The
 * worker releases unlock (if not NULL) once the fiber is switched out.
 */
void fiber_park(struct fiber_worker *w, uint32_t *unlock)
{
	w->current->state = FIBER_BLOCKED;
	w->park_lock = unlock;
	switch_to_worker(w, FIBER_ACT_BLOCK, STOP_CALL);
}

/*
 * Parks the calling fiber in a timed wait until fiber_wake() or
 * deadline_ns, whichever comes first (fiber_wait_end() says which).
 * Returns false, without parking, when out of memory.
 */
bool fiber_park_until(struct fiber_worker *w, uint64_t deadline_ns, uint32_t *unlock)
{
	w->current->wake_ns = deadline_ns;
	if (!timer_add(w, w->current))
		return false;
	fiber_park(w, unlock);
	return true;
}

/*
 * Joined fibers, stacks included, are kept for the next spawns: mapping
 * and unmapping a stack per fiber takes the process's mmap lock and, with
 * several workers, shoots down the other CPUs' TLBs. A fiber released on
 * a worker (joined by a fiber, or detached) goes to that worker's cache
 * (no lock), others to a global one.
 */
#define FIBER_CACHE_MAX		64

static struct {
	uint32_t lock;
	struct fiber *head;
	unsigned int len;
} fiber_cache;

static void free_fiber(struct fiber *f)
{
	struct fiber_worker *w = fiber_tls_worker;

	fiber_registry_remove(f);
	if (w && w->nr_cached < FIBER_CACHE_MAX) {
		f->next = w->cache;
		w->cache = f;
		w->nr_cached++;
		return;
	}
	fiber_spin_lock(&fiber_cache.lock);
	if (fiber_cache.len < FIBER_CACHE_MAX) {
		f->next = fiber_cache.head;
		fiber_cache.head = f;
		fiber_cache.len++;
		f = NULL;
	}
	fiber_spin_unlock(&fiber_cache.lock);
	if (f)
		fiber_registry_unmap(f);
}

/* A cached fiber whose stack has the size in use, or NULL. */
static struct fiber *cached_fiber(size_t map_size)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *f = NULL;

	if (w && w->current && w->cache) {
		f = w->cache;
		w->cache = f->next;
		w->nr_cached--;
	} else if (__atomic_load_n(&fiber_cache.len, __ATOMIC_RELAXED)) {
		fiber_spin_lock(&fiber_cache.lock);
		f = fiber_cache.head;
		if (f) {
			fiber_cache.head = f->next;
			fiber_cache.len--;
		}
		fiber_spin_unlock(&fiber_cache.lock);
	}
	if (f && f->map_size != map_size) {
		fiber_registry_unmap(f);
		f = NULL;
	}
	return f;
}

static void drain_cache(struct fiber **head)
{
	while (*head) {
		struct fiber *f = *head;

		*head = f->next;
		fiber_registry_unmap(f);
	}
}

static void broadcast_done(void)
{
	sched_lock();
	pthread_cond_broadcast(&fiber_sched.done);
	sched_unlock();
}

/*
 * Counts a fiber in or out on the caller's worker, or in the count of
 * other threads. The store and the read of the state that follows are
 * ordered against fiber_sched_stop()'s store of the state and its reads
 * of the counts, so either the stop sees the change or the caller sees
 * the stop (and then wakes it).
 */
static void count_live(struct fiber_worker *w, long delta)
{
	if (w)
		__atomic_store_n(&w->live, w->live + delta, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_add(&fiber_sched.live_outside, delta, __ATOMIC_SEQ_CST);
}

static long live_fibers(void)
{
	long n = __atomic_load_n(&fiber_sched.live_outside, __ATOMIC_SEQ_CST);
	unsigned int i;

	for (i = 0; i < fiber_sched.nr_workers; i++)
		n += __atomic_load_n(&fiber_sched.workers[i].live, __ATOMIC_SEQ_CST);
	return n;
}

/*
 * f returned, on w. After the exchange, f may be gone: its joiner frees
 * it, or this worker does when it was detached.
 */
static void fiber_done(struct fiber_worker *w, struct fiber *f)
{
	struct fiber *joiner;

	f->state = FIBER_DONE;
	count_live(w, -1);
	joiner = __atomic_exchange_n(&f->joiner, FIBER_JOIN_DONE, __ATOMIC_ACQ_REL);
	if (joiner == FIBER_JOIN_DETACHED)
		free_fiber(f);
	else if (joiner && joiner != FIBER_JOIN_THREAD)
		fiber_wake(joiner);
	if (joiner == FIBER_JOIN_THREAD || sched_state() == FIBER_SCHED_STOPPING)
		broadcast_done();
}

/* Submits and reaps w's ring; the next time is after one more pass. */
static void reap(struct fiber_worker *w)
{
	fiber_io_poll(w);
	w->pass_left = w->rq.len + (w->runnext != NULL) + 1;
}

/* Acts on what the fiber that just stopped asked for. */
static void after_switch(struct fiber_worker *w, struct fiber *f)
{
	struct fiber *none = NULL;

	switch (w->action) {
	case FIBER_ACT_PREEMPTED:
		if (f->pinned >= 0) {
			/* Its turn comes in preempted_turn(). */
			f->state = FIBER_RUNNABLE;
			fiber_queue_push(&w->preempted, f);
		} else {
			/* The global queue is FIFO: what completed goes first. */
			if (w->reap_first)
				reap(w);
			fiber_global_push(f);
		}
		w->reap_first = false;
		break;
	case FIBER_ACT_YIELD:
		/* A fiber that may move waits where every worker looks. */
		if (f->pinned < 0)
			fiber_global_push(f);
		else
			fiber_runq_push(w, f);
		break;
	case FIBER_ACT_BLOCK:
		if (w->park_lock)
			fiber_spin_unlock(w->park_lock);
		w->park_lock = NULL;
		break;
	case FIBER_ACT_JOIN:
		/* Fails only when the target has returned meanwhile. */
		if (!__atomic_compare_exchange_n(&w->join_target->joiner, &none, f, false,
						 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			fiber_wake(f);
		break;
	case FIBER_ACT_EXIT:
		fiber_done(w, f);
		break;
	}
}

/*
 * A fiber preempted on w, if its turn has come, else NULL. A fiber that
 * ran its slice out waits for those that became runnable meanwhile (an
 * I/O completion's, a lock's, a timer's), as a scheduler favours tasks
 * that slept over one that used its time: before each preempted fiber
 * the ring is reaped once and the fibers then runnable get their turn
 * first, and what they queued on the ring is submitted before it takes
 * the CPU for a slice. Once per preempted fiber: a stream of wake-ups
 * delays it by one round at most, never starves it.
 */
static struct fiber *preempted_turn(struct fiber_worker *w)
{
	if (!w->preempted.head || (w->favoured && fiber_runq_len(w)))
		return NULL;
	if (w->has_ring)
		reap(w);
	if (!w->favour_reaped) {
		w->favour_reaped = true;
		w->favoured = fiber_runq_len(w);
		if (w->favoured)
			return NULL;
	}
	w->favour_reaped = false;
	w->favoured = 0;
	return fiber_queue_pop(&w->preempted);
}

/*
 * The next fiber for w, or NULL. The ring is submitted and reaped once
 * every fiber that was runnable at the last submission has had its turn.
 */
static struct fiber *pick_next(struct fiber_worker *w)
{
	struct fiber *f;

	if (w->nr_timers)
		timers_expire(w, fiber_now_ns());
	if (w->has_ring && (!w->pass_left || !--w->pass_left))
		reap(w);
	f = preempted_turn(w);
	if (f)
		return f;
	f = fiber_runq_pick(w);
	if (f && w->favoured)
		w->favoured--;
	/* The fibers favoured went to other workers meanwhile. */
	if (!f && w->preempted.head) {
		w->favour_reaped = false;
		w->favoured = 0;
		return fiber_queue_pop(&w->preempted);
	}
	if (!f && w->has_ring && io_uring_cq_ready(&w->ring)) {
		w->pass_left = 0;
		return pick_next(w);
	}
	return f;
}

static void worker_loop(struct fiber_worker *w)
{
	struct fiber *f;
	uint64_t now;

	w->run_start = fiber_arch_ticks();

	for (;;) {
		f = pick_next(w);
		if (!f) {
			if (!fiber_runq_idle(w, w->nr_timers ? w->timers[0]->wake_ns : 0))
				break;
			w->pass_left = 0;
			w->run_start = fiber_arch_ticks();
			continue;
		}
		/* Woken before its time: its timer is in this worker's heap. */
		if (__atomic_load_n(&f->timer_worker, __ATOMIC_ACQUIRE) >= 0)
			timer_remove(w, f);

		f->state = FIBER_RUNNING;
		w->current = f;
		w->switches++;
		f->stats.runs++;
		w->ctl.preempt_off = f->preempt_off;
		w->ctl.pending = 0;
		fiber_preempt_slice_begins(w);
		if (f->own_sigmask)
			fiber_sigmask_apply(&f->sigmask);
		errno = f->saved_errno;
		fiber_switch(&w->sched_sp, f->sp);
		/* One read a switch: the loop's own time goes to the next fiber. */
		now = fiber_arch_ticks();
		f->run_ticks += now - w->run_start;
		w->run_start = now;
		f->saved_errno = errno;
		if (f->own_sigmask)
			fiber_sigmask_apply(&w->sigmask);
		w->current = NULL;
		after_switch(w, f);
	}
}

static void *worker_main(void *arg)
{
	struct fiber_worker *w = arg;
	int err;

	fiber_tls_worker = w;
	fiber_tls_ctl = &w->ctl;
	w->tid = gettid();
	err = fiber_io_worker_start(w, fiber_sched.ring_entries);
	if (!err) {
		err = fiber_preempt_worker_start(w);
		if (err)
			fiber_io_worker_stop(w);
	}

	sched_lock();
	w->init_error = err;
	fiber_sched.started_workers++;
	pthread_cond_broadcast(&fiber_sched.done);
	sched_unlock();
	if (err)
		return NULL;

	worker_loop(w);
	fiber_preempt_worker_stop(w);
	fiber_io_worker_stop(w);
	free(w->timers);
	drain_cache(&w->cache);
	fiber_tls_worker = NULL;
	fiber_tls_ctl = NULL;
	return NULL;
}

/* Called by fiber_entry when the fiber's function returned ret. */
void fiber_exit(struct fiber *f, void *ret)
{
	struct fiber_worker *w = fiber_tls_worker;

	/* In a child of fork(): the process's only thread is done. */
	if (!w)
		exit(0);
	f->ret = ret;
	switch_to_worker(w, FIBER_ACT_EXIT, STOP_CALL);
	__builtin_unreachable();
}

static void stop_workers(unsigned int n)
{
	unsigned int i;

	fiber_stall_stop();
	fiber_preempt_sched_stopping();
	__atomic_store_n(&fiber_sched.stopping, true, __ATOMIC_SEQ_CST);
	fiber_runq_wake_all();
	for (i = 0; i < n; i++)
		pthread_join(fiber_sched.workers[i].thread, NULL);
}

static void reset_sched(void)
{
	fiber_preempt_teardown();
	fiber_spin_lock(&fiber_cache.lock);
	drain_cache(&fiber_cache.head);
	fiber_cache.len = 0;
	fiber_spin_unlock(&fiber_cache.lock);
	fiber_registry_workers_gone();
	sched_lock();
	free(fiber_sched.workers);
	fiber_sched.workers = NULL;
	fiber_sched.nr_workers = 0;
	/* Balanced by the workers' counts, which go with them. */
	fiber_sched.live_outside = 0;
	fiber_sched.started_workers = 0;
	fiber_sched.stopping = false;
	set_sched_state(FIBER_SCHED_STOPPED);
	sched_unlock();
}

/*
 * fork(): the child has one thread, the caller's; the workers and every
 * other fiber stay in the parent. The child's scheduler is stopped (its
 * lock and conditions new, since other threads may have held them), so
 * libfiber calls there act as outside a fiber or return -EINVAL, and the
 * child may exec, exit, or start a scheduler of its own.
 */
static void before_fork(void)
{
	sched_lock();
}

static void after_fork_parent(void)
{
	sched_unlock();
}

static void after_fork_child(void)
{
	unsigned int i;

	pthread_mutex_init(&fiber_sched.lock, NULL);
	pthread_cond_init(&fiber_sched.done, NULL);
	fiber_registry_forked();
	if (fiber_sched.state == FIBER_SCHED_STOPPED)
		return;
	/* The rings and eventfds are the parent's workers'. */
	for (i = 0; i < fiber_sched.nr_workers; i++)
		fiber_io_worker_stop(&fiber_sched.workers[i]);
	/* The parent's memory stays: the caller may be running on a fiber's stack. */
	fiber_sched.workers = NULL;
	fiber_sched.nr_workers = 0;
	fiber_sched.started_workers = 0;
	fiber_sched.nr_idle = 0;
	fiber_sched.live_outside = 0;
	memset(&fiber_sched.global, 0, sizeof(fiber_sched.global));
	fiber_sched.stopping = false;
	fiber_sched.monitor_running = false;
	fiber_sched.stall_running = false;
	set_sched_state(FIBER_SCHED_STOPPED);
	if (fiber_sched.dev_fd >= 0) {
		close(fiber_sched.dev_fd);
		fiber_sched.dev_fd = -1;
	}
	fiber_tls_worker = NULL;
	fiber_tls_ctl = NULL;
}

static int start_workers(void)
{
	unsigned int i, n = fiber_sched.nr_workers;
	int err = 0;

	/* Set up before any starts: a worker may look at the others at once. */
	for (i = 0; i < n; i++) {
		struct fiber_worker *w = &fiber_sched.workers[i];

		w->index = i;
		w->ctl.size = sizeof(w->ctl);
		w->wake_fd = -1;
	}
	for (i = 0; i < n; i++) {
		err = -pthread_create(&fiber_sched.workers[i].thread, NULL, worker_main,
				      &fiber_sched.workers[i]);
		if (err)
			break;
	}
	n = i;
	sched_lock();
	while (fiber_sched.started_workers < n)
		pthread_cond_wait(&fiber_sched.done, &fiber_sched.lock);
	for (i = 0; i < n && !err; i++)
		err = fiber_sched.workers[i].init_error;
	sched_unlock();
	if (err)
		stop_workers(n);
	return err;
}

/*
 * AUTO means the module when it takes every worker. One it refuses (the
 * user's RLIMIT_MEMLOCK is used up by pinned control pages, or the
 * module's max_registrations are taken) leaves preemption by signals,
 * as a machine without the module would.
 */
static int restart_workers_with_signals(void)
{
	int err;

	fiber_preempt_teardown();
	fiber_sched.mode = FIBER_PREEMPT_SIGNAL;
	fiber_sched.stopping = false;
	fiber_sched.started_workers = 0;
	memset(fiber_sched.workers, 0, fiber_sched.nr_workers * sizeof(struct fiber_worker));
	err = fiber_preempt_setup(&fiber_sched.mode);
	return err ? err : start_workers();
}

int fiber_sched_start(const struct fiber_config *cfg)
{
	struct fiber_config c = { 0 };
	long page = sysconf(_SC_PAGESIZE);
	int err;

	if (cfg)
		c = *cfg;
	if (c.mode > FIBER_PREEMPT_OFF)
		return -EINVAL;
	if (c.flags & ~(FIBER_MIGRATE | FIBER_MIGRATE_PREEMPTED))
		return -EINVAL;
	if (c.flags & FIBER_MIGRATE_PREEMPTED)
		c.flags |= FIBER_MIGRATE;
	if (c.slice_ns && (c.slice_ns < FIBER_PREEMPT_MIN_SLICE_NS ||
			   c.slice_ns > FIBER_PREEMPT_MAX_SLICE_NS))
		return -EINVAL;
	if (c.workers > 1024 || !fiber_io_ring_entries(c.ring_entries))
		return -EINVAL;

	sched_lock();
	if (fiber_sched.state != FIBER_SCHED_STOPPED) {
		sched_unlock();
		return -EALREADY;
	}
	set_sched_state(FIBER_SCHED_STARTING);
	if (!fiber_sched.fork_handlers) {
		fiber_sched.fork_handlers = true;
		pthread_atfork(before_fork, after_fork_parent, after_fork_child);
	}
	sched_unlock();

	fiber_arch_init();
	fiber_sched.nr_workers = c.workers ? c.workers : 1;
	fiber_sched.ring_entries = fiber_io_ring_entries(c.ring_entries);
	fiber_sched.slice_ns = c.slice_ns ? c.slice_ns : DEFAULT_SLICE_NS;
	fiber_sched.stack_size = c.stack_size ? c.stack_size : DEFAULT_STACK_SIZE;
	fiber_sched.stack_size = (fiber_sched.stack_size + page - 1) & ~(size_t)(page - 1);
	fiber_sched.mode = c.mode;
	fiber_sched.flags = c.flags;
	fiber_sched.workers = aligned_alloc(_Alignof(struct fiber_worker),
					    fiber_sched.nr_workers * sizeof(struct fiber_worker));
	if (!fiber_sched.workers) {
		err = -ENOMEM;
		goto fail;
	}
	memset(fiber_sched.workers, 0, fiber_sched.nr_workers * sizeof(struct fiber_worker));

	err = fiber_stall_setup();
	if (!err)
		err = fiber_preempt_setup(&fiber_sched.mode);
	if (!err)
		err = fiber_dump_setup();
	if (err)
		goto fail;
	err = start_workers();
	if ((err == -ENOMEM || err == -ENOSPC) && c.mode == FIBER_PREEMPT_AUTO &&
	    fiber_sched.mode == FIBER_PREEMPT_KMOD)
		err = restart_workers_with_signals();
	if (err)
		goto fail;
	err = fiber_preempt_sched_started();
	if (!err)
		err = fiber_stall_start();
	if (err) {
		stop_workers(fiber_sched.nr_workers);
		goto fail;
	}
	fiber_registry_workers_ready();
	sched_lock();
	set_sched_state(FIBER_SCHED_RUNNING);
	sched_unlock();
	return 0;
fail:
	reset_sched();
	return err;
}

int fiber_sched_stop(void)
{
	if (fiber_tls_worker)
		return -EDEADLK;
	sched_lock();
	if (fiber_sched.state != FIBER_SCHED_RUNNING) {
		int err = fiber_sched.state == FIBER_SCHED_STOPPING ? -EALREADY : -EINVAL;

		sched_unlock();
		return err;
	}
	set_sched_state(FIBER_SCHED_STOPPING);
	while (live_fibers())
		pthread_cond_wait(&fiber_sched.done, &fiber_sched.lock);
	sched_unlock();
	stop_workers(fiber_sched.nr_workers);
	reset_sched();
	return 0;
}

enum fiber_preempt_mode fiber_sched_mode(void)
{
	return fiber_sched.mode;
}

/*
 * Once stopping, only fibers (which keep it from stopping) may spawn.
 * Checked before the stack is made (its size is fixed while the scheduler
 * runs) and again once the fiber counts as live: fiber_sched_stop() sets
 * the state before it reads the count, so either it waits for this fiber
 * or this spawn sees it stopping.
 */
static bool may_spawn(void)
{
	enum fiber_sched_state state = __atomic_load_n(&fiber_sched.state, __ATOMIC_SEQ_CST);

	return state == FIBER_SCHED_RUNNING || (state == FIBER_SCHED_STOPPING && fiber_self());
}

int fiber_spawn(fiber_t **fiber, void *(*fn)(void *), void *arg)
{
	long page = sysconf(_SC_PAGESIZE);
	struct fiber_worker *w;
	struct fiber *f;
	size_t size, guard;

	if (!fn || !fiber || !may_spawn())
		return -EINVAL;
	guard = (STACK_GUARD_SIZE + page - 1) & ~(size_t)(page - 1);
	size = fiber_sched.stack_size + guard;
	f = cached_fiber(size);
	if (f) {
		void *map = f->map;
		struct fiber *all_next = f->all_next;

		/* A dump that still holds it may follow its link meanwhile. */
		memset(f, 0, sizeof(*f));
		f->map = map;
		f->all_next = all_next;
	} else {
		f = calloc(1, sizeof(*f));
		if (!f)
			return -ENOMEM;
		f->map = mmap(NULL, size, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
		if (f->map == MAP_FAILED) {
			free(f);
			return -ENOMEM;
		}
		/* The guard: an overflow faults instead of corrupting memory. */
		if (mprotect(f->map, guard, PROT_NONE)) {
			int err = -errno;

			munmap(f->map, size);
			free(f);
			return err;
		}
	}
	f->map_size = size;
	f->stack_lo = (uintptr_t)f->map + guard;
	f->stack_hi = (uintptr_t)f->map + size;
	f->fn = fn;
	f->arg = arg;
	f->pinned = -1;
	f->sp = fiber_arch_init_stack((char *)f->map + size, f);

	f->timer_worker = -1;
	w = fiber_self() ? fiber_tls_worker : NULL;
	count_live(w, 1);
	if (!may_spawn()) {
		count_live(w, -1);
		broadcast_done();
		free_fiber(f);
		return -EINVAL;
	}
	fiber_registry_add(f);
	*fiber = f;
	/*
	 * A fiber's spawn runs next on its worker, as in Go: a spawner that
	 * joins at once then runs it without a thief taking it meanwhile
	 * (and both workers waking each other); the fiber it displaces there
	 * goes to the shared queue, where idle workers steal. Other threads'
	 * spawns go to the global queue.
	 */
	if (w)
		fiber_wake(f);
	else
		fiber_global_push(f);
	return 0;
}

int fiber_join(fiber_t *f, void **ret)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (!f)
		return -EINVAL;
	if (w && w->current == f)
		return -EDEADLK;
	if (__atomic_load_n(&f->joiner, __ATOMIC_ACQUIRE) == FIBER_JOIN_DONE) {
		/* Returned already. */
	} else if (w && w->current) {
		/* The worker registers the join once this fiber is switched out. */
		struct fiber *self = w->current;

		self->state = FIBER_BLOCKED;
		w->join_target = f;
		fiber_wait_begins(self, FIBER_WAIT_JOIN, f);
		switch_to_worker(w, FIBER_ACT_JOIN, STOP_CALL);
		/* It may go on on another worker. */
		fiber_wait_ends(self);
	} else {
		struct fiber *none = NULL;

		sched_lock();
		if (__atomic_compare_exchange_n(&f->joiner, &none, FIBER_JOIN_THREAD, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			while (__atomic_load_n(&f->joiner, __ATOMIC_ACQUIRE) != FIBER_JOIN_DONE)
				pthread_cond_wait(&fiber_sched.done, &fiber_sched.lock);
		sched_unlock();
	}
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (ret)
		*ret = f->ret;
	free_fiber(f);
	return 0;
}

int fiber_detach(fiber_t *f)
{
	struct fiber *none = NULL;

	if (!f)
		return -EINVAL;
	/* Fails only when f has returned already: nobody else will free it. */
	if (!__atomic_compare_exchange_n(&f->joiner, &none, FIBER_JOIN_DETACHED, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		free_fiber(f);
	return 0;
}

int fiber_stats(fiber_t *f, struct fiber_stats *st)
{
	struct fiber_worker *w = fiber_tls_worker;
	uint64_t ticks;

	if (!f || !st)
		return -EINVAL;
	*st = f->stats;
	ticks = __atomic_load_n(&f->run_ticks, __ATOMIC_RELAXED);
	/* The caller's own run under way counts too. */
	if (w && w->current == f)
		ticks += fiber_arch_ticks() - w->run_start;
	st->run_ns = fiber_ticks_to_ns(ticks);
	return 0;
}

void fiber_yield(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (w && w->current)
		switch_to_worker(w, FIBER_ACT_YIELD, STOP_CALL);
}

int fiber_sleep(uint64_t ns)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *self;
	bool parked;

	if (!w || !w->current) {
		struct timespec ts = { ns / 1000000000ULL, ns % 1000000000ULL };

		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		return 0;
	}
	self = w->current;
	fiber_wait_begins(self, FIBER_WAIT_SLEEP, NULL);
	parked = fiber_park_until(w, fiber_now_ns() + ns, NULL);
	/* It may go on on another worker. */
	fiber_wait_ends(self);
	return parked ? 0 : -ENOMEM;
}

fiber_t *fiber_self(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	return w ? w->current : NULL;
}

void fiber_preempt_disable(void)
{
	struct fiber_preempt_ctl *ctl = fiber_tls_ctl;

	if (!ctl)
		return;
	ctl->preempt_off++;
	/* The count must be visible to our own interrupt before the section. */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

void fiber_preempt_enable(void)
{
	struct fiber_preempt_ctl *ctl = fiber_tls_ctl;

	if (!ctl || !ctl->preempt_off)
		return;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	/*
	 * A preemption that came due is taken as one: the fiber stays on this
	 * worker, since the section's code may hold thread-local addresses.
	 */
	if (--ctl->preempt_off == 0 && ctl->pending && fiber_tls_worker->current)
		fiber_preempted(fiber_tls_worker);
}

/* Lock held. Whether the workers exist (and fiber_sched.workers with them). */
static bool workers_exist(void)
{
	enum fiber_sched_state state = sched_state();

	return state == FIBER_SCHED_RUNNING || state == FIBER_SCHED_STOPPING;
}

unsigned int fiber_worker_count(void)
{
	unsigned int n;

	sched_lock();
	n = workers_exist() ? fiber_sched.nr_workers : 0;
	sched_unlock();
	return n;
}

int fiber_worker_index(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	return w ? (int)w->index : -1;
}

int fiber_worker_stats(unsigned int worker, struct fiber_worker_stats *st)
{
	const struct fiber_preempt_ctl *ctl;

	if (!st)
		return -EINVAL;
	sched_lock();
	if (!workers_exist() || worker >= fiber_sched.nr_workers) {
		sched_unlock();
		return -EINVAL;
	}
	ctl = &fiber_sched.workers[worker].ctl;
	st->switches = fiber_sched.workers[worker].switches;
	st->preemptions = ctl->delivered - fiber_sched.workers[worker].deferred_stack;
	st->deferred_stack = fiber_sched.workers[worker].deferred_stack;
	st->fired = ctl->fired;
	st->deferred_off = ctl->deferred_off;
	st->deferred_pc = ctl->deferred_pc;
	st->deferred_signal = ctl->deferred_signal;
	st->deferred_kernel = ctl->deferred_kernel;
	st->deferred_upcall = ctl->deferred_upcall;
	st->deferred_rseq = ctl->deferred_rseq;
	st->deferred_vector = ctl->deferred_vector;
	st->ring_entries = fiber_sched.workers[worker].ring_entries;
	st->io_ops = fiber_sched.workers[worker].io_ops;
	st->io_submits = fiber_sched.workers[worker].io_submits;
	st->steals = fiber_sched.workers[worker].steals;
	st->wakeups = __atomic_load_n(&fiber_sched.workers[worker].wakeups, __ATOMIC_RELAXED);
	sched_unlock();
	return 0;
}

const char *fiber_preempt_mode_name(enum fiber_preempt_mode mode)
{
	static const char *const names[] = {
		[FIBER_PREEMPT_AUTO] = "auto",
		[FIBER_PREEMPT_KMOD] = "kmod",
		[FIBER_PREEMPT_SIGNAL] = "signal",
		[FIBER_PREEMPT_OFF] = "off",
	};

	if ((unsigned int)mode >= sizeof(names) / sizeof(names[0]))
		return NULL;
	return names[mode];
}

int fiber_preempt_mode_parse(const char *name)
{
	int mode;

	for (mode = FIBER_PREEMPT_AUTO; mode <= FIBER_PREEMPT_OFF; mode++)
		if (name && !strcmp(name, fiber_preempt_mode_name(mode)))
			return mode;
	return -EINVAL;
}
