/* SPDX-License-Identifier: MIT */
/* libfiber internals shared by the scheduler and the preemption backends. */
#ifndef LIBFIBER_INTERNAL_H
#define LIBFIBER_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <ucontext.h>
#include <liburing.h>
#include <linux/fiber_preempt.h>

#include "fiber.h"
#include "arch.h"

#define FIBER_HIDDEN __attribute__((visibility("hidden")))
#define FIBER_TLS __thread __attribute__((tls_model("initial-exec")))

enum fiber_state {
	FIBER_RUNNABLE,
	FIBER_RUNNING,
	FIBER_BLOCKED,
	FIBER_DONE,
};

/* What the scheduler does with the fiber that just switched to it. */
enum fiber_action {
	FIBER_ACT_YIELD,	/* runnable again */
	FIBER_ACT_PREEMPTED,	/* ran its slice out: runnable, after others */
	FIBER_ACT_BLOCK,	/* parked; release w->park_lock if set */
	FIBER_ACT_JOIN,		/* waits for w->join_target to return */
	FIBER_ACT_EXIT,		/* returned */
};

/* What a fiber waits for, for fiber_dump(): set around its waits. */
enum fiber_wait {
	FIBER_WAIT_NONE,
	FIBER_WAIT_JOIN,	/* wait_obj: the fiber joined */
	FIBER_WAIT_SLEEP,	/* until wake_ns */
	FIBER_WAIT_IO,		/* wait_op: IORING_OP_*, on wait_fd */
	FIBER_WAIT_MUTEX,	/* wait_obj: a fiber_mutex_t */
	FIBER_WAIT_COND,	/* wait_obj: a fiber_cond_t */
	FIBER_WAIT_LOCK,	/* wait_obj: a pthread lock or once, or a C++ guard */
};

/*
 * A lock for short sections (a run queue, a fiber lock's wait list):
 * spins, then yields the CPU, since the holder's thread may be off it.
 */
static inline void fiber_cpu_relax(void)
{
#if defined(__x86_64__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

void fiber_spin_wait(uint32_t *lock) FIBER_HIDDEN;

static inline void fiber_spin_lock(uint32_t *lock)
{
	if (__builtin_expect(__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE), 0))
		fiber_spin_wait(lock);
}

