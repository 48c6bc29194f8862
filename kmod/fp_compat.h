/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What differs between the kernels the module builds for (Debian's 6.1,
 * 6.12 and 7.x), in one place: each entry names the kernel change, and
 * Kbuild probes the headers for it (kmod/Kbuild) where the code must
 * differ.
 */
#ifndef _FIBER_PREEMPT_FP_COMPAT_H
#define _FIBER_PREEMPT_FP_COMPAT_H

#include <linux/fs.h>
#include <linux/hrtimer.h>
#include <linux/sched.h>
#include <linux/uaccess.h>

/*
 * 6.12, "finally take no_llseek out": a file without ->llseek cannot
 * seek, and no_llseek is gone. Kbuild defines FP_HAVE_NO_LLSEEK when the
 * headers still declare it.
 */
#ifdef FP_HAVE_NO_LLSEEK
#define fp_no_llseek	no_llseek
#else
#define fp_no_llseek	NULL
#endif

/*
 * 6.13, "hrtimers: Introduce hrtimer_setup() to replace hrtimer_init()",
 * and 6.15, "hrtimers: Delete hrtimer_init()": the callback is given at
 * setup, and hrtimer::function is no longer for drivers to write. Kbuild
 * defines FP_HAVE_HRTIMER_SETUP when the headers declare it.
 */
static inline void fp_hrtimer_setup(struct hrtimer *timer,
				    enum hrtimer_restart (*function)(struct hrtimer *),
				    clockid_t clock_id, enum hrtimer_mode mode)
{
#ifdef FP_HAVE_HRTIMER_SETUP
	hrtimer_setup(timer, function, clock_id, mode);
#else
	hrtimer_init(timer, clock_id, mode);
	timer->function = function;
#endif
}

/*
 * 6.19, "rseq: Introduce struct rseq_data": the task's rseq area and
 * abort signature moved from task_struct::rseq and ::rseq_sig to
 * task_struct::rseq.usrptr and ::rseq.sig. Kbuild defines
 * FP_HAVE_RSEQ_DATA when the headers have the struct.
 */
static inline struct rseq __user *fp_rseq_area(struct task_struct *t)
{
#ifdef FP_HAVE_RSEQ_DATA
	return t->rseq.usrptr;
#else
	return t->rseq;
#endif
}

static inline u32 fp_rseq_sig(struct task_struct *t)
{
#ifdef FP_HAVE_RSEQ_DATA
	return t->rseq.sig;
#else
	return t->rseq_sig;
#endif
}

/*
 * Up to 6.3, x86-64's access_ok() warned when called in interrupt context
 * with page faults enabled (CONFIG_DEBUG_ATOMIC_SLEEP), and
 * copy_to_user_nofault() calls it before disabling them itself: the timer
 * callback's write to the rseq area hit that WARN on 6.1 (6.4, "x86-64:
 * make access_ok() independent of LAM", dropped the check). With faults
 * already disabled the check holds, on every kernel: no probe is needed.
 */
static inline long fp_copy_to_user_nofault(void __user *dst, const void *src,
					   size_t size)
{
	long ret;

	pagefault_disable();
	ret = copy_to_user_nofault(dst, src, size);
	pagefault_enable();
	return ret;
}

#endif /* _FIBER_PREEMPT_FP_COMPAT_H */
