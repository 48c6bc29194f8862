/* SPDX-License-Identifier: MIT */
/*
 * x86_64 SysV: the preemption upcall trampoline.
 *
 * The kernel module (or the signal backend's handler) resumes a worker
 * here instead of at the instruction it interrupted, which it left in
 * ctl->upcall_pc. Every register still holds the interrupted code's value
 * and %rsp is its stack pointer, so nothing may be touched before it is
 * saved:
 *
 *   1. step below the 128-byte red zone a leaf function may be using,
 *      keeping an 8-byte slot for the return PC (lea: flags untouched);
 *   2. save rflags before any instruction that changes them;
 *   3. save the 15 GPRs, then fetch the PC into the slot;
 *   4. save the whole extended state in use (x87, SSE, AVX, AVX-512, ...)
 *      with XSAVEC (or XSAVE, or FXSAVE) into a 64-byte aligned area;
 *   5. call fiber_upcall_handler(frame), which switches fibers and
 *      returns when this fiber runs again, on this same worker;
 *   6. restore in reverse and "ret $128": pop the PC, skip the red zone,
 *      leaving every register and %rsp as they were.
 *
 * The frame layout is in frame.h. The CFI describes it as a signal frame
 * (the PC is an interrupted instruction, not a return address), so
 * debuggers and unwinders walk from the handler into the interrupted
 * code from step 3 on. Before the PC is in its slot the return address
 * is undefined and unwinding stops here.
 *
 * [fiber_upcall_entry, fiber_upcall_end) is never itself interrupted:
 * the kernel and the signal handler both check.
 */
#include "frame.h"

	.section libfiber_text,"ax",@progbits

	.globl	fiber_upcall_entry
	.hidden	fiber_upcall_entry
	.type	fiber_upcall_entry, @function
	.p2align 6
fiber_upcall_entry:
	.cfi_startproc simple
	.cfi_signal_frame
	.cfi_def_cfa rsp, 0
	.cfi_undefined rip
	leaq	-(UPCALL_REDZONE + 8)(%rsp), %rsp	/* red zone + PC slot */
	.cfi_adjust_cfa_offset UPCALL_REDZONE + 8
	pushfq						/* rflags first */
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset 49, 0				/* DWARF 49: rflags */
	.irp	reg, rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15
	pushq	%\reg					/* GPRs, in frame.h order */
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset \reg, 0
	.endr
	movq	%rsp, %rbx				/* frame base; rbx is saved */
	.cfi_def_cfa_register rbx
	movq	fiber_tls_ctl@gottpoff(%rip), %rax
	movq	%fs:(%rax), %rax			/* this worker's control block */
	movq	CTL_UPCALL_PC(%rax), %rax
	movq	%rax, UPCALL_FRAME_RIP(%rbx)		/* the interrupted PC */
	.cfi_offset rip, -UPCALL_REDZONE - 8
	cld						/* the C ABI wants DF clear */

	andq	$-64, %rsp
	subq	fiber_xsave_size(%rip), %rsp
	cmpl	$XSAVE_MODE_FXSAVE, fiber_xsave_mode(%rip)
	je	.Lfxsave
	xorl	%eax, %eax				/* XSAVE header must be zero */
	.irp	off, 512, 520, 528, 536, 544, 552, 560, 568
	movq	%rax, \off(%rsp)
	.endr
	movl	$-1, %eax				/* every component in XCR0 */
	movl	$-1, %edx
	cmpl	$XSAVE_MODE_XSAVEC, fiber_xsave_mode(%rip)
	jne	.Lxsave
	xsavec64 (%rsp)					/* only what is in use */
	jmp	.Lsaved
.Lxsave:
	xsave64	(%rsp)
	jmp	.Lsaved
.Lfxsave:
	fxsave64 (%rsp)
.Lsaved:

	movq	%rbx, %rdi
	call	fiber_upcall_handler

	cmpl	$XSAVE_MODE_FXSAVE, fiber_xsave_mode(%rip)
	je	.Lfxrstor
	movl	$-1, %eax
	movl	$-1, %edx
	xrstor64 (%rsp)					/* standard or compacted */
	jmp	.Lrestored
.Lfxrstor:
	fxrstor64 (%rsp)
.Lrestored:
	movq	%rbx, %rsp
	.cfi_def_cfa rsp, UPCALL_CFA_OFFSET
	.irp	reg, r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax
	popq	%\reg
	.cfi_adjust_cfa_offset -8
	.cfi_restore \reg
	.endr
	popfq						/* rflags last */
	.cfi_adjust_cfa_offset -8
	ret	$UPCALL_REDZONE				/* PC, then over the red zone */
	.cfi_endproc
	.size	fiber_upcall_entry, .-fiber_upcall_entry

	.globl	fiber_upcall_end
	.hidden	fiber_upcall_end
fiber_upcall_end:

	.section .note.GNU-stack,"",@progbits
