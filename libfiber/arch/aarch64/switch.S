/* SPDX-License-Identifier: MIT */
/*
 * AArch64 AAPCS64: cooperative context switch and the first frame of a fiber.
 *
 * void fiber_switch(void **save_sp, void *load_sp)
 *   Saves the callee-saved state (x19-x29, the return address in x30,
 *   d8-d15, FPCR) on the current stack, stores SP in *save_sp, loads
 *   load_sp and returns on that stack. Layout in frame.h.
 */
#include "frame.h"

	.section libfiber_text,"ax",%progbits

	.globl	fiber_switch
	.hidden	fiber_switch
	.type	fiber_switch, %function
	.p2align 4
fiber_switch:
	.cfi_startproc
	hint	#34				/* bti c */
	sub	sp, sp, #SWITCH_FRAME_SIZE
	.cfi_def_cfa_offset SWITCH_FRAME_SIZE
	stp	x19, x20, [sp, #0]		/* callee-saved GPRs */
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #SWITCH_FRAME_X29]
	.cfi_offset x29, SWITCH_FRAME_X29 - SWITCH_FRAME_SIZE
	.cfi_offset x30, SWITCH_FRAME_X29 + 8 - SWITCH_FRAME_SIZE
	stp	d8, d9, [sp, #SWITCH_FRAME_D8]	/* callee-saved FP registers */
	stp	d10, d11, [sp, #SWITCH_FRAME_D8 + 16]
	stp	d12, d13, [sp, #SWITCH_FRAME_D8 + 32]
	stp	d14, d15, [sp, #SWITCH_FRAME_D8 + 48]
	mrs	x9, fpcr			/* rounding mode and traps */
	str	x9, [sp, #SWITCH_FRAME_FPCR]

	mov	x9, sp
	str	x9, [x0]			/* *save_sp = sp */
	mov	sp, x1				/* the other stack */

	ldr	x9, [sp, #SWITCH_FRAME_FPCR]
	msr	fpcr, x9
	ldp	d8, d9, [sp, #SWITCH_FRAME_D8]
	ldp	d10, d11, [sp, #SWITCH_FRAME_D8 + 16]
	ldp	d12, d13, [sp, #SWITCH_FRAME_D8 + 32]
	ldp	d14, d15, [sp, #SWITCH_FRAME_D8 + 48]
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #SWITCH_FRAME_X29]
	add	sp, sp, #SWITCH_FRAME_SIZE
	.cfi_def_cfa_offset 0
	.cfi_restore x29
	.cfi_restore x30
	ret
	.cfi_endproc
	.size	fiber_switch, .-fiber_switch

/*
 * A new fiber's switch frame returns here with the fiber in x19, its
 * function in x20 and the argument in x21: call fn(arg), then
 * fiber_exit(fiber, result), which never returns. The return address is
 * undefined, so unwinders stop at the bottom of a fiber's stack; the
 * library's own walker stops at fiber_entry_ret, the return address of
 * the fiber's first frame.
 */
	.globl	fiber_entry
	.hidden	fiber_entry
	.type	fiber_entry, %function
	.p2align 4
fiber_entry:
	.cfi_startproc
	.cfi_undefined x30
	hint	#34				/* bti c */
	mov	x29, #0				/* end of the frame-record chain */
	mov	x30, #0
	mov	x0, x21
	blr	x20				/* fn(arg) */
	.globl	fiber_entry_ret
	.hidden	fiber_entry_ret
fiber_entry_ret:
	mov	x1, x0
	mov	x0, x19
	bl	fiber_exit
	brk	#0
	.cfi_endproc
	.size	fiber_entry, .-fiber_entry

	.section .note.GNU-stack,"",%progbits
