/* SPDX-License-Identifier: GPL-2.0 */
/*
 * void regs_spin(struct regs_check *rc, uint64_t iterations, int level)
 *
 * Loads every GPR but rcx, rflags (DF set), MXCSR, the x87 control word,
 * the 128-byte red zone and the vector registers of `level` from rc, spins
 * `iterations` times with instructions that change none of them (lea and
 * jrcxz on rcx only), then stores them all back to rc's out fields for
 * the caller to compare. A leaf function: the red zone is its own.
 */
#include "regs_x86_64.h"

#define LOCAL_RC	0
#define LOCAL_LEVEL	8
#define LOCAL_GPR	16
#define LOCAL_REDZONE	128
#define LOCAL_FLAGS	256
#define LOCAL_MXCSR	264
#define LOCAL_FCW	268
#define LOCAL_SIZE	280

	.text
	.globl	regs_spin
	.type	regs_spin, @function
regs_spin:
	.cfi_startproc
	.irp	reg, rbp, rbx, r12, r13, r14, r15
	pushq	%\reg
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset \reg, 0
	.endr
	subq	$LOCAL_SIZE, %rsp
	.cfi_adjust_cfa_offset LOCAL_SIZE
	movq	%rdi, LOCAL_RC(%rsp)
	movl	%edx, LOCAL_LEVEL(%rsp)

	cmpl	$RC_AVX512, %edx
	je	.Lload512
	cmpl	$RC_AVX, %edx
	je	.Lload256
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movdqu	RC_VEC_IN + \i * 64(%rdi), %xmm\i
	.endr
	jmp	.Lloaded
.Lload256:
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu	RC_VEC_IN + \i * 64(%rdi), %ymm\i
	.endr
	jmp	.Lloaded
.Lload512:
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vmovdqu64 RC_VEC_IN + \i * 64(%rdi), %zmm\i
	.endr
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7
	kmovq	RC_K_IN + \i * 8(%rdi), %k\i
	.endr
.Lloaded:
	ldmxcsr	RC_MXCSR_IN(%rdi)
	fldcw	RC_FCW_IN(%rdi)
	pushq	RC_FLAGS_IN(%rdi)		/* before the red zone is filled */
	popfq
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movq	RC_REDZONE_IN + \i * 8(%rdi), %rax
	movq	%rax, -8 - \i * 8(%rsp)
	.endr
	movq	%rsi, %rcx
	movq	RC_GPR_IN + 0 * 8(%rdi), %rax
	movq	RC_GPR_IN + 1 * 8(%rdi), %rbx
	movq	RC_GPR_IN + 2 * 8(%rdi), %rdx
	movq	RC_GPR_IN + 3 * 8(%rdi), %rsi
	movq	RC_GPR_IN + 5 * 8(%rdi), %rbp
	movq	RC_GPR_IN + 6 * 8(%rdi), %r8
	movq	RC_GPR_IN + 7 * 8(%rdi), %r9
	movq	RC_GPR_IN + 8 * 8(%rdi), %r10
	movq	RC_GPR_IN + 9 * 8(%rdi), %r11
	movq	RC_GPR_IN + 10 * 8(%rdi), %r12
	movq	RC_GPR_IN + 11 * 8(%rdi), %r13
	movq	RC_GPR_IN + 12 * 8(%rdi), %r14
	movq	RC_GPR_IN + 13 * 8(%rdi), %r15
	movq	RC_GPR_IN + 4 * 8(%rdi), %rdi

.Lspin:						/* touches rcx and rip only */
	leaq	-1(%rcx), %rcx
	jrcxz	.Ldone
	jmp	.Lspin
