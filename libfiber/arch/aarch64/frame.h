/* SPDX-License-Identifier: MIT */
/*
 * AArch64 frame layouts shared by the assembly and C (included by both).
 *
 * Upcall frame: an rt_sigframe (siginfo, then a ucontext), 8 KiB below
 * the interrupted SP (one "sub sp, sp, #2, lsl #12": the SP moves once).
 * upcall.S stores the interrupted state straight into the ucontext and
 * returns through rt_sigreturn, so the kernel's own validated restore
 * puts back every register, x16/x17 included, the PC and the SP:
 *
 *   offset  what                         saved by
 *      0    siginfo (unused, 128 bytes)
 *    304    uc_mcontext.fault_address    C: 0
 *    312    uc_mcontext.regs[0..30]      stp/str at entry
 *    560    uc_mcontext.sp               the interrupted SP (frame + 8192)
 *    568    uc_mcontext.pc               ctl->upcall_pc
 *    576    uc_mcontext.pstate           NZCV (mrs), EL0t
 *    592    fpsimd_context: magic, size  C
 *    600      fpsr, fpcr                 mrs at entry
 *    608      vregs q0..q31              stp at entry
 *   1120    terminator record            C
 *   8192    -                            the interrupted SP (CFA)
 *
 * Switch frame, built by fiber_switch() on the stack it leaves:
 *
 *   offset  what
 *      0    x19, x20 ... x29, x30 (x30: where fiber_switch returns)
 *     96    d8 ... d15
 *    160    fpcr
 */
#ifndef LIBFIBER_ARCH_AARCH64_FRAME_H
#define LIBFIBER_ARCH_AARCH64_FRAME_H

#define UPCALL_FRAME_SIZE	8192
#define UC_REGS			312
#define UC_SP			560
#define UC_PC			568
#define UC_PSTATE		576
#define UC_FPSIMD		592
#define FPSIMD_FPSR		600
#define FPSIMD_FPCR		604
#define FPSIMD_VREGS		608

#define SWITCH_FRAME_X19	0
#define SWITCH_FRAME_X29	80
#define SWITCH_FRAME_D8		96
#define SWITCH_FRAME_FPCR	160
#define SWITCH_FRAME_SIZE	176

/* Offset of upcall_pc in struct fiber_preempt_ctl. */
#define CTL_UPCALL_PC		16

#define NR_RT_SIGRETURN		139

#endif /* LIBFIBER_ARCH_AARCH64_FRAME_H */
