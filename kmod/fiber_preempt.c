// SPDX-License-Identifier: GPL-2.0
/*
 * fiber_preempt: kernel-timed preemption upcalls for user-space fibers.
 *
 * Design
 * ------
 * A worker thread of a user-space fiber scheduler registers itself. From
 * then on a per-thread hrtimer measures the thread's on-CPU time: a preempt
 * notifier starts the timer when the thread is scheduled in and cancels it
 * when the thread is scheduled out, so a blocked or runnable-but-waiting
 * worker costs nothing and the slice is CPU time, not wall time.
 *
 * The library bumps ctl->switch_count at every fiber switch. When the timer
 * expires and the count has not moved since the slice began, one fiber has
 * held the thread for a whole slice. If the thread was interrupted in user
 * mode at a PC the library declared preemptible, outside the trampoline,
 * with ctl->preempt_off and ctl->in_upcall clear and the signal mask it
 * registered with (a changed mask means a signal handler is running, and
 * a handler must not be switched away from), the callback saves the
 * interrupted PC in ctl->upcall_pc and rewrites the saved user PC to the
 * trampoline. The thread leaves the interrupt already inside the
 * trampoline, which saves every register and switches fibers: no signal
 * frame, no sigreturn, no -EINTR in a syscall. Otherwise it sets
 * ctl->pending and retries after retry_us, as Go's sysmon retries. The
 * library may decline an upcall (it walks the fiber's stack and finds a
 * frame that must not be interrupted) by returning to the interrupted
 * PC without a switch: the module tries again a slice after the delivery,
 * which started the next slice (one timer interrupt a preemption). Each
 * retry of a deferred preemption waits twice as long as the one before,
 * up to the slice: a thread that stays unpreemptible (a long section with
 * preemption off, an upcall slowed down by an emulator) is not held in an
 * interrupt storm, and a fiber switch starts again from retry_us.
 *
 * rseq: a thread interrupted inside an rseq critical section must resume
 * at the section's abort handler, or the section would complete after
 * other fibers ran on this thread. The library cannot do this itself: if
 * the kernel handles rseq on this same return to user space (the thread
 * was also preempted or migrated), it sees the trampoline's PC, outside
 * the section, and clears rseq_cs before the trampoline could look.
 * Since 6.19 that check (rseq_update_user_cs(), formerly rseq_ip_fixup())
 * runs elsewhere on the way out (on x86 last, after the exit work), but
 * still reads the PC from pt_regs, so the same holds. The callback applies
 * the abort here, as the kernel's fix-up would, and stores the abort
 * handler as the PC to return to; the kernel then finds rseq_cs clear.
 * rseq time-slice extensions (CONFIG_RSEQ_SLICE_EXTENSION, off in
 * Debian's 7.x) are not looked at: a fiber that asked for one is switched
 * away from like any other.
 *
 * Vector state: the trampoline saves every register the interrupted code
 * may hold. On arm64 the SVE registers hold state only after SVE code ran
 * and until the next system call (TIF_SVE); the callback then tells the
 * trampoline so (ctl->sve_live) if the registration says
 * its trampoline saves them, and defers otherwise, as it does while SME
 * streaming mode or ZA is on, which no trampoline saves yet.
 *
 * Tracing: each expired slice, delivery and deferral (with its reason,
 * which is also the ctl counter it bumps) is an event of the fiber_preempt
 * trace system (fp_trace.h). A disabled event costs a static branch.
 *
 * Context and locking
 * -------------------
 * Everything about a registration is touched only on the thread's own CPU,
 * by the thread or by interrupts taken while it runs, so no lock is
 * needed:
 *  - sched_in runs with preemption off: it starts the timer, pinned to
 *    this CPU (HRTIMER_MODE_REL_PINNED_HARD, so the callback runs in hard
 *    irq with the interrupted registers in get_irq_regs()).
 *  - sched_out runs with the rq lock held and irqs off, so it can only
 *    try to cancel; the callback cannot be running, since it would run on
 *    this CPU with irqs on.
 *  - The registration is found from current->preempt_notifiers, which only
 *    current changes. The control page is pinned and written through the
 *    kernel's linear mapping, so the callback never faults.
 *
 * Lifetime
 * --------
 * A preempt notifier may only be removed by its own task, and must be
 * removed before the task is freed. A registration is therefore ended in
 * the thread's own context: by FIBER_PREEMPT_IOC_UNREGISTER, by the
 * sched_process_exit tracepoint (do_exit, any cause, including SIGKILL),
 * or by the sched_process_exec tracepoint (the new program knows nothing
 * of the old control page). Both come late: exit_mm() has already cleared
 * the tid pthread_join() waits on, and exec_mmap() has released a vfork
 * parent, so by then the control block may be another thread's memory (a
 * joiner's to free) or another process's (the vfork parent's). From
 * PF_EXITING, which do_exit() sets before exit_mm(), once exec has
 * switched mm, and once a vfork child's vfork_done is gone, the timer
 * therefore writes nothing and does not re-arm itself (fp_ctl_owned());
 * the tracepoint still ends the registration. Each registration holds a
 * module reference, so the module cannot be unloaded under one. Closing
 * the file does not end registrations: other threads of the process may
 * still use theirs.
 *
 * Rejected alternatives: a signal (Go's SIGURG) costs a full signal frame
 * and turns slow syscalls into -EINTR; task_work runs after signal
 * delivery and only on the next kernel exit; a per-CPU timer would have to
 * be re-targeted at every context switch anyway.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/rseq.h>
#include <linux/sched.h>
#include <linux/sched/user.h>
#include <linux/signal.h>
#include <linux/slab.h>
#include <linux/tracepoint.h>
#include <linux/uaccess.h>
#include <asm/irq_regs.h>

#include <linux/fiber_preempt.h>

#include "fp_arch.h"
#include "fp_compat.h"

#define CREATE_TRACE_POINTS
#include "fp_trace.h"

#if !IS_ENABLED(CONFIG_PREEMPT_NOTIFIERS)
#error "fiber_preempt needs CONFIG_PREEMPT_NOTIFIERS"
#endif

static unsigned int default_slice_us = 1000;
module_param(default_slice_us, uint, 0444);
MODULE_PARM_DESC(default_slice_us, "Slice when a registration gives none, in us (default 1000)");

static unsigned int retry_us = 20;
module_param(retry_us, uint, 0444);
MODULE_PARM_DESC(retry_us, "Delay before retrying a deferred preemption, in us (default 20; doubles while it stays deferred)");

static unsigned int max_registrations = 4096;
module_param(max_registrations, uint, 0444);
MODULE_PARM_DESC(max_registrations, "Most threads registered at once (default 4096)");

struct fp_reg {
	struct preempt_notifier notifier;
	struct hrtimer timer;
	struct task_struct *task;	/* compared only: outlives the registration */
	struct mm_struct *mm;		/* compared only, never dereferenced */
	struct page *page;		/* the pinned page holding ctl */
	struct user_struct *user;	/* charged the page, or NULL (CAP_IPC_LOCK) */
	sigset_t blocked;		/* the thread's signal mask at registration */
	struct fiber_preempt_ctl *ctl;	/* ctl through the linear mapping */
	u64 upcall;
	u64 upcall_end;
	u64 slice_ns;
	u64 seen_switch;		/* ctl->switch_count when the slice began */
	u64 used_ns;			/* on-CPU time of the current slice */
	u64 retry_ns;			/* delay of the next retry in this slice */
	bool delivered;			/* the last firing sent the thread to the upcall */
	bool vfork_child;		/* registered by a vfork child, in its parent's memory */
	u64 on_cpu_since;		/* on the CPU since, and not yet in used_ns */
	u32 flags;			/* FIBER_PREEMPT_REG_* */
	u32 nr_ranges;
	struct fiber_preempt_range ranges[FIBER_PREEMPT_MAX_RANGES];
};