.Ldone:
	movq	%rax, LOCAL_GPR + 0 * 8(%rsp)
	movq	%rbx, LOCAL_GPR + 1 * 8(%rsp)
	movq	%rdx, LOCAL_GPR + 2 * 8(%rsp)
	movq	%rsi, LOCAL_GPR + 3 * 8(%rsp)
	movq	%rdi, LOCAL_GPR + 4 * 8(%rsp)
	movq	%rbp, LOCAL_GPR + 5 * 8(%rsp)
	movq	%r8, LOCAL_GPR + 6 * 8(%rsp)
	movq	%r9, LOCAL_GPR + 7 * 8(%rsp)
	movq	%r10, LOCAL_GPR + 8 * 8(%rsp)
	movq	%r11, LOCAL_GPR + 9 * 8(%rsp)
	movq	%r12, LOCAL_GPR + 10 * 8(%rsp)
	movq	%r13, LOCAL_GPR + 11 * 8(%rsp)
	movq	%r14, LOCAL_GPR + 12 * 8(%rsp)
	movq	%r15, LOCAL_GPR + 13 * 8(%rsp)
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movq	-8 - \i * 8(%rsp), %rax		/* red zone, before any push */
	movq	%rax, LOCAL_REDZONE + \i * 8(%rsp)
	.endr
	pushfq
	popq	LOCAL_FLAGS(%rsp)
	cld
	stmxcsr	LOCAL_MXCSR(%rsp)
	fnstcw	LOCAL_FCW(%rsp)

	movq	LOCAL_RC(%rsp), %rdi
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13
	movq	LOCAL_GPR + \i * 8(%rsp), %rax
	movq	%rax, RC_GPR_OUT + \i * 8(%rdi)
	.endr
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movq	LOCAL_REDZONE + \i * 8(%rsp), %rax
	movq	%rax, RC_REDZONE_OUT + \i * 8(%rdi)
	.endr
	movq	LOCAL_FLAGS(%rsp), %rax
	movq	%rax, RC_FLAGS_OUT(%rdi)
	movl	LOCAL_MXCSR(%rsp), %eax
	movl	%eax, RC_MXCSR_OUT(%rdi)
	movw	LOCAL_FCW(%rsp), %ax
	movw	%ax, RC_FCW_OUT(%rdi)

	movl	LOCAL_LEVEL(%rsp), %edx
	cmpl	$RC_AVX512, %edx
	je	.Lstore512
	cmpl	$RC_AVX, %edx
	je	.Lstore256
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	movdqu	%xmm\i, RC_VEC_OUT + \i * 64(%rdi)
	.endr
	jmp	.Lstored
.Lstore256:
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu	%ymm\i, RC_VEC_OUT + \i * 64(%rdi)
	.endr
	vzeroupper
	jmp	.Lstored
.Lstore512:
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vmovdqu64 %zmm\i, RC_VEC_OUT + \i * 64(%rdi)
	.endr
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7
	kmovq	%k\i, RC_K_OUT + \i * 8(%rdi)
	.endr
	vzeroupper
.Lstored:
	addq	$LOCAL_SIZE, %rsp
	.cfi_adjust_cfa_offset -LOCAL_SIZE
	.irp	reg, r15, r14, r13, r12, rbx, rbp
	popq	%\reg
	.cfi_adjust_cfa_offset -8
	.cfi_restore \reg
	.endr
	ret
	.cfi_endproc
	.size	regs_spin, .-regs_spin

/*
 * void regs_clean_spin(const void *init, uint64_t rfbm, uint64_t iterations,
 *			void *out, int level)
 *
 * Puts the components in rfbm in their initial state (XRSTOR of init, an
 * area with an empty header), spins touching none of them, then stores
 * the vector registers of `level` beyond SSE, the opmasks and the x87
 * environment to out: all still in their initial state if the upcall put
 * them back so after other fibers dirtied them.
 */
	.globl	regs_clean_spin
	.type	regs_clean_spin, @function
regs_clean_spin:
	.cfi_startproc
	movq	%rdx, %r9
	movq	%rcx, %r10			/* out: rcx counts */
	movl	%esi, %eax
	shrq	$32, %rsi
	movl	%esi, %edx
	xrstor64 (%rdi)
	movq	%r9, %rcx
1:	jrcxz	2f
	leaq	-1(%rcx), %rcx
	jmp	1b
2:	cmpl	$RC_AVX512, %r8d
	jne	3f
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vmovdqu64 %zmm\i, CO_VEC + \i * 64(%r10)
	.endr
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7
	kmovq	%k\i, CO_K + \i * 8(%r10)
	.endr
	jmp	4f
3:	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vmovdqu	%ymm\i, CO_VEC + \i * 64(%r10)
	.endr
4:	fnstenv	CO_X87ENV(%r10)
	vzeroupper
	ret
	.cfi_endproc
	.size	regs_clean_spin, .-regs_clean_spin

/*
 * void regs_dirty_spin(uint64_t iterations, int level)
 *
 * Makes the vector registers of `level` all ones, and with AVX-512 the
 * opmasks too, pushes two values on the x87 stack, spins, pops them and
 * returns leaving the vector state dirty.
 */
	.globl	regs_dirty_spin
	.type	regs_dirty_spin, @function
regs_dirty_spin:
	.cfi_startproc
	cmpl	$RC_AVX512, %esi
	jne	1f
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	vpternlogd $0xff, %zmm\i, %zmm\i, %zmm\i
	.endr
	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7
	kxnorq	%k\i, %k\i, %k\i
	.endr
	jmp	2f
1:	.irp	i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	vpcmpeqd %ymm\i, %ymm\i, %ymm\i
	.endr
2:	fld1
	fld1
	movq	%rdi, %rcx
3:	jrcxz	4f
	leaq	-1(%rcx), %rcx
	jmp	3b
4:	fstp	%st(0)
	fstp	%st(0)
	ret
	.cfi_endproc
	.size	regs_dirty_spin, .-regs_dirty_spin

	.section .note.GNU-stack,"",@progbits
