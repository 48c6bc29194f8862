/* SPDX-License-Identifier: GPL-2.0 */
/* x86_64 part of fiber_preempt: which interrupted contexts qualify, and the redirect. */
#ifndef _FIBER_PREEMPT_ARCH_X86_FP_ARCH_H
#define _FIBER_PREEMPT_ARCH_X86_FP_ARCH_H

#include <asm/ptrace.h>

/* Interrupted in 64-bit user mode (not a 32-bit or x32 code segment). */
static inline bool fp_arch_user_regs(struct pt_regs *regs)
{
	return user_mode(regs) && user_64bit_mode(regs);
}

/* The trampoline saves the whole XSAVE state: nothing to tell it. */
static inline bool fp_arch_vector_state(u32 reg_flags, u32 *sve_live)
{
	*sve_live = 0;
	return true;
}

/* The interrupt returns with IRET, which reloads RIP from pt_regs. */
static inline void fp_arch_redirect(struct pt_regs *regs, unsigned long pc)
{
	regs->ip = pc;
}

#endif /* _FIBER_PREEMPT_ARCH_X86_FP_ARCH_H */