static atomic_t fp_nr_registrations = ATOMIC_INIT(0);
static u64 fp_retry_ns;
static struct preempt_ops fp_preempt_ops;

static struct fp_reg *fp_reg_of(struct preempt_notifier *pn)
{
	return container_of(pn, struct fp_reg, notifier);
}

static struct fp_reg *fp_current_reg(void)
{
	struct preempt_notifier *pn;

	hlist_for_each_entry(pn, &current->preempt_notifiers, link)
		if (pn->ops == &fp_preempt_ops)
			return fp_reg_of(pn);
	return NULL;
}

/*
 * Bring used_ns up to date; a fiber switch since the slice began resets
 * it, but a switch after a delivery comes from the upcall, at once: the
 * next fiber's slice began with the delivery, which reset used_ns.
 */
static void fp_account(struct fp_reg *reg, u64 now)
{
	u64 sw = READ_ONCE(reg->ctl->switch_count);

	if (sw != reg->seen_switch) {
		reg->seen_switch = sw;
		reg->retry_ns = fp_retry_ns;
		if (reg->delivered)
			reg->used_ns += now - reg->on_cpu_since;
		else
			reg->used_ns = 0;
		reg->delivered = false;
	} else {
		reg->used_ns += now - reg->on_cpu_since;
	}
	reg->on_cpu_since = now;
}

