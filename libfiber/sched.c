// SPDX-License-Identifier: MIT
/*
 * The scheduler: worker threads, fibers, run queues, join and sleep.
 *
 * Each worker runs a loop on its own thread stack and switches to one
 * fiber at a time; a fiber switches back to that loop to yield, block,
 * exit or be preempted, having set w->action to say which. The loop acts
 * on it only once the fiber's stack is saved, so a fiber is never made
 * runnable elsewhere while its worker is still running on its stack.
 *
 * One mutex guards the queues. A new fiber waits in the shared run queue
 * for any worker; from its first run on it goes to that worker's own
 * queue, since its code may keep thread-local addresses in registers.
 * With FIBER_MIGRATE, fibers that stopped in a libfiber call outside a
 * preempt-off section (a held lock among them: its owner is the thread)
 * go back to the shared queue; with FIBER_MIGRATE_PREEMPTED, preempted
 * fibers too.
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
	.idle = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.dev_fd = -1,
};

FIBER_TLS struct fiber_worker *fiber_tls_worker;
FIBER_TLS struct fiber_preempt_ctl *fiber_tls_ctl;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void queue_push(struct fiber_queue *q, struct fiber *f)
{
	f->next = NULL;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
}

static struct fiber *queue_pop(struct fiber_queue *q)
{
	struct fiber *f = q->head;

	if (f) {
		q->head = f->next;
		if (!q->head)
			q->tail = NULL;
	}
	return f;
}

/*
 * Lock held. Wakes w if it waits for work, or, with w NULL, one worker
 * that does. Workers with a ring wait in it (an eventfd write, once per
 * wait), the others on the idle condition.
 */
static void wake_worker(struct fiber_worker *w)
{
	unsigned int i;

	if (w && w->has_ring) {
		if (w->io_sleeping && !w->io_woken)
			fiber_io_wake(w);
		return;
	}
	if (!w) {
		for (i = 0; i < fiber_sched.nr_workers; i++) {
			struct fiber_worker *x = &fiber_sched.workers[i];

			if (x->io_sleeping && !x->io_woken) {
				fiber_io_wake(x);
				return;
			}
		}
	}
	if (fiber_sched.idle_workers)
		pthread_cond_broadcast(&fiber_sched.idle);
}

/* Lock held. Makes f runnable where it may run. */
static void make_runnable(struct fiber *f)
{
	f->state = FIBER_RUNNABLE;
	f->ticket = ++fiber_sched.tickets;
	if (f->pinned >= 0) {
		queue_push(&fiber_sched.workers[f->pinned].pinned, f);
		wake_worker(&fiber_sched.workers[f->pinned]);
		return;
	}
	queue_push(&fiber_sched.runq, f);
	wake_worker(NULL);
}

void fiber_make_runnable(struct fiber *f)
{
	make_runnable(f);
}

/* Lock held. Wakes the sleepers whose time has come. */
static void wake_sleepers(uint64_t now)
{
	while (fiber_sched.sleepers && fiber_sched.sleepers->wake_ns <= now) {
		struct fiber *f = fiber_sched.sleepers;

		fiber_sched.sleepers = f->next;
		make_runnable(f);
	}
}

/* Whether the fiber stopping now may resume on another worker. */
static bool may_migrate(struct fiber *f, bool preempted)
{
	unsigned int need = preempted ? FIBER_MIGRATE_PREEMPTED : FIBER_MIGRATE;

	return (fiber_sched.flags & need) && !f->preempt_off;
}

/*
 * Back to the worker's loop; returns when the fiber runs again. preempted:
 * the fiber stops at an arbitrary instruction of its own code, or inside a
 * call it does not know is libfiber's, not in a libfiber call.
 */
static void switch_to_worker(struct fiber_worker *w, enum fiber_action action,
			     bool preempted)
{
	struct fiber *f = w->current;

	w->action = action;
	f->preempt_off = w->ctl.preempt_off;
	f->pinned = may_migrate(f, preempted) ? -1 : (int)w->index;
	fiber_switch(&f->sp, w->sched_sp);
}

/*
 * Called on the fiber's stack by the upcall handler, or when a preemption
 * that came due during a preempt-off section is taken at its end.
 */
void fiber_preempted(struct fiber_worker *w)
{
	w->current->stats.preemptions++;
	switch_to_worker(w, FIBER_ACT_YIELD, true);
}

/*
 * A yield that keeps the fiber on its worker: for waits inside calls the
 * program believes are plain libc ones (an interposed lock), across which
 * the compiler may keep thread-local addresses.
 */
void fiber_yield_here(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (w && w->current)
		switch_to_worker(w, FIBER_ACT_YIELD, true);
}

/* Parks the calling fiber until fiber_make_runnable(); lock not held. */
void fiber_park(struct fiber_worker *w)
{
	sched_lock();
	w->current->state = FIBER_BLOCKED;
	switch_to_worker(w, FIBER_ACT_BLOCK, false);
}

