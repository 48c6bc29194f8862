/* SPDX-License-Identifier: GPL-2.0 */
/*
 * long rseq_increment(struct rseq *rs, long *counter, unsigned long spin)
 *
 * An rseq critical section: load *counter, spin `spin` times, store it
 * plus one. Returns 0 once the store committed, 1 when the section was
 * aborted (and nothing was stored).
 */
#define RSEQ_CS_FIELD	8		/* offsetof(struct rseq, rseq_cs) */
#define RSEQ_SIG	0xd428bc00	/* brk #0x45e0 */

	.pushsection __rseq_cs, "aw"
	.balign	32
increment_cs:
	.long	0, 0				/* version, flags */
	.quad	1f, 2f - 1f, 4f			/* start, post-commit offset, abort */
	.popsection

	.text
	.globl	rseq_increment
	.type	rseq_increment, %function
rseq_increment:
	.cfi_startproc
	hint	#34				/* bti c */
	adrp	x3, increment_cs
	add	x3, x3, :lo12:increment_cs
	str	x3, [x0, #RSEQ_CS_FIELD]	/* enter the section */
1:	ldr	x4, [x1]
	mov	x5, x2
3:	subs	x5, x5, #1
	b.ne	3b
	add	x4, x4, #1
	str	x4, [x1]			/* commit */
2:	mov	x0, #0
	ret
	.long	RSEQ_SIG
4:	mov	x0, #1
	ret
	.cfi_endproc
	.size	rseq_increment, .-rseq_increment

	.section .note.GNU-stack,"",%progbits
