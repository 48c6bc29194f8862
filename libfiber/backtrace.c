// SPDX-License-Identifier: MIT
/*
 * Backtraces of any fiber, by the same CFI walker the upcall uses
 * (unwind.c): the caller's own stack from here; a fiber switched out from
 * the switch frame fiber_switch() left on its stack; a preempted one from
 * its upcall frame, so the first address is the instruction it was
 * stopped at. The walk ends at the fiber's first frame, at a frame whose
 * object's CFI is not indexed (objects loaded after the scheduler
 * started), or after FIBER_UNWIND_MAX_FRAMES.
 *
 * Another fiber's stack is read while that fiber may start to run on
 * another worker: reads stay inside its stack, and its run count, read
 * before and after, tells a walk that raced with a run, which is tried
 * again. The result is a snapshot, as any backtrace of a live thread is.
 */
#include <errno.h>
#include <ucontext.h>

#include "internal.h"
#include "unwind.h"

#define BACKTRACE_TRIES	4

/*
 * Return addresses from r up to the fiber's first frame, reading only its
 * stack, [lo, hi); skips the first skip.
 */
static int walk(struct fiber_unwind_regs *r, uintptr_t lo, uintptr_t hi, void **pcs, int max,
		int skip)
{
	int n = 0, depth;

	for (depth = 0; depth < FIBER_UNWIND_MAX_FRAMES && n < max; depth++) {
		if (r->caller && r->pc == (uintptr_t)fiber_entry_ret)
			break;
		if (skip)
			skip--;
		else
			pcs[n++] = (void *)(uintptr_t)r->pc;
		if (fiber_unwind_step(r, lo, hi, NULL) != 1)
			break;
	}
	return n;
}

int fiber_backtrace_uc(const struct fiber *f, const ucontext_t *uc, void **pcs, int max)
{
	struct fiber_unwind_regs r = { 0 };

	fiber_unwind_from_ucontext(&r, uc);
	/* Redirected to the upcall, not yet in it: the fiber is still where it was. */
	if (r.pc == (uintptr_t)fiber_upcall_entry)
		r.pc = fiber_tls_worker->ctl.upcall_pc;
	return walk(&r, f->stack_lo, f->stack_hi, pcs, max, 0);
}

/* Whether a worker runs f, or is switching to or from it. */
static bool on_a_worker(const struct fiber *f)
{
	unsigned int i;

	for (i = 0; i < fiber_sched.nr_workers; i++)
		if (__atomic_load_n(&fiber_sched.workers[i].current, __ATOMIC_ACQUIRE) == f)
			return true;
	return false;
}

int fiber_backtrace(fiber_t *f, void **pcs, int max)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber_upcall_frame *frame;
	struct fiber_unwind_regs r = { 0 };
	ucontext_t uc;
	uintptr_t lo, hi, sp;
	uint64_t runs;
	int tries, n;

	if (!f || max < 0 || (max && !pcs))
		return -EINVAL;
	if (w && w->current == f) {
		if (getcontext(&uc))
			return -EFAULT;
		fiber_unwind_from_ucontext(&r, &uc);
		r.caller = true;
		/* Without this function's own frame. */
		return walk(&r, f->stack_lo, f->stack_hi, pcs, max, 1);
	}
	for (tries = 0; tries < BACKTRACE_TRIES; tries++) {
		runs = __atomic_load_n(&f->stats.runs, __ATOMIC_ACQUIRE);
		if (on_a_worker(f))
			return -EBUSY;
		/* Returned, or never run: nothing on its stack. */
		if (__atomic_load_n(&f->state, __ATOMIC_ACQUIRE) == FIBER_DONE || !runs)
			return 0;
		lo = __atomic_load_n(&f->stack_lo, __ATOMIC_RELAXED);
		hi = __atomic_load_n(&f->stack_hi, __ATOMIC_RELAXED);
		frame = __atomic_load_n(&f->upcall_frame, __ATOMIC_ACQUIRE);
		sp = frame ? (uintptr_t)frame : (uintptr_t)__atomic_load_n(&f->sp, __ATOMIC_ACQUIRE);
		/*
		 * Off its stack: a dump's fiber was freed and is being spawned
		 * again (its fields zeroed, then set).
		 */
		if (!lo || sp < lo || sp + (frame ? sizeof(*frame) : SWITCH_FRAME_SIZE) > hi)
			continue;
		if (frame)
			fiber_unwind_from_upcall(&r, frame);
		else
			fiber_unwind_from_switch(&r, sp);
		n = walk(&r, lo, hi, pcs, max, 0);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&f->stats.runs, __ATOMIC_RELAXED) == runs && !on_a_worker(f))
			return n;
	}
	return -EBUSY;
}
