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
 *      with XSAVEC (or XSAVE, or FXSAVE) into a 64-byte aligned area; or,
 *      when XCR0 enables no more than x87, SSE, AVX and AVX-512 and x87
 *      is not in use (XGETBV 1), the vector registers in use and MXCSR
 *      with plain moves, and on the way back put the components that
 *      were not in use in their initial state again;
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
	cmpl	$XSAVE_MODE_BYHAND, fiber_xsave_mode(%rip)
	jne	.Lxsave_any
	/*
	 * r12 (saved above, kept by the handler): the components in use,
	 * or -1 when XSAVEC saved them. XSAVEC costs ~150 ns whatever is
	 * live; plain moves of the vector registers in use cost ~10 ns.
	 */
	movl	$1, %ecx
	xgetbv						/* XINUSE */
	movl	%eax, %r12d
	testl	$~XFEATURES_BYHAND, %eax		/* x87 too: XSAVEC */
	jnz	.Lxsave_byhand_fallback
	stmxcsr	BYHAND_MXCSR(%rsp)
	testl	$XFEATURE_ZMM_HI256, %r12d
	jnz	.Lsave_zmm
	testl	$XFEATURE_YMM, %r12d
	jnz	.Lsave_ymm
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movups	%xmm\n, \n * 64(%rsp)
	.endr
	jmp	.Lsave_hi16
.Lsave_ymm:
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu	%ymm\n, \n * 64(%rsp)
	.endr
	jmp	.Lsave_hi16
.Lsave_zmm:
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu64 %zmm\n, \n * 64(%rsp)
	.endr
.Lsave_hi16:
	testl	$XFEATURE_HI16_ZMM, %r12d
	jz	.Lsave_opmask
	.irp	n, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vmovdqu64 %zmm\n, \n * 64(%rsp)
	.endr
.Lsave_opmask:
	testl	$XFEATURE_OPMASK, %r12d
	jz	.Lsaved
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7
	kmovq	%k\n, BYHAND_K + \n * 8(%rsp)
	.endr
	jmp	.Lsaved
.Lxsave_byhand_fallback:
	movl	$-1, %r12d
.Lxsave_any:
	cmpl	$XSAVE_MODE_FXSAVE, fiber_xsave_mode(%rip)
	je	.Lfxsave
	xorl	%eax, %eax				/* XSAVE header must be zero */
	.irp	off, 512, 520, 528, 536, 544, 552, 560, 568
	movq	%rax, \off(%rsp)
	.endr
	movl	$-1, %eax				/* every component in XCR0 */
	movl	$-1, %edx
	cmpl	$XSAVE_MODE_XSAVE, fiber_xsave_mode(%rip)
	je	.Lxsave
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

	cmpl	$XSAVE_MODE_BYHAND, fiber_xsave_mode(%rip)
	jne	.Lxrstor_any
	cmpl	$-1, %r12d
	je	.Lxrstor_any
	/*
	 * What was not in use then is in its initial state (zero) unless
	 * another fiber used it since: put those back in it. r12d: then;
	 * ecx: now and not then.
	 */
	movl	$1, %ecx
	xgetbv
	movl	%r12d, %ecx
	notl	%ecx
	andl	%eax, %ecx
	testl	$XFEATURE_X87, %ecx
	jz	.Lclean_hi16
	fninit
.Lclean_hi16:
	testl	$XFEATURE_HI16_ZMM, %ecx
	jz	.Lclean_opmask
	.irp	n, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vpxord	%zmm\n, %zmm\n, %zmm\n
	.endr
.Lclean_opmask:
	testl	$XFEATURE_OPMASK, %ecx
	jz	.Lload_vectors
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7
	kxorq	%k\n, %k\n, %k\n
	.endr
.Lload_vectors:
	/* VEX and EVEX loads zero what is above them: the upper parts not in use. */
	testl	$XFEATURE_ZMM_HI256, %r12d
	jnz	.Lload_zmm
	testl	$XFEATURE_YMM, %r12d
	jnz	.Lload_ymm
	testl	$(XFEATURE_YMM | XFEATURE_ZMM_HI256), %ecx
	jnz	.Lload_xmm_vex
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movups	\n * 64(%rsp), %xmm\n
	.endr
	jmp	.Lload_hi16
.Lload_xmm_vex:
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu	\n * 64(%rsp), %xmm\n
	.endr
	jmp	.Lload_hi16
.Lload_ymm:
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu	\n * 64(%rsp), %ymm\n
	.endr
	jmp	.Lload_hi16
.Lload_zmm:
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu64 \n * 64(%rsp), %zmm\n
	.endr
.Lload_hi16:
	testl	$XFEATURE_HI16_ZMM, %r12d
	jz	.Lload_opmask
	.irp	n, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vmovdqu64 \n * 64(%rsp), %zmm\n
	.endr
.Lload_opmask:
	testl	$XFEATURE_OPMASK, %r12d
	jz	.Lload_mxcsr
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7
	kmovq	BYHAND_K + \n * 8(%rsp), %k\n
	.endr
.Lload_mxcsr:
	stmxcsr	-8(%rsp)				/* LDMXCSR only when it differs */
	movl	-8(%rsp), %eax
	cmpl	BYHAND_MXCSR(%rsp), %eax
	je	.Lrestored
	ldmxcsr	BYHAND_MXCSR(%rsp)
	jmp	.Lrestored
.Lxrstor_any:
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
