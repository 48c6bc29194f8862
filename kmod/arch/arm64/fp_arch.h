/* SPDX-License-Identifier: GPL-2.0 */
/* arm64 part of fiber_preempt: which interrupted contexts qualify, and the redirect. */
#ifndef _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H
#define _FIBER_PREEMPT_ARCH_ARM64_FP_ARCH_H

#include <linux/thread_info.h>
#include <asm/cpufeature.h>
#include <asm/ptrace.h>
#include <asm/sysreg.h>

/* Interrupted at EL0 in AArch64 state. */
static inline bool fp_arch_user_regs(struct pt_regs *regs)
{
	return user_mode(regs) && !compat_user_mode(regs);
}

/*
 * Whether the trampoline can save the interrupted thread's vector state,
 * and whether it must save more than q0-q31, FPSR and FPCR (which it
 * always saves): *sve_live when the SVE registers are live (TIF_SVE:
 * Z0-Z31 beyond 128 bits, P0-P15 and FFR hold state until the next system
 * call discards them). Interrupted from EL0 in hard
 * irq, the registers are still the thread's own.
 *
 * SME streaming mode and ZA are not saved: while either is on (SVCR, read
 * from the CPU: EL0 switches them without trapping), preemption waits.
 */
static inline bool fp_arch_vector_state(u32 reg_flags, u32 *sve_live)
{
	*sve_live = 0;
	if (system_supports_sme() &&
	    (read_sysreg_s(SYS_SVCR) & (SVCR_SM_MASK | SVCR_ZA_MASK)))
		return false;
	if (!test_thread_flag(TIF_SVE))
		return true;
	if (!(reg_flags & FIBER_PREEMPT_REG_SAVES_SVE))
		return false;
	*sve_live = 1;
	return true;
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
