/* SPDX-License-Identifier: GPL-2.0 */
/* arm64 part of fiber_preempt: which interrupted contexts qualify, and the redirect. */
#ifndef _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H
#define _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H

#include <linux/thread_info.h>
#include <asm/cpufeature.h>
#include <asm/ptrace.h>

/*
 * Interrupted at EL0 in AArch64 state, with no live SVE state: the
 * trampoline saves the FP/SIMD view (q0-q31) only, so a thread whose SVE
 * registers are live is not preempted until a system call drops them.
 */
static inline bool fp_arch_user_regs(struct pt_regs *regs)
{
	return user_mode(regs) && !compat_user_mode(regs) &&
	       !test_thread_flag(TIF_SVE);
}

/*
 * kernel_exit reloads ELR from regs->pc. As for a signal handler, the
 * landing is treated as an indirect call, so the trampoline's "bti c" is
 * a valid target on a guarded page.
 */
static inline void fp_arch_redirect(struct pt_regs *regs, unsigned long pc)
{
	regs->pc = pc;
	if (system_supports_bti()) {
		regs->pstate &= ~PSR_BTYPE_MASK;
		regs->pstate |= PSR_BTYPE_C;
	}
}

#endif /* _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H */