static void free_fiber(struct fiber *f)
{
	munmap(f->map, f->map_size);
	free(f);
}

/* Lock held. Acts on what the fiber that just stopped asked for. */
static void after_switch(struct fiber_worker *w, struct fiber *f)
{
	switch (w->action) {
	case FIBER_ACT_YIELD:
		make_runnable(f);
		break;
	case FIBER_ACT_BLOCK:
		break;
	case FIBER_ACT_EXIT:
		f->state = FIBER_DONE;
		if (f->joiner)
			make_runnable(f->joiner);
		fiber_sched.live--;
		pthread_cond_broadcast(&fiber_sched.done);
		break;
	}
}

/*
 * Lock held. The next fiber for w, or NULL: whichever of the worker's own
 * queue and the shared one has waited longer, so a preempted fiber goes
 * to the back of the line like any other.
 */
static struct fiber *pick_next(struct fiber_worker *w)
{
	struct fiber *mine, *shared;

	if (w->has_ring)
		fiber_io_poll(w);
	if (fiber_sched.sleepers)
		wake_sleepers(now_ns());
	mine = w->pinned.head;
	shared = fiber_sched.runq.head;
	if (mine && (!shared || mine->ticket < shared->ticket))
		return queue_pop(&w->pinned);
	return queue_pop(&fiber_sched.runq);
}

/* Lock held. Waits for work; false when the scheduler is stopping. */
static bool wait_for_work(struct fiber_worker *w)
{
	struct timespec ts;

	if (fiber_sched.stopping && !fiber_sched.live)
		return false;
	if (w->has_ring) {
		fiber_io_wait(w, fiber_sched.sleepers ? fiber_sched.sleepers->wake_ns : 0);
		return true;
	}
	fiber_sched.idle_workers++;
	if (fiber_sched.sleepers) {
		uint64_t wake = fiber_sched.sleepers->wake_ns;

		ts.tv_sec = wake / 1000000000ULL;
		ts.tv_nsec = wake % 1000000000ULL;
		pthread_cond_clockwait(&fiber_sched.idle, &fiber_sched.lock,
				       CLOCK_MONOTONIC, &ts);
	} else {
		pthread_cond_wait(&fiber_sched.idle, &fiber_sched.lock);
	}
	fiber_sched.idle_workers--;
	return true;
}

static void worker_loop(struct fiber_worker *w)
{
	struct fiber *f;

	sched_lock();
	for (;;) {
		f = pick_next(w);
		if (!f) {
			if (!wait_for_work(w))
				break;
			continue;
		}
		sched_unlock();

		f->state = FIBER_RUNNING;
		w->current = f;
		w->switches++;
		f->stats.runs++;
		w->ctl.preempt_off = f->preempt_off;
		w->ctl.pending = 0;
		/* A plain store: only this thread and its own interrupts look. */
		w->ctl.switch_count++;
		if (f->own_sigmask)
			fiber_sigmask_apply(&f->sigmask);
		errno = f->saved_errno;
		fiber_switch(&w->sched_sp, f->sp);
		f->saved_errno = errno;
		if (f->own_sigmask)
			fiber_sigmask_apply(&w->sigmask);
		w->current = NULL;

		if (w->action != FIBER_ACT_BLOCK && w->action != FIBER_ACT_EXIT)
			sched_lock();
		after_switch(w, f);
	}
	sched_unlock();
}

static void *worker_main(void *arg)
{
	struct fiber_worker *w = arg;
	int err;

	fiber_tls_worker = w;
	fiber_tls_ctl = &w->ctl;
	w->tid = gettid();
	err = fiber_io_worker_start(w, fiber_sched.ring_entries);
	if (!err)
		err = fiber_preempt_worker_start(w);

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
	sched_lock();
	switch_to_worker(w, FIBER_ACT_EXIT, false);
	__builtin_unreachable();
}

static void stop_workers(unsigned int n)
{
	unsigned int i;

	fiber_preempt_sched_stopping();
	sched_lock();
	fiber_sched.stopping = true;
	pthread_cond_broadcast(&fiber_sched.idle);
	for (i = 0; i < n; i++)
		if (fiber_sched.workers[i].io_sleeping)
			fiber_io_wake(&fiber_sched.workers[i]);
	sched_unlock();
	for (i = 0; i < n; i++)
		pthread_join(fiber_sched.workers[i].thread, NULL);
}

