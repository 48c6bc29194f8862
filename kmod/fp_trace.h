/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fiber_preempt's trace events: a slice ran out, the thread was sent to
 * the trampoline, or the preemption was deferred and why. Each names the
 * worker (tid), its user PC (where the timer interrupted it, or where it
 * last entered the kernel) and its slice.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM fiber_preempt

#if !defined(_FIBER_PREEMPT_FP_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _FIBER_PREEMPT_FP_TRACE_H

#include <linux/sched.h>
#include <linux/tracepoint.h>

/* Why a preemption was deferred: one counter of fiber_preempt_ctl each. */
#define FP_DEFER_REASONS				\
	EM(FP_DEFER_KERNEL,	"kernel")		\
	EM(FP_DEFER_UPCALL,	"in_upcall")		\
	EM(FP_DEFER_SIGNAL,	"signal")		\
	EM(FP_DEFER_OFF,	"preempt_off")		\
	EM(FP_DEFER_PC,		"pc")			\
	EM(FP_DEFER_VECTOR,	"vector")		\
	EM_END(FP_DEFER_RSEQ,	"rseq")

#ifndef _FIBER_PREEMPT_FP_TRACE_ENUM
#define _FIBER_PREEMPT_FP_TRACE_ENUM
#undef EM
#undef EM_END
#define EM(a, b)	a,
#define EM_END(a, b)	a
enum fp_defer {
	FP_DEFER_NONE,		/* not deferred: delivered */
	FP_DEFER_REASONS
};
#endif

/* The reasons' values, for tools that read the format files. */
#undef EM
#undef EM_END
#define EM(a, b)	TRACE_DEFINE_ENUM(a);
#define EM_END(a, b)	TRACE_DEFINE_ENUM(a);
FP_DEFER_REASONS

/* The reasons' names, for __print_symbolic(). */
#undef EM
#undef EM_END
#define EM(a, b)	{ a, b },
#define EM_END(a, b)	{ a, b }

DECLARE_EVENT_CLASS(fiber_preempt_slice,
	TP_PROTO(unsigned long pc, u64 slice_ns),
	TP_ARGS(pc, slice_ns),
	TP_STRUCT__entry(
		__field(unsigned long, pc)
		__field(u64, slice_ns)
		__field(pid_t, tid)
	),
	TP_fast_assign(
		__entry->pc = pc;
		__entry->slice_ns = slice_ns;
		__entry->tid = current->pid;
	),
	TP_printk("tid=%d pc=0x%lx slice_ns=%llu",
		  __entry->tid, __entry->pc, __entry->slice_ns)
);

/* The timer found the slice used up: no fiber switch for a whole slice. */
DEFINE_EVENT(fiber_preempt_slice, fiber_preempt_slice_expired,
	TP_PROTO(unsigned long pc, u64 slice_ns),
	TP_ARGS(pc, slice_ns)
);

/* The thread was interrupted at pc and now returns to the trampoline. */
DEFINE_EVENT(fiber_preempt_slice, fiber_preempt_delivered,
	TP_PROTO(unsigned long pc, u64 slice_ns),
	TP_ARGS(pc, slice_ns)
);

/* Not sent to the trampoline: retried after retry_us. */
TRACE_EVENT(fiber_preempt_deferred,
	TP_PROTO(unsigned long pc, u64 slice_ns, enum fp_defer reason),
	TP_ARGS(pc, slice_ns, reason),
	TP_STRUCT__entry(
		__field(unsigned long, pc)
		__field(u64, slice_ns)
		__field(pid_t, tid)
		__field(unsigned int, reason)
	),
	TP_fast_assign(
		__entry->pc = pc;
		__entry->slice_ns = slice_ns;
		__entry->tid = current->pid;
		__entry->reason = reason;
	),
	TP_printk("tid=%d pc=0x%lx slice_ns=%llu reason=%s",
		  __entry->tid, __entry->pc, __entry->slice_ns,
		  __print_symbolic(__entry->reason, FP_DEFER_REASONS))
);

#endif /* _FIBER_PREEMPT_FP_TRACE_H */

/* Out of the kernel tree: define_trace.h finds this file through -I$(src). */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE fp_trace
#include <trace/define_trace.h>
