// SPDX-License-Identifier: MIT
/*
 * The stall report (FIBER_STALL_MS=N), after Seastar's reactor stall
 * detector: a fiber that keeps its worker for N ms without reaching a
 * point where it could be preempted is reported once, on stderr, with
 * why it could not be (in a library, preemption disabled or a lock held,
 * a signal handler, ...) and its backtrace from where it was.
 *
 * A watcher thread looks at every worker each N/4 ms. A worker's switch
 * count moves at every switch and at every new slice its fiber starts
 * where nothing else could run (preempt.c): a fiber that is preemptible
 * moves it each slice, whether or not anything else waits. A count that
 * has not moved for N ms while a fiber runs is a stall: the watcher sends
 * the worker the preemption signal with FIBER_STALL_SIGNALLED, each look
 * until the report is written, and the handler, on the worker, writes it
 * from the interrupted state.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define STALL_FRAMES	32

/* FIBER_STALL_MS=N: N ms, 1 to 3600000. */
int fiber_stall_setup(void)
{
	const char *env = getenv("FIBER_STALL_MS");
	struct fiber_out o = { .fd = STDERR_FILENO };
	char *end;
	long ms;

	fiber_sched.stall_ns = 0;
	if (!env || !*env)
		return 0;
	errno = 0;
	ms = strtol(env, &end, 10);
	if (errno || *end || ms < 1 || ms > 3600000) {
		fiber_out_str(&o, "libfiber: FIBER_STALL_MS=");
		fiber_out_str(&o, env);
		fiber_out_str(&o, ": not a number of milliseconds from 1 to 3600000\n");
		fiber_out_flush(&o);
		return -EINVAL;
	}
	fiber_sched.stall_ns = ms * 1000000ULL;
	return 0;
}

static void watch_worker(struct fiber_worker *w, uint64_t now)
{
	uint64_t count = __atomic_load_n(&w->ctl.switch_count, __ATOMIC_RELAXED);

	if (!__atomic_load_n(&w->current, __ATOMIC_RELAXED) || count != w->stall_count) {
		w->stall_count = count;
		w->stall_since = now;
		w->stall_reported = false;
		return;
	}
	/*
	 * Until the handler has reported it: a SIGURG the monitor sent is
	 * perhaps pending, and a second one is then lost.
	 */
	if (!__atomic_load_n(&w->stall_reported, __ATOMIC_RELAXED) &&
	    now - w->stall_since >= fiber_sched.stall_ns) {
		/* What the handler reports, published before it runs. */
		w->stall_held_ns = now - w->stall_since;
		__atomic_store_n(&w->stall_due, count, __ATOMIC_RELEASE);
		fiber_preempt_signal(w, FIBER_STALL_SIGNALLED);
	}
}

static void *watcher_main(void *arg)
{
	uint64_t period = fiber_sched.stall_ns / 4;
	struct timespec ts;
	unsigned int i;

	if (period < 1000000)
		period = 1000000;
	ts.tv_sec = period / 1000000000ULL;
	ts.tv_nsec = period % 1000000000ULL;
	while (!__atomic_load_n(&fiber_sched.stall_stop, __ATOMIC_ACQUIRE)) {
		for (i = 0; i < fiber_sched.nr_workers; i++)
			watch_worker(&fiber_sched.workers[i], fiber_now_ns());
		syscall(SYS_futex, &fiber_sched.stall_stop, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
	}
	return NULL;
}

int fiber_stall_start(void)
{
	if (!fiber_sched.stall_ns)
		return 0;
	fiber_sched.stall_stop = 0;
	if (pthread_create(&fiber_sched.stall_watcher, NULL, watcher_main, NULL))
		return -EAGAIN;
	fiber_sched.stall_running = true;
	return 0;
}

void fiber_stall_stop(void)
{
	if (!fiber_sched.stall_running)
		return;
	__atomic_store_n(&fiber_sched.stall_stop, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &fiber_sched.stall_stop, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	pthread_join(fiber_sched.stall_watcher, NULL);
	fiber_sched.stall_running = false;
}

/* In the signal handler, on w, whose fiber uc interrupted. */
void fiber_stall_report(struct fiber_worker *w, const ucontext_t *uc, const char *why)
{
	struct fiber_out o = { .fd = STDERR_FILENO };
	struct fiber *f = w->current;
	void *pcs[STALL_FRAMES];
	char name[FIBER_NAME_MAX];
	int saved_errno = errno, n;

	/* Once; not if it reached a preemption point meanwhile. */
	if (__atomic_exchange_n(&w->stall_due, 0, __ATOMIC_ACQUIRE) != w->ctl.switch_count)
		return;
	__atomic_store_n(&w->stall_reported, true, __ATOMIC_RELAXED);
	memcpy(name, f->name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	fiber_out_str(&o, "libfiber: stall: fiber ");
	fiber_out_uint(&o, f->id);
	if (name[0]) {
		fiber_out_str(&o, " \"");
		fiber_out_str(&o, name);
		fiber_out_str(&o, "\"");
	}
	fiber_out_str(&o, " has kept worker ");
	fiber_out_uint(&o, w->index);
	fiber_out_str(&o, " for ");
	fiber_out_ms(&o, w->stall_held_ns);
	fiber_out_str(&o, " without a preemption point: ");
	fiber_out_str(&o, why);
	fiber_out_str(&o, "\n");
	n = fiber_backtrace_uc(f, uc, pcs, STALL_FRAMES);
	if (n > 0)
		fiber_out_backtrace(&o, pcs, n, true);
	fiber_out_flush(&o);
	errno = saved_errno;
}
