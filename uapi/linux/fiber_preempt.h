/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * fiber_preempt: kernel-timed preemption upcalls for user-space fibers.
 *
 * A worker thread registers itself on /dev/fiber_preempt with the address
 * of a per-thread control block (struct fiber_preempt_ctl) and of an upcall
 * trampoline. While the thread is on a CPU the module runs a timer; when
 * one fiber has held the thread for a whole slice (the switch counter did
 * not move) and the thread was interrupted in user mode at a preemptible
 * PC, the module stores the interrupted PC in the control block and
 * resumes the thread at the trampoline instead. No signal frame is built.
 *
 * Every field below says who writes it and how. "user" means the
 * registered thread itself; "kernel" means the module, from the thread's
 * own timer interrupt, i.e. always on the thread's CPU while the thread
 * is interrupted, so user reads of kernel fields need no atomics.
 */
#ifndef _UAPI_LINUX_FIBER_PREEMPT_H
#define _UAPI_LINUX_FIBER_PREEMPT_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define FIBER_PREEMPT_DEVICE		"/dev/fiber_preempt"
/*
 * 1: the first interface.
 * 2: FIBER_PREEMPT_REG_SAVES_SVE and ctl->sve_live; deferred_kernel split
 *    into deferred_kernel, deferred_rseq and deferred_vector.
 */
#define FIBER_PREEMPT_API_VERSION	2

/* Bounds the module enforces on a slice, in nanoseconds. */
#define FIBER_PREEMPT_MIN_SLICE_NS	10000ULL		/* 10 us */
#define FIBER_PREEMPT_MAX_SLICE_NS	10000000000ULL		/* 10 s */

/* Most code ranges a registration may name as preemptible. */
#define FIBER_PREEMPT_MAX_RANGES	8

/* struct fiber_preempt_ctl must be aligned to its own size. */
#define FIBER_PREEMPT_CTL_ALIGN		128

/*
 * Per-thread control block, in the registered thread's private memory
 * (a shared mapping gives EOPNOTSUPP). The module pins the page that holds
 * it for as long as the registration lives, charged to the user's
 * RLIMIT_MEMLOCK unless the thread has CAP_IPC_LOCK (ENOMEM past it).
 */
struct fiber_preempt_ctl {
	/* user, before registering: sizeof(struct fiber_preempt_ctl). */
	__u32 size;
	/*
	 * user, plain stores: non-zero while the running fiber must not be
	 * preempted (a nesting count). kernel: READ_ONCE.
	 */
	__u32 preempt_off;
	/*
	 * user, plain store, at every fiber switch: incremented. kernel:
	 * READ_ONCE; unchanged for a whole slice means one fiber held the
	 * thread for that slice. A delivery starts the next slice: still
	 * unchanged a slice after it means the upcall declined, and the
	 * kernel tries again.
	 */
	__u64 switch_count;
	/*
	 * kernel, on delivery: the user PC to resume at: where the thread was
	 * interrupted, or the abort handler of the rseq critical section it
	 * was interrupted in (the kernel has then cleared rseq_cs).
	 * user: the trampoline returns there.
	 */
	__u64 upcall_pc;
	/*
	 * kernel sets 1 on delivery; user clears it once the interrupted
	 * context is saved. Nothing is delivered while it is set.
	 */
	__u32 in_upcall;
	/*
	 * kernel sets 1 when it wanted to preempt but could not; user sets
	 * it when it declines an upcall (returns without a switch, see
	 * switch_count), and clears it when it switches fibers.
	 */
	__u32 pending;
	/* kernel, plain increments; user reads. Statistics. */
	__u64 fired;		/* a slice ran out with no fiber switch */
	__u64 delivered;	/* the thread was sent to the trampoline */
	__u64 deferred_off;	/* ... not sent: preempt_off was set */
	__u64 deferred_pc;	/* ... not sent: PC not in a preemptible range */
	__u64 deferred_upcall;	/* ... not sent: in_upcall was set */
	__u64 deferred_kernel;	/* ... not sent: interrupted in kernel mode */
	/*
	 * ... not sent: the thread's signal mask is not the one it had when
	 * it registered, i.e. it is running a signal handler (or has
	 * blocked signals itself). A handler must return before its fiber
	 * may be switched out.
	 */
	__u64 deferred_signal;
	/* ... not sent: the thread's rseq state could not be read */
	__u64 deferred_rseq;
	/*
	 * ... not sent: live vector state the trampoline does not save
	 * (arm64: SVE registers without FIBER_PREEMPT_REG_SAVES_SVE, SME
	 * streaming mode or ZA storage)
	 */
	__u64 deferred_vector;
	/*
	 * kernel, on delivery, arm64 with FIBER_PREEMPT_REG_SAVES_SVE: 1 if
	 * the thread's SVE registers were live when it was interrupted
	 * (Z0-Z31 beyond their low 128 bits, P0-P15 and FFR hold state), else
	 * 0. user: the trampoline then saves them at the vector length the
	 * CPU reports (RDVL). 0 on other architectures.
	 */
	__u32 sve_live;
	__u32 __pad;
	__u64 __reserved[2];
};