static u64 fp_time_left(struct fp_reg *reg)
{
	if (reg->used_ns >= reg->slice_ns)
		return reg->retry_ns;
	return reg->slice_ns - reg->used_ns;
}

/* Preemption is off; the thread is current on this CPU. */
static void fp_arm(struct fp_reg *reg)
{
	fp_account(reg, ktime_get_ns());
	hrtimer_start(&reg->timer, ns_to_ktime(fp_time_left(reg)),
		      HRTIMER_MODE_REL_PINNED_HARD);
}

static void fp_sched_in(struct preempt_notifier *pn, int cpu)
{
	struct fp_reg *reg = fp_reg_of(pn);

	/* Asleep or waiting for a CPU since sched_out: not the slice's time. */
	reg->on_cpu_since = ktime_get_ns();
	fp_arm(reg);
}

static void fp_sched_out(struct preempt_notifier *pn, struct task_struct *next)
{
	struct fp_reg *reg = fp_reg_of(pn);

	hrtimer_try_to_cancel(&reg->timer);
	fp_account(reg, ktime_get_ns());
}

static struct preempt_ops fp_preempt_ops = {
	.sched_in = fp_sched_in,
	.sched_out = fp_sched_out,
};

static bool fp_pc_preemptible(struct fp_reg *reg, u64 pc)
{
	u32 i;

	if (pc >= reg->upcall && pc < reg->upcall_end)
		return false;
	if (!reg->nr_ranges)
		return true;
	for (i = 0; i < reg->nr_ranges; i++)
		if (pc >= reg->ranges[i].start && pc < reg->ranges[i].end)
			return true;
	return false;
}

/*
 * The PC the trampoline should return to: pc, or the abort handler of the
 * rseq critical section pc is in. False when the thread's rseq state
 * cannot be read without faulting, or the abort handler lacks the
 * thread's signature (the kernel's own fixup will deal with that one).
 */
static bool fp_rseq_resume_pc(u64 *pc)
{
	struct rseq __user *rseq = fp_rseq_area(current);
	struct rseq_cs cs;
	u64 cs_ptr;
	u32 sig;

	if (!rseq)
		return true;
	if (copy_from_user_nofault(&cs_ptr, &rseq->rseq_cs, sizeof(cs_ptr)))
		return false;
	if (!cs_ptr)
		return true;
	if (copy_from_user_nofault(&cs, (void __user *)(uintptr_t)cs_ptr, sizeof(cs)))
		return false;
	if (*pc - cs.start_ip < cs.post_commit_offset) {
		void __user *sigp = (void __user *)(uintptr_t)(cs.abort_ip - sizeof(sig));

		if (copy_from_user_nofault(&sig, sigp, sizeof(sig)) ||
		    sig != fp_rseq_sig(current))
			return false;
		*pc = cs.abort_ip;
	}
	cs_ptr = 0;
	return !fp_copy_to_user_nofault(&rseq->rseq_cs, &cs_ptr, sizeof(cs_ptr));
}

/*
 * Try to send the interrupted thread to the trampoline. Returns
 * FP_DEFER_NONE if it was sent, else the reason it was not.
 */
static enum fp_defer fp_try_deliver(struct fp_reg *reg)
{
	struct fiber_preempt_ctl *ctl = reg->ctl;
	struct pt_regs *regs = get_irq_regs();
	u32 sve_live;
	u64 pc;

	if (!regs || !fp_arch_user_regs(regs))
		return FP_DEFER_KERNEL;
	if (READ_ONCE(ctl->in_upcall))
		return FP_DEFER_UPCALL;
	if (!sigequalsets(&current->blocked, &reg->blocked))
		return FP_DEFER_SIGNAL;
	if (READ_ONCE(ctl->preempt_off))
		return FP_DEFER_OFF;
	pc = instruction_pointer(regs);
	if (!fp_pc_preemptible(reg, pc))
		return FP_DEFER_PC;
	if (!fp_arch_vector_state(reg->flags, &sve_live))
		return FP_DEFER_VECTOR;
	if (!fp_rseq_resume_pc(&pc))
		return FP_DEFER_RSEQ;

