/* SPDX-License-Identifier: MIT */
/*
 * AArch64 frame layouts shared by the assembly and C (included by both).
 *
 * Upcall frame: an rt_sigframe (siginfo, then a ucontext), 12 KiB below
 * the interrupted SP (one "sub sp, sp, #3, lsl #12": the SP moves once).
 * upcall.S stores the interrupted state straight into the ucontext and
 * returns through rt_sigreturn, so the kernel's own validated restore
 * puts back every register, x16/x17 included, the PC and the SP:
 *
 *   offset  what                         saved by
 *      0    siginfo: not read by rt_sigreturn; its first 8 bytes hold
 *           the SVE vector length saved below, or 0   upcall.S
 *    304    uc_mcontext.fault_address    C: 0
 *    312    uc_mcontext.regs[0..30]      stp/str at entry
 *    560    uc_mcontext.sp               the interrupted SP (frame + 12288)
 *    568    uc_mcontext.pc               ctl->upcall_pc
 *    576    uc_mcontext.pstate           NZCV, and DIT, SSBS, TCO where the
 *                                        CPU has them (mrs), EL0t
 *    592    fpsimd_context: magic, size  C
 *    600      fpsr, fpcr                 mrs at entry
 *    608      vregs q0..q31              stp at entry
 *   1120    without SVE: terminator      C
 *           with SVE (ctl->sve_live set, VL bytes a vector):
 *   1120    extra_context -> 1168        C
 *   1152    terminator of __reserved     C
 *   1168    sve_context: magic, size, vl C
 *   1184      z0..z31, VL bytes each     str at entry
 *             p0..p15, VL/8 bytes each   str at entry
 *             ffr, VL/8 bytes            rdffr, str at entry
 *           terminator                   C
 *  12288    -                            the interrupted SP (CFA)
 *
 * At the largest vector length (256 bytes) the SVE record ends at 9936.
 *
 * Switch frame, built by fiber_switch() on the stack it leaves
 * (scripts/gdb/libfiber.py reads it too: keep the two in step):
 *
 *   offset  what
 *      0    x19, x20 ... x29, x30 (x30: where fiber_switch returns)
 *     96    d8 ... d15
 *    160    fpcr
 */
#ifndef LIBFIBER_ARCH_AARCH64_FRAME_H
#define LIBFIBER_ARCH_AARCH64_FRAME_H

#define UPCALL_FRAME_SIZE	12288
#define UPCALL_SVE_VL		0
#define UC_REGS			312
#define UC_SP			560
#define UC_PC			568
#define UC_PSTATE		576
#define UC_FPSIMD		592
#define FPSIMD_FPSR		600
#define FPSIMD_FPCR		604
#define FPSIMD_VREGS		608
#define UC_EXTRA		1120
#define UC_SVE			1168
#define SVE_ZREGS		1184

#define SWITCH_FRAME_X19	0
#define SWITCH_FRAME_X29	80
#define SWITCH_FRAME_D8		96
#define SWITCH_FRAME_FPCR	160
#define SWITCH_FRAME_SIZE	176

/* Offsets in struct fiber_preempt_ctl. */
#define CTL_UPCALL_PC		16
#define CTL_SVE_LIVE		104

#define NR_RT_SIGRETURN		139

/*
 * The PSTATE fields EL0 sets itself, at their bits in SPSR and in the
 * frame's pstate; fiber_pstate_fields holds those the CPU implements.
 */
#define PSTATE_NZCV		0xf0000000
#define PSTATE_TCO_BIT		25
#define PSTATE_DIT_BIT		24
#define PSTATE_SSBS_BIT		12

#endif /* LIBFIBER_ARCH_AARCH64_FRAME_H */
