// SPDX-License-Identifier: MIT
/*
 * Lock-aware preemption: the lock entry points programs call.
 *
 * A fiber preempted while it holds a pthread lock leaves that lock held
 * while other fibers run on its worker; the first of them to take it
 * blocks the worker thread, and with it the holder, for good (or, for a
 * recursive mutex, walks in: the owner is the thread). Go counts the
 * locks a thread holds (m.locks) and never preempts while it is non-zero;
 * libfiber does the same for the locks the program takes. The program's
 * calls to these functions bind to libfiber's definitions (libfiber comes
 * before libc in the link, or is linked in), which:
 *  - count a held lock as a preempt-off section (ctl->preempt_off, which
 *    the module and the signal handler already honour): no preemption
 *    while a fiber holds any, and one that came due meanwhile is taken at
 *    the last release; a fiber holding a lock also never changes worker,
 *    so the owner glibc recorded stays right;
 *  - wait for a lock held elsewhere by letting the worker's other fibers
 *    run (the holder may be one of them, stopped in a sleep or a join
 *    while holding it) instead of blocking the thread; with nothing else
 *    to run here, the worker naps briefly between attempts;
 *  - treat a recursive mutex another fiber of the same worker holds as
 *    busy, though glibc would let the thread in.
 * pthread_once() and C++ function-local statics (__cxa_guard_*) count
 * while their initializer runs and wait the same way while another fiber
 * runs one. Outside a fiber every function is glibc's own.
 *
 * The real functions are glibc's exported __pthread_* aliases, or
 * libstdc++'s guard functions found with dlsym(RTLD_NEXT) on first use.
 * pthread_once() and the guards read the state word's encoding (glibc's
 * "in progress" bit, libstdc++'s "pending" byte) only to choose how to
 * wait; the transitions stay theirs.
 *
 * Not covered: timed rwlock variants, flockfile() (the FILE lock is
 * glibc-internal), pthread_cond_wait() (it blocks the worker, as any
 * blocking call does; the mutex stays counted as held across it).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

FIBER_GLIBC_ALIAS(__pthread_mutex_trylock, int, pthread_mutex_t *);
FIBER_GLIBC_ALIAS(__pthread_once, int, pthread_once_t *, void (*)(void));
FIBER_GLIBC_ALIAS(__pthread_rwlock_rdlock, int, pthread_rwlock_t *);
FIBER_GLIBC_ALIAS(__pthread_rwlock_wrlock, int, pthread_rwlock_t *);
FIBER_GLIBC_ALIAS(__pthread_rwlock_tryrdlock, int, pthread_rwlock_t *);
FIBER_GLIBC_ALIAS(__pthread_rwlock_trywrlock, int, pthread_rwlock_t *);
FIBER_GLIBC_ALIAS(__pthread_rwlock_unlock, int, pthread_rwlock_t *);

/* glibc's pthread_once_t states (low bits; a fork generation above). */
#define ONCE_STATE_MASK		3
#define ONCE_IN_PROGRESS	1
#define ONCE_DONE		2
/* libstdc++'s guard: byte 0 set once initialized, byte 1 while pending. */
#define GUARD_PENDING		0x100

#define YIELDS_BEFORE_NAP	64
#define NAP_NS			50000

static struct fiber *running_fiber(void)
{
	struct fiber_worker *w = fiber_tls_worker;

	return w ? w->current : NULL;
}

/* The running fiber took a lock: a preempt-off section begins. */
static void hold(void)
{
	fiber_tls_ctl->preempt_off++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* ...and ends, taking a preemption that came due meanwhile. */
static void release(void)
{
	fiber_preempt_enable();
}

/*
 * Lets the worker's other fibers run while a lock is held elsewhere. The
 * waiter stays on this worker: it is inside what it believes is a libc
 * call, across which the compiler may keep thread-local addresses.
 */
static void wait_turn(unsigned int *tries, const void *lock)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *self = w->current;
	struct timespec nap = { 0, NAP_NS };

	fiber_wait_begins(self, FIBER_WAIT_LOCK, lock);
	/* Racy reads: at worst one nap too many or too few. */
	if (++*tries < YIELDS_BEFORE_NAP || !fiber_runq_empty(w))
		fiber_yield_here();
	else
		nanosleep(&nap, NULL);
	fiber_wait_ends(self);
}