	/* Before the redirect, which replaces the interrupted PC. */
	trace_fiber_preempt_delivered(instruction_pointer(regs), reg->slice_ns);
	WRITE_ONCE(ctl->sve_live, sve_live);
	WRITE_ONCE(ctl->upcall_pc, pc);
	WRITE_ONCE(ctl->in_upcall, 1);
	fp_arch_redirect(regs, reg->upcall);
	return FP_DEFER_NONE;
}

/* The counter of ctl that an outcome of fp_try_deliver() bumps. */
static u64 *fp_counter(struct fiber_preempt_ctl *ctl, enum fp_defer why)
{
	switch (why) {
	case FP_DEFER_KERNEL:
		return &ctl->deferred_kernel;
	case FP_DEFER_UPCALL:
		return &ctl->deferred_upcall;
	case FP_DEFER_SIGNAL:
		return &ctl->deferred_signal;
	case FP_DEFER_OFF:
		return &ctl->deferred_off;
	case FP_DEFER_PC:
		return &ctl->deferred_pc;
	case FP_DEFER_VECTOR:
		return &ctl->deferred_vector;
	case FP_DEFER_RSEQ:
		return &ctl->deferred_rseq;
	case FP_DEFER_NONE:
		break;
	}
	return &ctl->delivered;
}

/*
 * Whether current's memory, which holds ctl, is still its own: not from
 * do_exit() on (PF_EXITING), nor once exec has switched mm, nor once a
 * vfork child has given its parent the memory back (exec_mmap() does so
 * before the switch). See Lifetime.
 */
static bool fp_ctl_owned(struct fp_reg *reg)
{
	return current->mm == reg->mm && !(current->flags & PF_EXITING) &&
	       (!reg->vfork_child || READ_ONCE(current->vfork_done));
}

/* Where current was interrupted in user mode, or last entered the kernel. */
static unsigned long fp_user_pc(void)
{
	return instruction_pointer(task_pt_regs(current));
}

static enum hrtimer_restart fp_timer_fn(struct hrtimer *timer)
{
	struct fp_reg *reg = container_of(timer, struct fp_reg, timer);
	struct fiber_preempt_ctl *ctl = reg->ctl;
	u64 now = ktime_get_ns(), next;
	enum fp_defer why;

	/*
	 * CPU hotplug moves even pinned timers off a dying CPU: the callback
	 * may then run under another task. The next sched_in re-arms it.
	 */
	if (unlikely(current != reg->task || !fp_ctl_owned(reg)))
		return HRTIMER_NORESTART;
	fp_account(reg, now);
	reg->delivered = false;
	/*
	 * A delivery starts the next slice: the upcall switches fibers (or
	 * gives this one a new slice) at once, and the next firing, a slice
	 * later, finds the next fiber's slice run out. No firing in between:
	 * a preemption costs one interrupt. If the library declined the
	 * upcall (a frame of the fiber's stack may not be interrupted),
	 * switch_count did not move and that firing tries again. A deferred
	 * preemption is retried retry_us later, each retry after waiting
	 * twice as long, up to the slice.
	 */
	next = fp_time_left(reg);
	if (reg->used_ns >= reg->slice_ns) {
		reg->retry_ns = min(reg->retry_ns * 2, max(reg->slice_ns, fp_retry_ns));
		ctl->fired++;
		trace_fiber_preempt_slice_expired(fp_user_pc(), reg->slice_ns);
		why = fp_try_deliver(reg);
		(*fp_counter(ctl, why))++;
		if (why != FP_DEFER_NONE) {
			trace_fiber_preempt_deferred(fp_user_pc(), reg->slice_ns, why);
			WRITE_ONCE(ctl->pending, 1);
		} else {
			reg->delivered = true;
			reg->used_ns = 0;
			next = reg->slice_ns;
		}
	}
	/*
	 * From now, where the slice's accounting starts, not from the old
	 * expiry as hrtimer_forward_now() would: the interrupt's latency
	 * varies, and a slice counted from now but timed from the expiry
	 * ends a little after the next firing about every other time,
	 * which then re-arms for the remainder and costs one more interrupt.
	 */
	hrtimer_set_expires(timer, ns_to_ktime(now + next));
	return HRTIMER_RESTART;
}

