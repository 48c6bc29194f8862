/* SPDX-License-Identifier: MIT */
/*
 * x86_64 SysV: cooperative context switch and the first frame of a fiber.
 *
 * void fiber_switch(void **save_sp, void *load_sp)
 *   Saves the callee-saved state the ABI requires (rbx, rbp, r12-r15,
 *   MXCSR control bits, x87 control word) on the current stack, stores the
 *   stack pointer in *save_sp, loads load_sp and returns on that stack.
 *   The switch frame's layout is in frame.h.
 */
#include "frame.h"

	.section libfiber_text,"ax",@progbits

	.globl	fiber_switch
	.hidden	fiber_switch
	.type	fiber_switch, @function
	.p2align 4
fiber_switch:
	.cfi_startproc
	pushq	%rbp				/* callee-saved GPRs */
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset rbp, 0
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset rbx, 0
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset r12, 0
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset r13, 0
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset r14, 0
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset r15, 0
	leaq	-8(%rsp), %rsp
	.cfi_adjust_cfa_offset 8
	stmxcsr	SWITCH_FRAME_CSR(%rsp)		/* MXCSR: rounding, exception masks */
	fnstcw	SWITCH_FRAME_CSR+4(%rsp)	/* x87 control word */

	movq	%rsp, %rax
	movq	%rsp, (%rdi)			/* *save_sp = rsp */
	movq	%rsi, %rsp			/* the other stack */

	/*
	 * LDMXCSR and FLDCW cost more than a compare, and nearly every
	 * fiber keeps the defaults: load only what differs.
	 */
	movl	SWITCH_FRAME_CSR(%rsp), %ecx
	cmpl	%ecx, SWITCH_FRAME_CSR(%rax)
	je	1f
	ldmxcsr	SWITCH_FRAME_CSR(%rsp)
1:	movzwl	SWITCH_FRAME_CSR+4(%rsp), %ecx
	cmpw	%cx, SWITCH_FRAME_CSR+4(%rax)
	je	2f
	fldcw	SWITCH_FRAME_CSR+4(%rsp)
2:	leaq	8(%rsp), %rsp
	.cfi_adjust_cfa_offset -8
	popq	%r15
	.cfi_adjust_cfa_offset -8
	.cfi_restore r15
	popq	%r14
	.cfi_adjust_cfa_offset -8
	.cfi_restore r14
	popq	%r13
	.cfi_adjust_cfa_offset -8
	.cfi_restore r13
	popq	%r12
	.cfi_adjust_cfa_offset -8
	.cfi_restore r12
	popq	%rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore rbx
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	.cfi_restore rbp
	ret
	.cfi_endproc
	.size	fiber_switch, .-fiber_switch

/*
 * A new fiber's switch frame returns here with the fiber in r12, its
 * function in r13 and the argument in r14: call fn(arg), then
 * fiber_exit(fiber, result), which never returns. The return address is
 * undefined, so unwinders stop at the bottom of a fiber's stack; the
 * library's own walker stops at fiber_entry_ret, the return address of
 * the fiber's first frame.
 */
	.globl	fiber_entry
	.hidden	fiber_entry
	.type	fiber_entry, @function
	.p2align 4
fiber_entry:
	.cfi_startproc
	.cfi_undefined rip
	xorl	%ebp, %ebp			/* end of the frame-pointer chain */
	movq	%r14, %rdi
	call	*%r13				/* fn(arg) */
	.globl	fiber_entry_ret
	.hidden	fiber_entry_ret
fiber_entry_ret:
	movq	%r12, %rdi
	movq	%rax, %rsi
	call	fiber_exit
	ud2
	.cfi_endproc
	.size	fiber_entry, .-fiber_entry

	.section .note.GNU-stack,"",@progbits