/* Whether f holds m, as far as its record of recursive mutexes goes. */
static bool holds(const struct fiber *f, const pthread_mutex_t *m)
{
	unsigned int i;

	if (f->nr_recursive > FIBER_MAX_RECURSIVE)
		return true;		/* not all recorded: trust glibc */
	for (i = 0; i < f->nr_recursive; i++)
		if (f->recursive[i] == m)
			return true;
	return false;
}

static bool is_recursive(const pthread_mutex_t *m)
{
	return (m->__data.__kind & 3) == PTHREAD_MUTEX_RECURSIVE;
}

/* A recursive mutex this thread owns on behalf of another of its fibers. */
static bool sibling_holds(const struct fiber *f, const pthread_mutex_t *m)
{
	return is_recursive(m) &&
	       __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) == fiber_tls_worker->tid &&
	       !holds(f, m);
}

static int mutex_trylock(struct fiber *f, pthread_mutex_t *m)
{
	int err;

	if (sibling_holds(f, m))
		return EBUSY;
	err = __pthread_mutex_trylock(m);
	if (err)
		return err;
	if (is_recursive(m)) {
		if (f->nr_recursive < FIBER_MAX_RECURSIVE)
			f->recursive[f->nr_recursive] = m;
		f->nr_recursive++;
	}
	hold();
	return 0;
}

static bool past(clockid_t clock, const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(clock, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* Takes m, waiting the fiber's way; deadline NULL: no time limit. */
static int mutex_lock(pthread_mutex_t *m, clockid_t clock, const struct timespec *deadline)
{
	struct fiber *f = running_fiber();
	unsigned int tries = 0;
	int err;

	if (deadline && (deadline->tv_nsec < 0 || deadline->tv_nsec >= 1000000000L))
		return EINVAL;
	while ((err = mutex_trylock(f, m)) == EBUSY) {
		if (deadline && past(clock, deadline))
			return ETIMEDOUT;
		wait_turn(&tries, m);
	}
	return err;
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
	struct fiber *f = running_fiber();

	if (!f)
		return __pthread_mutex_lock(m);
	/* Uncontended: one trylock, as glibc's own fast path. */
	if (!mutex_trylock(f, m))
		return 0;
	return mutex_lock(m, CLOCK_REALTIME, NULL);
}

int pthread_mutex_trylock(pthread_mutex_t *m)
{
	struct fiber *f = running_fiber();

	return f ? mutex_trylock(f, m) : __pthread_mutex_trylock(m);
}

int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clock, const struct timespec *deadline)
{
	static int (*real)(pthread_mutex_t *, clockid_t, const struct timespec *);

	if (running_fiber()) {
		if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC)
			return EINVAL;
		return mutex_lock(m, clock, deadline);
	}
	if (!real)
		real = dlsym(RTLD_NEXT, "pthread_mutex_clocklock");
	return real(m, clock, deadline);
}

int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *deadline)
{
	return pthread_mutex_clocklock(m, CLOCK_REALTIME, deadline);
}

int pthread_mutex_unlock(pthread_mutex_t *m)
{
	struct fiber *f = running_fiber();
	unsigned int i;
	int err = __pthread_mutex_unlock(m);

	if (err || !f)
		return err;
	if (is_recursive(m) && f->nr_recursive) {
		f->nr_recursive--;
		for (i = 0; i < f->nr_recursive && i < FIBER_MAX_RECURSIVE; i++)
			if (f->recursive[i] == m) {
				f->recursive[i] = f->recursive[f->nr_recursive];
				break;
			}
	}
	release();
	return 0;
}

static int rwlock_take(pthread_rwlock_t *rw, int (*try)(pthread_rwlock_t *),
		       int (*take)(pthread_rwlock_t *))
{
	unsigned int tries = 0;
	int err;

	if (!running_fiber())
		return take(rw);
	while ((err = try(rw)) == EBUSY)
		wait_turn(&tries, rw);
	if (!err)
		hold();
	return err;
}

int pthread_rwlock_rdlock(pthread_rwlock_t *rw)
{
	return rwlock_take(rw, __pthread_rwlock_tryrdlock, __pthread_rwlock_rdlock);
}

int pthread_rwlock_wrlock(pthread_rwlock_t *rw)
{
	return rwlock_take(rw, __pthread_rwlock_trywrlock, __pthread_rwlock_wrlock);
}

static int rwlock_try(pthread_rwlock_t *rw, int (*try)(pthread_rwlock_t *))
{
	int err = try(rw);

	if (!err && running_fiber())
		hold();
	return err;
}