/* Unpins the control page and gives back its charge. Atomic context is fine. */
static void fp_unpin(struct fp_reg *reg)
{
	if (reg->page)
		unpin_user_page(reg->page);
	if (reg->user) {
		atomic_long_dec(&reg->user->locked_vm);
		free_uid(reg->user);
		reg->user = NULL;
	}
}

/*
 * The control page stays pinned for as long as the registration lives, so
 * it is charged to the user's RLIMIT_MEMLOCK as io_uring charges its
 * registered buffers: per user, across all their processes, one page per
 * registration (threads whose control blocks share a page are charged a
 * page each), unless the caller has CAP_IPC_LOCK. One user thus cannot
 * fill max_registrations beyond what their limit allows.
 */
static int fp_charge_user(struct fp_reg *reg)
{
	struct user_struct *user = current_user();
	unsigned long limit, locked;

	if (capable(CAP_IPC_LOCK))
		return 0;
	limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	locked = atomic_long_read(&user->locked_vm);
	do {
		if (locked + 1 > limit)
			return -ENOMEM;
	} while (!atomic_long_try_cmpxchg(&user->locked_vm, &locked, locked + 1));
	reg->user = get_uid(user);
	return 0;
}

/*
 * Only private memory may hold a control block. The module writes it from
 * hard irq through the kernel's mapping of the pinned page, behind the
 * back of whatever owns a shared page: a file's page would be changed
 * without being dirtied for writeback (a long-term pin of page cache is
 * what 6.5 stopped allowing), and shmem or another process would see
 * counters change under them. A private page, once pinned for writing,
 * is an anonymous page of this process alone (copy-on-write was broken
 * by the pin). The mapping is looked at before the pin, so every kernel
 * gives the same -EOPNOTSUPP, and the page after it, in case the memory
 * was remapped in between.
 */
static int fp_pin_ctl(struct fp_reg *reg, unsigned long addr)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	int ret = 0;

	mmap_read_lock(mm);
	vma = find_vma(mm, addr);
	if (!vma || vma->vm_start > addr)
		ret = -EFAULT;
	else if (vma->vm_flags & VM_MAYSHARE)
		ret = -EOPNOTSUPP;
	mmap_read_unlock(mm);
	if (ret)
		return ret;

	ret = fp_charge_user(reg);
	if (ret)
		return ret;
	ret = pin_user_pages_fast(addr & PAGE_MASK, 1, FOLL_WRITE | FOLL_LONGTERM,
				  &reg->page);
	if (ret == 1 && folio_test_anon(page_folio(reg->page)))
		return 0;
	if (ret == 1) {
		unpin_user_page(reg->page);
		ret = -EOPNOTSUPP;
	}
	reg->page = NULL;
	fp_unpin(reg);		/* the charge alone */
	return ret < 0 ? ret : -EFAULT;
}

/* Ends current's registration. Callable in atomic context. */
static void fp_unregister_current(struct fp_reg *reg)
{
	preempt_disable();
	preempt_notifier_unregister(&reg->notifier);
	hrtimer_cancel(&reg->timer);
	preempt_enable();

	fp_unpin(reg);
	kfree(reg);
	atomic_dec(&fp_nr_registrations);
	module_put(THIS_MODULE);
}

static int fp_check_ranges(const struct fiber_preempt_register *args)
{
	u32 i;

	if (args->nr_ranges > FIBER_PREEMPT_MAX_RANGES)
		return -EINVAL;
	for (i = 0; i < FIBER_PREEMPT_MAX_RANGES; i++) {
		const struct fiber_preempt_range *r = &args->ranges[i];

		if (i >= args->nr_ranges) {
			if (r->start || r->end)
				return -EINVAL;
			continue;
		}
		if (r->start >= r->end || r->end > TASK_SIZE)
			return -EINVAL;
	}
	return 0;
}

static int fp_check_register(struct fiber_preempt_register *args)
{
	if ((args->flags & ~FIBER_PREEMPT_REG_FLAGS) || args->__pad)
		return -EINVAL;
	if (!args->ctl || args->ctl % FIBER_PREEMPT_CTL_ALIGN)
		return -EINVAL;
	if (args->ctl >= TASK_SIZE)
		return -EFAULT;
	if (!args->upcall || args->upcall >= args->upcall_end ||
	    args->upcall_end > TASK_SIZE)
		return -EINVAL;
	if (!args->slice_ns)
		args->slice_ns = (u64)default_slice_us * NSEC_PER_USEC;
	if (args->slice_ns < FIBER_PREEMPT_MIN_SLICE_NS ||
	    args->slice_ns > FIBER_PREEMPT_MAX_SLICE_NS)
		return -ERANGE;
	return fp_check_ranges(args);
}

