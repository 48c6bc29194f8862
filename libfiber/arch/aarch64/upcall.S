/* SPDX-License-Identifier: MIT */
/*
 * AArch64: the preemption upcall trampoline.
 *
 * The kernel module (or the signal backend's handler) resumes a worker
 * here instead of at the instruction it interrupted, which it left in
 * ctl->upcall_pc. Every register holds the interrupted code's value.
 *
 * Returning to an arbitrary PC with all 31 GPRs intact needs a branch
 * that uses no register, and AArch64 has none (Go gives up its reserved
 * R27 for it; C code reserves nothing, and GCC uses x16/x17 freely). So
 * the trampoline saves the interrupted state in the shape of a signal
 * frame and returns through rt_sigreturn: the kernel's validated restore
 * reloads every GPR, SP, PC, NZCV, q0-q31, FPSR and FPCR at once. The cost
 * is one system call per preemption.
 *
 *   1. "bti c": the redirect lands as an indirect call would (the module
 *      sets PSTATE.BTYPE as for a signal handler);
 *   2. one SP adjustment of 12 KiB (AArch64 has no red zone) for the frame;
 *   3. save x0-x30, then NZCV (with DIT, SSBS and TCO: see context.c),
 *      FPSR, FPCR, q0-q31, the SP and the PC, and
 *      when ctl->sve_live says the SVE registers are live, z0-z31, p0-p15
 *      and FFR at the vector length the CPU reports;
 *   4. call fiber_upcall_handler(frame), which switches fibers, returns
 *      when this fiber runs again on this worker, and completes the frame
 *      (signal mask, alternate stack, record headers);
 *   5. rt_sigreturn.
 *
 * The SVE registers are saved in the record rt_sigreturn reads for them
 * (sve_context, reached through an extra_context record), which puts
 * them back with the rest. The module reports them live in ctl->sve_live
 * (the registration says this trampoline saves them); in signal mode the
 * handler does, from the kernel's signal frame. SME streaming mode and ZA
 * are not saved: both senders defer while either is on.
 *
 * Layout in frame.h; the CFI marks a signal frame whose CFA is the
 * interrupted SP, with the interrupted PC in its own return column (96,
 * the one libgcc uses for kernel signal frames)
 * so that x30 keeps the interrupted code's value for the next frame up.
 */
#include "frame.h"

	.arch	armv8.2-a+sve
	.section libfiber_text,"ax",%progbits

	.globl	fiber_upcall_entry
	.hidden	fiber_upcall_entry
	.type	fiber_upcall_entry, %function
	.p2align 6
fiber_upcall_entry:
	.cfi_startproc
	.cfi_return_column 96			/* libgcc's column for a signal frame's PC */
	.cfi_signal_frame
	.cfi_undefined 96
	hint	#34				/* bti c */
	sub	sp, sp, #(UPCALL_FRAME_SIZE >> 12), lsl #12
	.cfi_def_cfa_offset UPCALL_FRAME_SIZE
	stp	x0, x1, [sp, #UC_REGS + 0]	/* GPRs first: nothing is free yet */
	add	x0, sp, #UC_REGS		/* x0 saved: the base for the rest */
	stp	x2, x3, [x0, #16]
	stp	x4, x5, [x0, #32]
	stp	x6, x7, [x0, #48]
	stp	x8, x9, [x0, #64]
	stp	x10, x11, [x0, #80]
	stp	x12, x13, [x0, #96]
	stp	x14, x15, [x0, #112]
	stp	x16, x17, [x0, #128]
	stp	x18, x19, [x0, #144]
	stp	x20, x21, [x0, #160]
	stp	x22, x23, [x0, #176]
	stp	x24, x25, [x0, #192]
	stp	x26, x27, [x0, #208]
	stp	x28, x29, [x0, #224]
	str	x30, [x0, #240]
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
	.cfi_offset \n, UC_REGS + \n * 8 - UPCALL_FRAME_SIZE
	.endr
	mrs	x0, nzcv			/* flags: stp/str left them alone */
	adrp	x1, fiber_pstate_fields		/* and DIT, SSBS, TCO where they exist */
	ldr	x1, [x1, :lo12:fiber_pstate_fields]
	tbz	x1, #PSTATE_DIT_BIT, 4f
	mrs	x2, s3_3_c4_c2_5		/* DIT */
	orr	x0, x0, x2
4:	tbz	x1, #PSTATE_SSBS_BIT, 5f
	mrs	x2, s3_3_c4_c2_6		/* SSBS */
	orr	x0, x0, x2
5:	tbz	x1, #PSTATE_TCO_BIT, 6f
	mrs	x2, s3_3_c4_c2_7		/* TCO */
	orr	x0, x0, x2
6:	str	x0, [sp, #UC_PSTATE]
	mrs	x0, fpsr
	str	w0, [sp, #FPSIMD_FPSR]
	mrs	x0, fpcr
	str	w0, [sp, #FPSIMD_FPCR]
	add	x0, sp, #FPSIMD_VREGS
	stp	q0, q1, [x0, #0]		/* the full 128-bit vector registers */
	stp	q2, q3, [x0, #32]
	stp	q4, q5, [x0, #64]
	stp	q6, q7, [x0, #96]
	stp	q8, q9, [x0, #128]
	stp	q10, q11, [x0, #160]
	stp	q12, q13, [x0, #192]
	stp	q14, q15, [x0, #224]
	stp	q16, q17, [x0, #256]
	stp	q18, q19, [x0, #288]
	stp	q20, q21, [x0, #320]
	stp	q22, q23, [x0, #352]
	stp	q24, q25, [x0, #384]
	stp	q26, q27, [x0, #416]
	stp	q28, q29, [x0, #448]
	stp	q30, q31, [x0, #480]
	add	x0, sp, #(UPCALL_FRAME_SIZE >> 12), lsl #12
	str	x0, [sp, #UC_SP]		/* the interrupted SP */
	adrp	x0, :gottprel:fiber_tls_ctl
	ldr	x0, [x0, #:gottprel_lo12:fiber_tls_ctl]
	mrs	x1, tpidr_el0
	ldr	x0, [x1, x0]			/* this worker's control block */
	ldr	x2, [x0, #CTL_UPCALL_PC]
	str	x2, [sp, #UC_PC]		/* the interrupted PC */
	.cfi_offset 96, UC_PC - UPCALL_FRAME_SIZE
	ldr	w2, [x0, #CTL_SVE_LIVE]
	str	x2, [sp, #UPCALL_SVE_VL]
	cbz	w2, 1f
	/*
	 * SVE live: the Z, P and FFR registers, at the CPU's vector length
	 * (what rt_sigreturn checks the record against).
	 */
	rdvl	x2, #1
	str	x2, [sp, #UPCALL_SVE_VL]
	add	x0, sp, #SVE_ZREGS
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	str	z\n, [x0, #\n, mul vl]
	.endr
	add	x0, x0, x2, lsl #5		/* p0: after 32 vectors */
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	str	p\n, [x0, #\n, mul vl]
	.endr
	rdffr	p0.b				/* p0 is saved: FFR through it */
	str	p0, [x0, #16, mul vl]
1:

	mov	x0, sp
	bl	fiber_upcall_handler

	mov	x8, #NR_RT_SIGRETURN		/* restores everything from the frame */
	svc	#0
	brk	#0
	.cfi_endproc
	.size	fiber_upcall_entry, .-fiber_upcall_entry

	.globl	fiber_upcall_end
	.hidden	fiber_upcall_end
fiber_upcall_end:

	.section .note.GNU-stack,"",%progbits