int pthread_rwlock_tryrdlock(pthread_rwlock_t *rw)
{
	return rwlock_try(rw, __pthread_rwlock_tryrdlock);
}

int pthread_rwlock_trywrlock(pthread_rwlock_t *rw)
{
	return rwlock_try(rw, __pthread_rwlock_trywrlock);
}

int pthread_rwlock_unlock(pthread_rwlock_t *rw)
{
	int err = __pthread_rwlock_unlock(rw);

	if (!err && running_fiber())
		release();
	return err;
}

/*
 * glibc's spin lock, waited for the fiber's way (its encoding is per arch).
 * glibc's functions have the names libfiber defines, which an executable
 * that links libfiber.a would answer for itself: found with dlvsym().
 */
static int (*glibc_spin_trylock)(pthread_spinlock_t *);
static int (*glibc_spin_unlock)(pthread_spinlock_t *);

__attribute__((constructor)) static void find_glibc_spin(void)
{
	glibc_spin_trylock = dlvsym(RTLD_NEXT, "pthread_spin_trylock", FIBER_GLIBC_BASE);
	glibc_spin_unlock = dlvsym(RTLD_NEXT, "pthread_spin_unlock", FIBER_GLIBC_BASE);
	if (!glibc_spin_trylock || !glibc_spin_unlock)
		abort();
}

int pthread_spin_trylock(pthread_spinlock_t *lock)
{
	int err;

	if (!glibc_spin_trylock)	/* called by a constructor before ours */
		find_glibc_spin();
	err = glibc_spin_trylock(lock);

	if (!err && running_fiber())
		hold();
	return err;
}

int pthread_spin_lock(pthread_spinlock_t *lock)
{
	bool fiber = running_fiber();
	unsigned int tries = 0;

	while (pthread_spin_trylock(lock)) {
		if (fiber)
			wait_turn(&tries, (const void *)(uintptr_t)lock);
		else
			fiber_cpu_relax();
	}
	return 0;
}

int pthread_spin_unlock(pthread_spinlock_t *lock)
{
	if (!glibc_spin_unlock)
		find_glibc_spin();
	glibc_spin_unlock(lock);
	if (running_fiber())
		release();
	return 0;
}

int pthread_once(pthread_once_t *once, void (*init)(void))
{
	unsigned int tries = 0;
	int err;

	if (__atomic_load_n(once, __ATOMIC_ACQUIRE) & ONCE_DONE)
		return 0;
	if (!running_fiber())
		return __pthread_once(once, init);
	/* Another fiber runs init (maybe stopped here, holding the worker's turn). */
	while ((__atomic_load_n(once, __ATOMIC_ACQUIRE) & ONCE_STATE_MASK) == ONCE_IN_PROGRESS)
		wait_turn(&tries, once);
	hold();
	err = __pthread_once(once, init);
	release();
	return err;
}

/* libstdc++'s guard functions, for C++ function-local statics. */
static void *cxa_real(const char *name, void **cache)
{
	void *fn = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (!fn) {
		fn = dlsym(RTLD_NEXT, name);
		if (!fn)
			abort();	/* a guard call without libstdc++ */
		__atomic_store_n(cache, fn, __ATOMIC_RELEASE);
	}
	return fn;
}

int __cxa_guard_acquire(uint64_t *guard)
{
	static void *real;
	int (*acquire)(uint64_t *) = cxa_real("__cxa_guard_acquire", &real);
	unsigned int tries = 0;
	int init;

	if (__atomic_load_n((uint8_t *)guard, __ATOMIC_ACQUIRE))
		return 0;
	if (!running_fiber())
		return acquire(guard);
	while (__atomic_load_n((uint32_t *)guard, __ATOMIC_ACQUIRE) & GUARD_PENDING)
		wait_turn(&tries, guard);
	hold();
	init = acquire(guard);
	/* Held until __cxa_guard_release() or _abort() if this fiber initializes. */
	if (!init)
		release();
	return init;
}

void __cxa_guard_release(uint64_t *guard)
{
	static void *real;
	void (*done)(uint64_t *) = cxa_real("__cxa_guard_release", &real);

	done(guard);
	if (running_fiber())
		release();
}

void __cxa_guard_abort(uint64_t *guard)
{
	static void *real;
	void (*abandon)(uint64_t *) = cxa_real("__cxa_guard_abort", &real);

	abandon(guard);
	if (running_fiber())
		release();
}