static long fp_ioctl_register(void __user *argp)
{
	struct fiber_preempt_register args;
	struct fp_reg *reg;
	u32 usize;
	int ret;

	if (get_user(usize, (u32 __user *)argp))
		return -EFAULT;
	if (usize < sizeof(args))
		return -EINVAL;
	/*
	 * As clone3() and openat2(): copy_struct_from_user() would read a
	 * tail of up to 4 GiB for non-zero bytes, seconds in the kernel that
	 * not even SIGKILL cuts short.
	 */
	if (usize > PAGE_SIZE)
		return -E2BIG;
	ret = copy_struct_from_user(&args, sizeof(args), argp, usize);
	if (ret)
		return ret;
	ret = fp_check_register(&args);
	if (ret)
		return ret;
	if (fp_current_reg())
		return -EBUSY;
	if (atomic_inc_return(&fp_nr_registrations) > max_registrations) {
		ret = -ENOSPC;
		goto out_count;
	}

	reg = kzalloc(sizeof(*reg), GFP_KERNEL);
	if (!reg) {
		ret = -ENOMEM;
		goto out_count;
	}
	ret = fp_pin_ctl(reg, args.ctl);
	if (ret)
		goto out_free;
	reg->ctl = page_address(reg->page) + offset_in_page(args.ctl);
	if (READ_ONCE(reg->ctl->size) < sizeof(*reg->ctl)) {
		ret = -EINVAL;
		goto out_unpin;
	}

	reg->task = current;
	reg->mm = current->mm;
	reg->vfork_child = current->vfork_done;
	reg->blocked = current->blocked;
	reg->upcall = args.upcall;
	reg->upcall_end = args.upcall_end;
	reg->slice_ns = args.slice_ns;
	reg->flags = args.flags;
	reg->nr_ranges = args.nr_ranges;
	memcpy(reg->ranges, args.ranges, sizeof(reg->ranges));
	reg->seen_switch = READ_ONCE(reg->ctl->switch_count);
	reg->retry_ns = fp_retry_ns;
	fp_hrtimer_setup(&reg->timer, fp_timer_fn, CLOCK_MONOTONIC,
			 HRTIMER_MODE_REL_PINNED_HARD);
	preempt_notifier_init(&reg->notifier, &fp_preempt_ops);
	__module_get(THIS_MODULE);

	preempt_disable();
	preempt_notifier_register(&reg->notifier);
	reg->on_cpu_since = ktime_get_ns();
	fp_arm(reg);
	preempt_enable();
	return 0;

out_unpin:
	fp_unpin(reg);
out_free:
	kfree(reg);
out_count:
	atomic_dec(&fp_nr_registrations);
	return ret;
}

static long fp_ioctl_unregister(void)
{
	struct fp_reg *reg = fp_current_reg();

	if (!reg)
		return -ENOENT;
	fp_unregister_current(reg);
	return 0;
}

static long fp_ioctl_version(void __user *argp)
{
	struct fiber_preempt_version v = {
		.api_version = FIBER_PREEMPT_API_VERSION,
		.ctl_size = sizeof(struct fiber_preempt_ctl),
		.register_size = sizeof(struct fiber_preempt_register),
		.default_slice_ns = (u64)default_slice_us * NSEC_PER_USEC,
		.min_slice_ns = FIBER_PREEMPT_MIN_SLICE_NS,
		.max_slice_ns = FIBER_PREEMPT_MAX_SLICE_NS,
	};

	return copy_to_user(argp, &v, sizeof(v)) ? -EFAULT : 0;
}

static long fp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case FIBER_PREEMPT_IOC_VERSION:
		return fp_ioctl_version(argp);
	case FIBER_PREEMPT_IOC_REGISTER:
		return fp_ioctl_register(argp);
	case FIBER_PREEMPT_IOC_UNREGISTER:
		return fp_ioctl_unregister();
	default:
		return -ENOTTY;
	}
}

static const struct file_operations fp_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
	.unlocked_ioctl = fp_ioctl,
	.llseek = fp_no_llseek,
};