/* A half-open range [start, end) of user code addresses. */
struct fiber_preempt_range {
	__u64 start;
	__u64 end;
};

/*
 * Registration flags.
 *
 * FIBER_PREEMPT_REG_SAVES_SVE (arm64): the trampoline saves and restores
 * the SVE registers when ctl->sve_live is set, so the module may
 * deliver while they are live. Without it the module defers while they
 * are live (until a system call discards them). Accepted and without
 * effect on other architectures.
 */
#define FIBER_PREEMPT_REG_SAVES_SVE	(1U << 0)
#define FIBER_PREEMPT_REG_FLAGS		FIBER_PREEMPT_REG_SAVES_SVE

/* Argument of FIBER_PREEMPT_IOC_REGISTER, written by user. */
struct fiber_preempt_register {
	__u32 size;		/* sizeof(struct fiber_preempt_register) */
	__u32 flags;		/* FIBER_PREEMPT_REG_*; others must be 0 */
	__u64 ctl;		/* address of the thread's fiber_preempt_ctl */
	__u64 upcall;		/* trampoline entry point */
	__u64 upcall_end;	/* [upcall, upcall_end) is never interrupted */
	__u64 slice_ns;		/* 0: the module's default slice */
	__u32 nr_ranges;	/* 0: any user PC may be preempted */
	__u32 __pad;		/* must be 0 */
	struct fiber_preempt_range ranges[FIBER_PREEMPT_MAX_RANGES];
};

/* Argument of FIBER_PREEMPT_IOC_VERSION, written by kernel. */
struct fiber_preempt_version {
	__u32 api_version;	/* FIBER_PREEMPT_API_VERSION */
	__u32 ctl_size;		/* sizeof(struct fiber_preempt_ctl) */
	__u32 register_size;	/* sizeof(struct fiber_preempt_register) */
	__u32 __pad;
	__u64 default_slice_ns;
	__u64 min_slice_ns;
	__u64 max_slice_ns;
};

#define FIBER_PREEMPT_IOC_MAGIC		0xF1

#define FIBER_PREEMPT_IOC_VERSION \
	_IOR(FIBER_PREEMPT_IOC_MAGIC, 0x00, struct fiber_preempt_version)
#define FIBER_PREEMPT_IOC_REGISTER \
	_IOW(FIBER_PREEMPT_IOC_MAGIC, 0x01, struct fiber_preempt_register)
#define FIBER_PREEMPT_IOC_UNREGISTER \
	_IO(FIBER_PREEMPT_IOC_MAGIC, 0x02)

#endif /* _UAPI_LINUX_FIBER_PREEMPT_H */
