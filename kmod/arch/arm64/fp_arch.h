/* SPDX-License-Identifier: GPL-2.0 */
/* arm64 part of fiber_preempt: which interrupted contexts qualify, and the redirect. */
#ifndef _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H
#define _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H

#include <asm/cpufeature.h>
#include <asm/ptrace.h>

/* Interrupted at EL0 in AArch64 state. */
static inline bool fp_arch_user_regs(struct pt_regs *regs)
{
	return user_mode(regs) && !compat_user_mode(regs);
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
