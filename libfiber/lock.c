// SPDX-License-Identifier: MIT
/*
 * Fiber locks: fiber_mutex_t and fiber_cond_t.
 *
 * Unlike a pthread mutex, a fiber mutex belongs to the fiber that took
 * it, not to its thread: the holder may be preempted and may migrate, and
 * a fiber that waits parks (its worker runs other fibers) instead of
 * blocking the thread. Threads that are not fibers may use them too; they
 * wait on a futex.
 *
 * The mutex word is 0 (free), 1 (held) or 2 (held, and someone may wait),
 * as in the classic futex mutex: taking a free mutex is one compare and
 * swap, and only an unlock that finds 2 looks at the wait list, under a
 * short lock of the mutex's own (guard). That unlock frees the mutex and
 * wakes the oldest waiter, which competes for it again: a running fiber
 * may take it first, which keeps a lock that is released and taken in a
 * loop from costing a switch each time. A waiter that has lost once is
 * queued first and then handed the mutex directly, so nobody waits behind
 * more than one such barging.
 *
 * A waiter is a record on its own stack, linked into the wait list under
 * the guard. A fiber parks holding the guard, which its worker releases
 * once the fiber is switched out, so it is never woken before it has
 * stopped. Timed waits end by whichever comes first, the fiber's timer or
 * a signal (fiber_wait_end() settles it); the waiter then takes the guard
 * to see whether a signal took it off the list.
 */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MUTEX_FREE	0
#define MUTEX_HELD	1
#define MUTEX_WAITERS	2

struct fiber_waiter {
	struct fiber_waiter *next;
	struct fiber *fiber;		/* NULL: a thread, waiting on futex */
	uint32_t futex;			/* a thread's: 1 once woken */
	bool linked;			/* on the wait list */
	bool lost;			/* woken once, and the mutex was taken */
	bool handoff;			/* the mutex was handed to it */
};

static void *me(void)
{
	struct fiber *f = fiber_self();

	/* A thread: its pthread_t, marked so it differs from any fiber. */
	return f ? (void *)f : (void *)(pthread_self() | 1);
}

static void waiter_push(struct fiber_waiter **head, struct fiber_waiter **tail,
			struct fiber_waiter *wt, bool first)
{
	wt->linked = true;
	if (first) {
		wt->next = *head;
		*head = wt;
		if (!*tail)
			*tail = wt;
		return;
	}
	wt->next = NULL;
	if (*tail)
		(*tail)->next = wt;
	else
		*head = wt;
	*tail = wt;
}

static struct fiber_waiter *waiter_pop(struct fiber_waiter **head, struct fiber_waiter **tail)
{
	struct fiber_waiter *wt = *head;

	if (wt) {
		*head = wt->next;
		if (!*head)
			*tail = NULL;
		wt->linked = false;
	}
	return wt;
}

static void waiter_unlink(struct fiber_waiter **head, struct fiber_waiter **tail,
			  struct fiber_waiter *wt)
{
	struct fiber_waiter **p, *prev = NULL;

	for (p = head; *p != wt; p = &(*p)->next)
		prev = *p;
	*p = wt->next;
	if (*tail == wt)
		*tail = prev;
	wt->linked = false;
}

/*
 * Wakes a waiter taken off its list; the list's guard is held, so the
 * waiter (which takes the guard once awake) is still there.
 */