static inline void fiber_spin_unlock(uint32_t *lock)
{
	__atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

#define FIBER_MAX_RECURSIVE	8

struct fiber {
	void *sp;			/* saved stack pointer while switched out */
	void *map;			/* stack mapping, guard page first */
	size_t map_size;
	uintptr_t stack_lo, stack_hi;	/* the usable stack, for the walker */
	void *(*fn)(void *);
	void *arg;
	void *ret;
	enum fiber_state state;
	int pinned;			/* worker index, or -1 when any may run it */
	/*
	 * A timed wait's timer is in this worker's heap (-1: none): until
	 * that worker drops it, the fiber runs only there.
	 */
	int timer_worker;
	unsigned int timer_slot;	/* index in that heap */
	uint32_t wait_token;		/* 1 while a timed wait may be ended */
	uint32_t preempt_off;		/* ctl->preempt_off while switched out */
	int saved_errno;		/* errno while switched out */
	/* Recursive mutexes it holds (sync.c), as far as FIBER_MAX_RECURSIVE. */
	unsigned int nr_recursive;
	const pthread_mutex_t *recursive[FIBER_MAX_RECURSIVE];
	bool own_sigmask;		/* sigmask differs from the worker's */
	sigset_t sigmask;		/* the fiber's signal mask, if own_sigmask */
	struct fiber *next;		/* run queue link */
	uint64_t ticket;		/* when it was queued: FIFO across a worker's queues */
	/* Who waits in fiber_join(): a fiber, FIBER_JOIN_THREAD, _DETACHED or _DONE. */
	struct fiber *joiner;
	uint64_t wake_ns;		/* timed wait's end, CLOCK_MONOTONIC */
	uint64_t deadline;		/* fiber_set_deadline(): bounds its I/O calls */
	struct fiber_stats stats;
	/* Preempted: the upcall frame on its stack (atomic; else NULL). */
	struct fiber_upcall_frame *upcall_frame;
	/* dump.c: every fiber spawned and not yet freed, newest first. */
	struct fiber *all_next, *all_prev;
	uint64_t id;
	char name[FIBER_NAME_MAX];
	uint64_t run_ticks;		/* time on a worker, fiber_arch_ticks() units */
	/* What it waits for (enum fiber_wait), read racily by dumps. */
	uint8_t wait;
	uint8_t wait_op;
	int wait_fd;
	const void *wait_obj;
};

static inline void fiber_wait_begins(struct fiber *f, enum fiber_wait wait, const void *obj)
{
	f->wait_obj = obj;
	/* A dump that reads the reason reads its object too. */
	__atomic_store_n(&f->wait, wait, __ATOMIC_RELEASE);
}

static inline void fiber_wait_ends(struct fiber *f)
{
	f->wait = FIBER_WAIT_NONE;
}

#define FIBER_JOIN_THREAD	((struct fiber *)1)	/* a thread waits on sched.done */
#define FIBER_JOIN_DONE		((struct fiber *)2)	/* the fiber has returned */
#define FIBER_JOIN_DETACHED	((struct fiber *)3)	/* freed as it returns */

struct fiber_queue {
	struct fiber *head;
	struct fiber *tail;
};

static inline void fiber_queue_push(struct fiber_queue *q, struct fiber *f)
{
	f->next = NULL;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
}

static inline struct fiber *fiber_queue_pop(struct fiber_queue *q)
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
 * A worker's run queues, under their own lock: the worker pushes and pops
 * here on every switch; other threads push fibers they wake that must run
 * here, and idle workers steal from the shared queue.
 */
struct fiber_runq {
	uint32_t lock;
	struct fiber_queue pinned;	/* fibers that run on this worker only */
	struct fiber_queue shared;	/* fibers any worker may take */
	unsigned int len;		/* both queues; read without the lock */
	unsigned int nr_shared;		/* read without the lock by thieves */
	/* It waits for work; a wake-up was sent since (at most one a wait). */
	bool sleeping;
	bool woken;
	uint32_t futex;			/* without a ring: what it waits on */
} __attribute__((aligned(64)));

struct fiber_worker {
	/* Written by the kernel from this worker's timer interrupt. */
	struct fiber_preempt_ctl ctl;
	unsigned int index;
	pthread_t thread;
	pid_t tid;
	void *sched_sp;			/* the worker's own stack while a fiber runs */
	struct fiber *current;
	enum fiber_action action;
	uint32_t *park_lock;		/* FIBER_ACT_BLOCK: unlocked once switched out */
	struct fiber *join_target;	/* FIBER_ACT_JOIN */
	/* Only this worker's thread touches these. */
	struct fiber *runnext;		/* the fiber it just woke: runs next */
	unsigned int runnext_streak;	/* runnext picks in a row */
	uint64_t ticks;			/* picks, for the global queue's turn */
	unsigned int pass_left;		/* picks until the ring is submitted */
	bool reap_first;		/* reap before queueing a migrating preempted fiber */
	struct fiber_queue preempted;	/* preempted fibers staying here */
	unsigned int favoured;		/* picks left before the next of them */
	bool favour_reaped;		/* the ring was reaped for the next of them */
	struct fiber **timers;		/* min-heap of timed waits, by wake_ns */
	unsigned int nr_timers, timers_cap;
	struct fiber *cache;		/* joined fibers, stacks kept for reuse */
	unsigned int nr_cached;
	long live;			/* see fiber_sched.live_outside */
	uint64_t switches;
	uint64_t run_start;		/* fiber_arch_ticks() when its last fiber stopped */
	uint64_t steals;		/* fibers taken from other workers */
	uint64_t wakeups;		/* wake-ups sent to it while it slept */
	uint64_t deferred_stack;	/* upcalls declined: a frame not preemptible */
	struct fiber_unwind_cache *unwind_cache;	/* the upcall's stack walks */
	int init_error;			/* set once the worker has started */
	/* signal backend: the worker's CPU clock, and the monitor's view */
	clockid_t cpu_clock;
	uint64_t mon_switch;		/* switch_count when the slice began */
	uint64_t mon_deadline;		/* CPU time to look again */
	uint64_t mon_retry;		/* delay of the next retry */
	uint64_t slice_start_ns;	/* when the running slice began (atomic) */
	/* stall.c's view: the switch count, since when it has not moved */
	uint64_t stall_count;
	uint64_t stall_since;
	bool stall_reported;		/* written by the handler (atomic) */
	uint64_t stall_due;		/* the count to report; 0: none (atomic) */
	uint64_t stall_held_ns;		/* how long it had not moved */
	sigset_t sigmask;		/* the worker's mask outside signal handlers */
	stack_t altstack;		/* the worker's alternate signal stack */
	/* io.c: only this worker's thread touches the ring. */
	struct io_uring ring;
	bool has_ring;			/* false: I/O calls are plain system calls */
	unsigned int ring_entries;
	uint64_t io_ops;
	uint64_t io_submits;
	int wake_fd;			/* eventfd another thread writes to wake it */
	bool wake_armed;		/* a read of wake_fd is in the ring */
	bool has_msg_ring;		/* it can wake others with IORING_OP_MSG_RING */
	uint64_t wake_buf;
	struct fiber_runq rq;
} __attribute__((aligned(FIBER_PREEMPT_CTL_ALIGN)));

/* The scheduler's life; changed only with sched.lock held. */
enum fiber_sched_state {
	FIBER_SCHED_STOPPED,
	FIBER_SCHED_STARTING,	/* workers being created */
	FIBER_SCHED_RUNNING,
	FIBER_SCHED_STOPPING,	/* waiting for fibers to return, then workers */
};

struct fiber_sched {
	/* The scheduler's life and threads' joins; no fiber switch takes it. */
	pthread_mutex_t lock;
	pthread_cond_t done;		/* a fiber returned, a worker started */
	enum fiber_sched_state state;	/* read without the lock, atomically */
	bool stopping;			/* workers exit once no fiber is live */
	bool fork_handlers;		/* pthread_atfork() done */
	unsigned int started_workers;
	/*
	 * Fibers spawned and not returned: those spawned by other threads,
	 * plus each worker's count (spawned by its fibers, less those that
	 * returned there), so spawns and returns share no cache line.
	 */
	long live_outside;
	/* Written as workers go idle: a line of its own, away from state. */
	unsigned int nr_idle __attribute__((aligned(64)));	/* atomic */
	/* 1 while the signal backend's monitor waits for a worker to wake. */
	uint32_t monitor_parked;			/* atomic, a futex */

	/* Fibers spawned by threads other than workers, and migrating ones. */
	struct {
		uint32_t lock;
		struct fiber_queue q;
		unsigned int len;	/* read without the lock */
	} global __attribute__((aligned(64)));

	/* Fixed once started. */
	enum fiber_preempt_mode mode;
	unsigned int flags;		/* FIBER_MIGRATE* */
	uint64_t slice_ns;
	size_t stack_size;
	unsigned int nr_workers;
	unsigned int ring_entries;
	struct fiber_worker *workers;
	int dev_fd;
	pthread_t monitor;		/* signal backend */
	bool monitor_running;
	bool monitor_stop;
	pid_t pid;			/* the sender the signal handler accepts */
	uint64_t stall_ns;		/* FIBER_STALL_MS, in ns; 0: no stall reports */
	pthread_t stall_watcher;
	bool stall_running;
	uint32_t stall_stop;		/* atomic, a futex */
	uid_t uid;			/* the monitor's, in its signals */
	unsigned int nr_ranges;
	struct fiber_preempt_range ranges[FIBER_PREEMPT_MAX_RANGES];
	/* fiber_preempt_add_library() names, resolved at start. */
	unsigned int nr_libs;
	const char *libs[FIBER_PREEMPT_MAX_LIBS];
};

extern struct fiber_sched fiber_sched FIBER_HIDDEN;

/*
 * glibc's own entry points behind the pthread functions libfiber provides
 * (sync.c). glibc exports them under its first version only, which a
 * reference must name.
 */
#if defined(__x86_64__)
#define FIBER_GLIBC_BASE	"GLIBC_2.2.5"
#elif defined(__aarch64__)
#define FIBER_GLIBC_BASE	"GLIBC_2.17"
#endif
#define FIBER_GLIBC_ALIAS(name, ret, ...)					\
	ret name(__VA_ARGS__);							\
	__asm__(".symver " #name ", " #name "@" FIBER_GLIBC_BASE)

FIBER_GLIBC_ALIAS(__pthread_mutex_lock, int, pthread_mutex_t *);
FIBER_GLIBC_ALIAS(__pthread_mutex_unlock, int, pthread_mutex_t *);

/* libfiber's own lock, which the program's lock count must not see. */
#define sched_lock()	__pthread_mutex_lock(&fiber_sched.lock)
#define sched_unlock()	__pthread_mutex_unlock(&fiber_sched.lock)
extern FIBER_TLS struct fiber_worker *fiber_tls_worker FIBER_HIDDEN;
extern FIBER_TLS struct fiber_preempt_ctl *fiber_tls_ctl FIBER_HIDDEN;

/* arch/<arch>/switch.S */
void fiber_switch(void **save_sp, void *load_sp) FIBER_HIDDEN;
void fiber_entry(void) FIBER_HIDDEN;
extern const char fiber_entry_ret[] FIBER_HIDDEN;
/* arch/<arch>/upcall.S: [entry, end) is the trampoline */
void fiber_upcall_entry(void) FIBER_HIDDEN;
extern const char fiber_upcall_end[] FIBER_HIDDEN;

/* sched.c */
void fiber_exit(struct fiber *f, void *ret) FIBER_HIDDEN __attribute__((noreturn));
void fiber_preempted(struct fiber_worker *w) FIBER_HIDDEN;
void fiber_yield_here(void) FIBER_HIDDEN;
void fiber_park(struct fiber_worker *w, uint32_t *unlock) FIBER_HIDDEN;
bool fiber_park_until(struct fiber_worker *w, uint64_t deadline_ns, uint32_t *unlock) FIBER_HIDDEN;
bool fiber_wait_end(struct fiber *f) FIBER_HIDDEN;
uint64_t fiber_now_ns(void) FIBER_HIDDEN;

/* runq.c */
void fiber_runq_push(struct fiber_worker *w, struct fiber *f) FIBER_HIDDEN;
void fiber_wake(struct fiber *f) FIBER_HIDDEN;
void fiber_global_push(struct fiber *f) FIBER_HIDDEN;
struct fiber *fiber_runq_pick(struct fiber_worker *w) FIBER_HIDDEN;
bool fiber_runq_idle(struct fiber_worker *w, uint64_t deadline) FIBER_HIDDEN;
bool fiber_runq_empty(const struct fiber_worker *w) FIBER_HIDDEN;
unsigned int fiber_runq_len(const struct fiber_worker *w) FIBER_HIDDEN;
void fiber_runq_wake_all(void) FIBER_HIDDEN;

/* io.c */
int fiber_io_worker_start(struct fiber_worker *w, unsigned int entries) FIBER_HIDDEN;
void fiber_io_worker_stop(struct fiber_worker *w) FIBER_HIDDEN;
unsigned int fiber_io_ring_entries(unsigned int requested) FIBER_HIDDEN;
void fiber_io_poll(struct fiber_worker *w) FIBER_HIDDEN;
void fiber_io_wait(struct fiber_worker *w, uint64_t deadline) FIBER_HIDDEN;
void fiber_io_wake(struct fiber_worker *w) FIBER_HIDDEN;
bool fiber_io_pending(struct fiber_worker *w) FIBER_HIDDEN;
bool fiber_io_msg_ring(struct fiber_worker *self, struct fiber_worker *w) FIBER_HIDDEN;

/* preempt.c */
int fiber_preempt_setup(enum fiber_preempt_mode *mode) FIBER_HIDDEN;
void fiber_preempt_teardown(void) FIBER_HIDDEN;
int fiber_preempt_worker_start(struct fiber_worker *w) FIBER_HIDDEN;
void fiber_preempt_worker_stop(struct fiber_worker *w) FIBER_HIDDEN;
int fiber_preempt_sched_started(void) FIBER_HIDDEN;
void fiber_preempt_sched_stopping(void) FIBER_HIDDEN;
void fiber_preempt_worker_wakes(void) FIBER_HIDDEN;
void fiber_preempt_signal(struct fiber_worker *w, void *value) FIBER_HIDDEN;

/* stall.c */
/* The signal value that asks a worker for a stall report. */
#define FIBER_STALL_SIGNALLED	((void *)UINTPTR_MAX)
int fiber_stall_setup(void) FIBER_HIDDEN;
int fiber_stall_start(void) FIBER_HIDDEN;
void fiber_stall_stop(void) FIBER_HIDDEN;
void fiber_stall_report(struct fiber_worker *w, const ucontext_t *uc, const char *why) FIBER_HIDDEN;

/*
 * The worker's fiber starts a slice: a switch to it, or a new slice where
 * nothing else could run. The module and the signal handler tell the
 * slices apart by the switch count. The monitor also needs when it began,
 * as it looks only now and then: stored before the count, which it reads
 * first.
 */
static inline void fiber_preempt_slice_begins(struct fiber_worker *w)
{
	if (fiber_sched.mode != FIBER_PREEMPT_SIGNAL) {
		/* A plain store: only this thread and its own interrupts look. */
		w->ctl.switch_count++;
		return;
	}
	__atomic_store_n(&w->slice_start_ns, fiber_now_ns(), __ATOMIC_RELAXED);
	__atomic_store_n(&w->ctl.switch_count, w->ctl.switch_count + 1, __ATOMIC_RELEASE);
}

/* dump.c */
void fiber_registry_add(struct fiber *f) FIBER_HIDDEN;
void fiber_registry_remove(struct fiber *f) FIBER_HIDDEN;
void fiber_registry_unmap(struct fiber *f) FIBER_HIDDEN;
void fiber_registry_quiesce(void) FIBER_HIDDEN;
void fiber_registry_workers_ready(void) FIBER_HIDDEN;
void fiber_registry_workers_gone(void) FIBER_HIDDEN;
void fiber_registry_forked(void) FIBER_HIDDEN;
int fiber_dump_setup(void) FIBER_HIDDEN;
uint64_t fiber_ticks_to_ns(uint64_t ticks) FIBER_HIDDEN;

/* Text for dumps and reports, written with write(2): no malloc, no stdio. */
struct fiber_out {
	int fd;
	int err;			/* the first write's error */
	size_t len;
	char buf[512];
};

void fiber_out_str(struct fiber_out *o, const char *s) FIBER_HIDDEN;
void fiber_out_uint(struct fiber_out *o, uint64_t v) FIBER_HIDDEN;
void fiber_out_hex(struct fiber_out *o, uint64_t v) FIBER_HIDDEN;
void fiber_out_ms(struct fiber_out *o, uint64_t ns) FIBER_HIDDEN;
/* pcs from a backtrace; first_exact: pcs[0] is an interrupted instruction. */
void fiber_out_backtrace(struct fiber_out *o, void *const *pcs, int n, bool first_exact) FIBER_HIDDEN;
void fiber_out_flush(struct fiber_out *o) FIBER_HIDDEN;

/* backtrace.c: fiber f, running on this thread, where uc interrupted it. */
int fiber_backtrace_uc(const struct fiber *f, const ucontext_t *uc, void **pcs, int max) FIBER_HIDDEN;

/* symbols.c */
int fiber_symbols_load(void) FIBER_HIDDEN;
/* The name of the function around pc, its offset and object; false if unknown. */
bool fiber_symbolize(uintptr_t pc, const char **fn, uintptr_t *off, const char **obj) FIBER_HIDDEN;

/* sigmask.c */
void fiber_sigmask_apply(const sigset_t *mask) FIBER_HIDDEN;

/* arch/<arch>/context.c */
void *fiber_arch_init_stack(void *top, struct fiber *f) FIBER_HIDDEN;
void fiber_arch_init(void) FIBER_HIDDEN;

#endif /* LIBFIBER_INTERNAL_H */
