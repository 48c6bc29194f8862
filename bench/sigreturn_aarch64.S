/* SPDX-License-Identifier: MIT */
/*
 * void sigreturn_loop(uint64_t n, struct fiber_upcall_frame *frame)
 *
 * What the aarch64 upcall's return costs: n times, point frame's SP and
 * PC back into this loop and rt_sigreturn through it, as upcall.S does.
 * frame (prepared by the caller: FP/SIMD record, signal mask, alternate
 * stack) lies below the stack in use, 16-byte aligned.
 */
#define UC_REGS		312
#define UC_SP		560
#define UC_PC		568

	.text
	.globl	sigreturn_loop
	.type	sigreturn_loop, %function
sigreturn_loop:
	.cfi_startproc
	hint	#34				/* bti c */
	stp	x29, x30, [sp, #-96]!
	.cfi_def_cfa_offset 96
	.cfi_offset x29, -96
	.cfi_offset x30, -88
	stp	x19, x20, [sp, #16]
	stp	d8, d9, [sp, #32]		/* the frame's q registers are zero */
	stp	d10, d11, [sp, #48]
	stp	d12, d13, [sp, #64]
	stp	d14, d15, [sp, #80]
	mov	x19, x0
	mov	x20, x1
1:	cbz	x19, 2f
	sub	x19, x19, #1
	mov	x9, sp
	str	x9, [x20, #UC_SP]		/* come back on this stack... */
	adr	x9, 1b
	str	x9, [x20, #UC_PC]		/* ...at the top of the loop */
	stp	x19, x20, [x20, #UC_REGS + 19 * 8]
	mov	sp, x20
	mov	x8, #139			/* rt_sigreturn */
	svc	#0
2:	ldp	d8, d9, [sp, #32]
	ldp	d10, d11, [sp, #48]
	ldp	d12, d13, [sp, #64]
	ldp	d14, d15, [sp, #80]
	ldp	x19, x20, [sp, #16]
	ldp	x29, x30, [sp], #96
	.cfi_def_cfa_offset 0
	ret
	.cfi_endproc
	.size	sigreturn_loop, .-sigreturn_loop

	.section .note.GNU-stack,"",%progbits