static struct miscdevice fp_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "fiber_preempt",
	.fops = &fp_fops,
	.mode = 0666,
};

/* Task exit and exec: end the task's registration in its own context. */
static void fp_end_current(void)
{
	struct fp_reg *reg;

	if (!atomic_read(&fp_nr_registrations))
		return;
	reg = fp_current_reg();
	if (reg)
		fp_unregister_current(reg);
}

static void fp_probe_exit(void *data, struct task_struct *p)
{
	if (p == current)
		fp_end_current();
}

static void fp_probe_exec(void *data, struct task_struct *p, pid_t old_pid,
			  struct linux_binprm *bprm)
{
	if (p == current)
		fp_end_current();
}

struct fp_probe {
	const char *name;
	void *func;
	struct tracepoint *tp;
};

static struct fp_probe fp_probes[] = {
	{ .name = "sched_process_exit", .func = fp_probe_exit },
	{ .name = "sched_process_exec", .func = fp_probe_exec },
};

static void fp_find_tracepoint(struct tracepoint *tp, void *priv)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(fp_probes); i++)
		if (!strcmp(tp->name, fp_probes[i].name))
			fp_probes[i].tp = tp;
}

static void fp_unregister_probes(int n)
{
	while (n--)
		tracepoint_probe_unregister(fp_probes[n].tp, fp_probes[n].func,
					    NULL);
	tracepoint_synchronize_unregister();
}

static int fp_register_probes(void)
{
	int i, ret;

	for_each_kernel_tracepoint(fp_find_tracepoint, NULL);
	for (i = 0; i < ARRAY_SIZE(fp_probes); i++) {
		if (!fp_probes[i].tp) {
			pr_err("tracepoint %s not found\n", fp_probes[i].name);
			ret = -ENOENT;
			goto fail;
		}
		ret = tracepoint_probe_register(fp_probes[i].tp,
						fp_probes[i].func, NULL);
		if (ret)
			goto fail;
	}
	return 0;
fail:
	fp_unregister_probes(i);
	return ret;
}

static int __init fp_init(void)
{
	u64 slice_ns = (u64)default_slice_us * NSEC_PER_USEC;
	int ret;

	BUILD_BUG_ON(sizeof(struct fiber_preempt_ctl) != FIBER_PREEMPT_CTL_ALIGN);
	BUILD_BUG_ON(offsetof(struct fiber_preempt_ctl, switch_count) != 8);
	BUILD_BUG_ON(offsetof(struct fiber_preempt_ctl, upcall_pc) != 16);
	BUILD_BUG_ON(offsetof(struct fiber_preempt_ctl, in_upcall) != 24);
	BUILD_BUG_ON(offsetof(struct fiber_preempt_ctl, fired) != 32);
	BUILD_BUG_ON(offsetof(struct fiber_preempt_ctl, sve_live) != 104);
	BUILD_BUG_ON(sizeof(struct fiber_preempt_register) != 176);
	BUILD_BUG_ON(sizeof(struct fiber_preempt_version) != 40);

	if (slice_ns < FIBER_PREEMPT_MIN_SLICE_NS ||
	    slice_ns > FIBER_PREEMPT_MAX_SLICE_NS) {
		pr_err("default_slice_us=%u out of range\n", default_slice_us);
		return -EINVAL;
	}
	fp_retry_ns = max_t(u64, (u64)retry_us * NSEC_PER_USEC,
			    FIBER_PREEMPT_MIN_SLICE_NS / 2);

	preempt_notifier_inc();
	ret = fp_register_probes();
	if (ret)
		goto out_dec;
	ret = misc_register(&fp_misc);
	if (ret)
		goto out_probes;
	pr_info("loaded: default slice %u us, retry %llu ns\n",
		default_slice_us, fp_retry_ns);
	return 0;

out_probes:
	fp_unregister_probes(ARRAY_SIZE(fp_probes));
out_dec:
	preempt_notifier_dec();
	return ret;
}

static void __exit fp_exit(void)
{
	misc_deregister(&fp_misc);
	fp_unregister_probes(ARRAY_SIZE(fp_probes));
	preempt_notifier_dec();
	pr_info("unloaded\n");
}

module_init(fp_init);
module_exit(fp_exit);

MODULE_AUTHOR("libfiber authors");
MODULE_DESCRIPTION("Kernel-timed preemption upcalls for user-space fibers");
MODULE_LICENSE("GPL");