static void waiter_wake(struct fiber_waiter *wt)
{
	if (wt->fiber) {
		if (fiber_wait_end(wt->fiber))
			fiber_wake(wt->fiber);
		return;
	}
	__atomic_store_n(&wt->futex, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &wt->futex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/*
 * Waits, the guard held, until woken or deadline_ns (CLOCK_MONOTONIC; 0:
 * none); returns with the guard held. -ENOMEM: a fiber's timer could not
 * be set, and it did not wait. A fiber's dump says it waits for obj.
 */
static int waiter_wait(struct fiber_waiter *wt, uint32_t *guard, uint64_t deadline_ns,
		       enum fiber_wait why, const void *obj)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct timespec ts;
	bool parked = true;

	if (wt->fiber) {
		fiber_wait_begins(wt->fiber, why, obj);
		if (deadline_ns) {
			parked = fiber_park_until(w, deadline_ns, guard);
		} else {
			wt->fiber->wait_token = 1;
			fiber_park(w, guard);
		}
		fiber_wait_ends(wt->fiber);
		if (!parked)
			return -ENOMEM;
		fiber_spin_lock(guard);
		return 0;
	}
	ts.tv_sec = deadline_ns / 1000000000ULL;
	ts.tv_nsec = deadline_ns % 1000000000ULL;
	wt->futex = 0;
	fiber_spin_unlock(guard);
	while (!__atomic_load_n(&wt->futex, __ATOMIC_ACQUIRE)) {
		/* Absolute, on CLOCK_MONOTONIC; woken by a signal: look again. */
		if (syscall(SYS_futex, &wt->futex, FUTEX_WAIT_BITSET_PRIVATE, 0,
			    deadline_ns ? &ts : NULL, NULL, FUTEX_BITSET_MATCH_ANY) &&
		    errno == ETIMEDOUT)
			break;
	}
	/* The waker wakes under the guard: once we hold it, it is done with wt. */
	fiber_spin_lock(guard);
	return 0;
}

int fiber_mutex_init(fiber_mutex_t *m)
{
	if (!m)
		return -EINVAL;
	*m = (fiber_mutex_t)FIBER_MUTEX_INITIALIZER;
	return 0;
}

int fiber_mutex_trylock(fiber_mutex_t *m)
{
	uint32_t free = MUTEX_FREE;

	if (!m)
		return -EINVAL;
	if (!__atomic_compare_exchange_n(&m->state, &free, MUTEX_HELD, false,
					 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return -EBUSY;
	m->owner = me();
	return 0;
}

int fiber_mutex_lock(fiber_mutex_t *m)
{
	struct fiber_waiter wt = { .fiber = fiber_self() };
	struct fiber_waiter **head, **tail;

	if (!m)
		return -EINVAL;
	if (!fiber_mutex_trylock(m))
		return 0;
	if (m->owner == me())
		return -EDEADLK;
	head = (struct fiber_waiter **)&m->head;
	tail = (struct fiber_waiter **)&m->tail;
	fiber_spin_lock(&m->guard);
	for (;;) {
		/* 2, not 1: the unlock then looks at the list, which may not be empty. */
		if (__atomic_exchange_n(&m->state, MUTEX_WAITERS, __ATOMIC_ACQUIRE) == MUTEX_FREE)
			break;
		waiter_push(head, tail, &wt, wt.lost);
		waiter_wait(&wt, &m->guard, 0, FIBER_WAIT_MUTEX, m);
		if (wt.handoff)
			break;
		wt.lost = true;
	}
	fiber_spin_unlock(&m->guard);
	m->owner = me();
	return 0;
}

int fiber_mutex_unlock(fiber_mutex_t *m)
{
	uint32_t held = MUTEX_HELD;
	struct fiber_waiter *wt;

	if (!m)
		return -EINVAL;
	if (m->owner != me())
		return -EPERM;
	m->owner = NULL;
	if (__atomic_compare_exchange_n(&m->state, &held, MUTEX_FREE, false,
					__ATOMIC_RELEASE, __ATOMIC_RELAXED))
		return 0;
	fiber_spin_lock(&m->guard);
	wt = waiter_pop((struct fiber_waiter **)&m->head, (struct fiber_waiter **)&m->tail);
	if (wt && wt->lost)
		wt->handoff = true;	/* stays held: it is wt's now */
	else
		__atomic_store_n(&m->state, MUTEX_FREE, __ATOMIC_RELEASE);
	if (wt)
		waiter_wake(wt);
	fiber_spin_unlock(&m->guard);
	return 0;
}

int fiber_cond_init(fiber_cond_t *c)
{
	if (!c)
		return -EINVAL;
	*c = (fiber_cond_t)FIBER_COND_INITIALIZER;
	return 0;
}

int fiber_cond_timedwait(fiber_cond_t *c, fiber_mutex_t *m, uint64_t deadline_ns)
{
	struct fiber_waiter wt = { .fiber = fiber_self() };
	struct fiber_waiter **head, **tail;
	bool timed_out;
	int err;

	if (!c || !m)
		return -EINVAL;
	if (m->owner != me())
		return -EPERM;
	head = (struct fiber_waiter **)&c->head;
	tail = (struct fiber_waiter **)&c->tail;
	fiber_spin_lock(&c->guard);
	waiter_push(head, tail, &wt, false);
	/* Queued first: a signal sent once the mutex is free finds this waiter. */
	fiber_mutex_unlock(m);
	err = waiter_wait(&wt, &c->guard, deadline_ns, FIBER_WAIT_COND, c);
	timed_out = wt.linked;
	if (wt.linked)
		waiter_unlink(head, tail, &wt);
	fiber_spin_unlock(&c->guard);
	fiber_mutex_lock(m);
	if (err)
		return err;
	return timed_out ? -ETIMEDOUT : 0;
}

int fiber_cond_wait(fiber_cond_t *c, fiber_mutex_t *m)
{
	return fiber_cond_timedwait(c, m, 0);
}

static int cond_wake(fiber_cond_t *c, bool all)
{
	struct fiber_waiter *wt;

	if (!c)
		return -EINVAL;
	fiber_spin_lock(&c->guard);
	while ((wt = waiter_pop((struct fiber_waiter **)&c->head, (struct fiber_waiter **)&c->tail))) {
		waiter_wake(wt);
		if (!all)
			break;
	}
	fiber_spin_unlock(&c->guard);
	return 0;
}

int fiber_cond_signal(fiber_cond_t *c)
{
	return cond_wake(c, false);
}

int fiber_cond_broadcast(fiber_cond_t *c)
{
	return cond_wake(c, true);
}