static void reset_sched(void)
{
	fiber_preempt_teardown();
	sched_lock();
	free(fiber_sched.workers);
	fiber_sched.workers = NULL;
	fiber_sched.nr_workers = 0;
	fiber_sched.started_workers = 0;
	fiber_sched.stopping = false;
	fiber_sched.state = FIBER_SCHED_STOPPED;
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
	pthread_cond_init(&fiber_sched.idle, NULL);
	pthread_cond_init(&fiber_sched.done, NULL);
	if (fiber_sched.state == FIBER_SCHED_STOPPED)
		return;
	/* The rings and eventfds are the parent's workers'. */
	for (i = 0; i < fiber_sched.nr_workers; i++)
		fiber_io_worker_stop(&fiber_sched.workers[i]);
	/* The parent's memory stays: the caller may be running on a fiber's stack. */
	fiber_sched.workers = NULL;
	fiber_sched.nr_workers = 0;
	fiber_sched.started_workers = 0;
	fiber_sched.idle_workers = 0;
	fiber_sched.live = 0;
	fiber_sched.runq.head = fiber_sched.runq.tail = NULL;
	fiber_sched.sleepers = NULL;
	fiber_sched.stopping = false;
	fiber_sched.monitor_running = false;
	fiber_sched.state = FIBER_SCHED_STOPPED;
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

	for (i = 0; i < n; i++) {
		struct fiber_worker *w = &fiber_sched.workers[i];

		w->index = i;
		w->ctl.size = sizeof(w->ctl);
		w->wake_fd = -1;
		err = -pthread_create(&w->thread, NULL, worker_main, w);
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
	fiber_sched.state = FIBER_SCHED_STARTING;
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

	err = fiber_preempt_setup(&fiber_sched.mode);
	if (err)
		goto fail;
	err = start_workers();
	if (err)
		goto fail;
	err = fiber_preempt_sched_started();
	if (err) {
		stop_workers(fiber_sched.nr_workers);
		goto fail;
	}
	sched_lock();
	fiber_sched.state = FIBER_SCHED_RUNNING;
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
	fiber_sched.state = FIBER_SCHED_STOPPING;
	while (fiber_sched.live)
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
 * runs) and again, lock held, before the fiber is queued.
 */
static bool may_spawn(void)
{
	enum fiber_sched_state state = __atomic_load_n(&fiber_sched.state, __ATOMIC_RELAXED);

	return state == FIBER_SCHED_RUNNING || (state == FIBER_SCHED_STOPPING && fiber_self());
}

int fiber_spawn(fiber_t **fiber, void *(*fn)(void *), void *arg)
{
	long page = sysconf(_SC_PAGESIZE);
	struct fiber *f;
	size_t size, guard;

	if (!fn || !fiber || !may_spawn())
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	guard = (STACK_GUARD_SIZE + page - 1) & ~(size_t)(page - 1);
	size = fiber_sched.stack_size + guard;
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
	f->map_size = size;
	f->stack_lo = (uintptr_t)f->map + guard;
	f->stack_hi = (uintptr_t)f->map + size;
	f->fn = fn;
	f->arg = arg;
	f->pinned = -1;
	f->sp = fiber_arch_init_stack((char *)f->map + size, f);

	sched_lock();
	if (!may_spawn()) {
		sched_unlock();
		free_fiber(f);
		return -EINVAL;
	}
	fiber_sched.live++;
	make_runnable(f);
	sched_unlock();
	*fiber = f;
	return 0;
}

int fiber_join(fiber_t *f, void **ret)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (!f)
		return -EINVAL;
	if (w && w->current == f)
		return -EDEADLK;
	sched_lock();
	if (f->state != FIBER_DONE) {
		if (w && w->current) {
			f->joiner = w->current;
			w->current->state = FIBER_BLOCKED;
			switch_to_worker(w, FIBER_ACT_BLOCK, false);
			sched_lock();
		}
		while (f->state != FIBER_DONE)
			pthread_cond_wait(&fiber_sched.done, &fiber_sched.lock);
	}
	sched_unlock();
	if (ret)
		*ret = f->ret;
	free_fiber(f);
	return 0;
}

int fiber_stats(fiber_t *f, struct fiber_stats *st)
{
	if (!f || !st)
		return -EINVAL;
	*st = f->stats;
	return 0;
}

void fiber_yield(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (w && w->current)
		switch_to_worker(w, FIBER_ACT_YIELD, false);
}

int fiber_sleep(uint64_t ns)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *f, **p;

	if (!w || !w->current) {
		struct timespec ts = { ns / 1000000000ULL, ns % 1000000000ULL };

		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		return 0;
	}
	f = w->current;
	f->wake_ns = now_ns() + ns;
	sched_lock();
	for (p = &fiber_sched.sleepers; *p && (*p)->wake_ns <= f->wake_ns; p = &(*p)->next)
		;
	f->next = *p;
	*p = f;
	f->state = FIBER_BLOCKED;
	/* A worker waiting for the old earliest deadline must look again. */
	wake_worker(NULL);
	switch_to_worker(w, FIBER_ACT_BLOCK, false);
	return 0;
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
	return fiber_sched.state == FIBER_SCHED_RUNNING || fiber_sched.state == FIBER_SCHED_STOPPING;
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
