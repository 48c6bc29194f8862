/* SPDX-License-Identifier: GPL-2.0 */
/*
 * long rseq_increment(struct rseq *rs, long *counter, unsigned long spin)
 *
 * An rseq critical section: load *counter, spin `spin` times, store it
 * plus one. Returns 0 once the store committed, 1 when the section was
 * aborted (and nothing was stored).
 */
#define RSEQ_CS_FIELD	8	/* offsetof(struct rseq, rseq_cs) */
#define RSEQ_SIG	0x53053053

	.pushsection __rseq_cs, "aw"
	.balign	32
increment_cs:
	.long	0, 0				/* version, flags */
	.quad	1f, 2f - 1f, 4f			/* start, post-commit offset, abort */
	.popsection

	.text
	.globl	rseq_increment
	.type	rseq_increment, @function
rseq_increment:
	.cfi_startproc
	leaq	increment_cs(%rip), %rax
	movq	%rax, RSEQ_CS_FIELD(%rdi)	/* enter the section */
1:	movq	(%rsi), %rax
	movq	%rdx, %rcx
3:	decq	%rcx
	jnz	3b
	incq	%rax
	movq	%rax, (%rsi)			/* commit */
2:	xorl	%eax, %eax
	ret
	.long	RSEQ_SIG
4:	movl	$1, %eax
	ret
	.cfi_endproc
	.size	rseq_increment, .-rseq_increment

	.section .note.GNU-stack,"",@progbits
