// SPDX-License-Identifier: MIT
/*
 * Signal masks per fiber.
 *
 * A thread's signal mask is the worker's, shared by its fibers, and the
 * module (like the signal backend) preempts only while the mask is the
 * one the worker started with: a changed mask is what a running signal
 * handler looks like. So a fiber that blocked a signal and then yielded
 * left its mask to the next fiber, which then was never preempted.
 *
 * libfiber therefore provides pthread_sigmask() and sigprocmask() (the
 * program's calls bind to these): from a fiber, the mask the call leaves
 * is recorded as that fiber's, the worker puts its own mask back when the
 * fiber stops, and the fiber's when it resumes. Only fibers whose mask
 * differs from the worker's pay for it (one system call each way). A
 * fiber with signals blocked is itself not preempted, as in a handler;
 * its siblings are. A mask changed inside a signal handler is not
 * recorded: the handler's return restores the mask it interrupted.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* The kernel's sigset_t: the first 64 signals. */
#define KERNEL_SIGSET_SIZE	8
/* glibc's own signals (cancellation, setxid), which it never lets a program block. */
#define GLIBC_INTERNAL_SIGNALS	(3ULL << 31)

static bool same_mask(const sigset_t *a, const sigset_t *b)
{
	return !memcmp(a, b, KERNEL_SIGSET_SIZE);
}

/* rt_sigprocmask as glibc calls it. Returns 0 or an errno value. */
static int change_mask(int how, const sigset_t *set, sigset_t *old)
{
	sigset_t filtered;
	uint64_t bits;
	int saved = errno, err = 0;

	if (set) {
		memcpy(&bits, set, sizeof(bits));
		if (bits & GLIBC_INTERNAL_SIGNALS) {
			filtered = *set;
			bits &= ~GLIBC_INTERNAL_SIGNALS;
			memcpy(&filtered, &bits, sizeof(bits));
			set = &filtered;
		}
	}
	if (syscall(SYS_rt_sigprocmask, how, set, old, KERNEL_SIGSET_SIZE))
		err = errno;
	errno = saved;
	return err;
}

void fiber_sigmask_apply(const sigset_t *mask)
{
	change_mask(SIG_SETMASK, mask, NULL);
}

/* The mask the running fiber should have: its own, or the worker's. */
static const sigset_t *expected_mask(struct fiber_worker *w)
{
	return w->current->own_sigmask ? &w->current->sigmask : &w->sigmask;
}

static int fiber_change_mask(int how, const sigset_t *set, sigset_t *old)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *f;
	sigset_t before;
	int err;

	if (!w || !w->current || !set)
		return change_mask(how, set, old);
	memset(&before, 0, sizeof(before));
	err = change_mask(how, set, &before);
	if (err)
		return err;
	if (old)
		*old = before;
	f = w->current;
	/* Inside a handler (or after a raw system call): not the fiber's own. */
	if (!same_mask(&before, expected_mask(w)))
		return 0;
	memset(&f->sigmask, 0, sizeof(f->sigmask));
	change_mask(SIG_SETMASK, NULL, &f->sigmask);
	f->own_sigmask = !same_mask(&f->sigmask, &w->sigmask);
	return 0;
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	return fiber_change_mask(how, set, old);
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	int err = fiber_change_mask(how, set, old);

	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}
