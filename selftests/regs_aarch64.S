/* SPDX-License-Identifier: GPL-2.0 */
/*
 * void regs_spin(struct regs_check *rc, uint64_t iterations, int level)
 *
 * Loads x0-x30 (but x9), NZCV, FPSR, FPCR, q0-q31 and the PSTATE fields
 * of rc->pstate_fields (DIT, SSBS, TCO) from rc, spins `iterations` times
 * with instructions that change nothing else (sub without flags and cbnz,
 * on x9 only), then stores them all back to rc's out fields for the
 * caller to compare, and gives the caller back its PSTATE fields.
 */
#include "regs_aarch64.h"

/* MSR of DIT, SSBS and TCO, those whose bit is set in fields, from value. */
.macro	pstate_write fields, value
	tbz	\fields, #RC_DIT_BIT, 91f
	msr	s3_3_c4_c2_5, \value		/* DIT */
91:	tbz	\fields, #RC_SSBS_BIT, 92f
	msr	s3_3_c4_c2_6, \value		/* SSBS */
92:	tbz	\fields, #RC_TCO_BIT, 93f
	msr	s3_3_c4_c2_7, \value		/* TCO */
93:
.endm

/* MRS of DIT, SSBS and TCO, those whose bit is set in fields, into out. */
.macro	pstate_read fields, out, tmp
	mov	\out, #0
	tbz	\fields, #RC_DIT_BIT, 94f
	mrs	\tmp, s3_3_c4_c2_5
	orr	\out, \out, \tmp
94:	tbz	\fields, #RC_SSBS_BIT, 95f
	mrs	\tmp, s3_3_c4_c2_6
	orr	\out, \out, \tmp
95:	tbz	\fields, #RC_TCO_BIT, 96f
	mrs	\tmp, s3_3_c4_c2_7
	orr	\out, \out, \tmp
96:
.endm

#define LOCAL_SAVED	0	/* x19-x30, d8-d15: 160 bytes */
#define LOCAL_RC	160
#define LOCAL_FPCR	168	/* the caller's FPCR */
#define LOCAL_GPR	176	/* x0-x30 */
#define LOCAL_NZCV	424
#define LOCAL_FPSR	432
#define LOCAL_FPCR_OUT	440
#define LOCAL_PSTATE	448	/* the caller's DIT, SSBS, TCO */
#define LOCAL_SIZE	464

	.text
	.globl	regs_spin
	.type	regs_spin, %function
regs_spin:
	.cfi_startproc
	hint	#34				/* bti c */
	sub	sp, sp, #LOCAL_SIZE
	.cfi_def_cfa_offset LOCAL_SIZE
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	.cfi_offset x29, 80 - LOCAL_SIZE
	.cfi_offset x30, 88 - LOCAL_SIZE
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	str	x0, [sp, #LOCAL_RC]
	mrs	x10, fpcr
	str	x10, [sp, #LOCAL_FPCR]
	ldr	x11, [x0, #RC_PSTATE_FIELDS]
	pstate_read x11, x12, x10
	str	x12, [sp, #LOCAL_PSTATE]

	add	x10, x0, #RC_VEC_IN
	ldp	q0, q1, [x10, #0]
	ldp	q2, q3, [x10, #32]
	ldp	q4, q5, [x10, #64]
	ldp	q6, q7, [x10, #96]
	ldp	q8, q9, [x10, #128]
	ldp	q10, q11, [x10, #160]
	ldp	q12, q13, [x10, #192]
	ldp	q14, q15, [x10, #224]
	ldp	q16, q17, [x10, #256]
	ldp	q18, q19, [x10, #288]
	ldp	q20, q21, [x10, #320]
	ldp	q22, q23, [x10, #352]
	ldp	q24, q25, [x10, #384]
	ldp	q26, q27, [x10, #416]
	ldp	q28, q29, [x10, #448]
	ldp	q30, q31, [x10, #480]
	ldr	x10, [x0, #RC_FPCR_IN]
	msr	fpcr, x10
	ldr	x10, [x0, #RC_FPSR_IN]
	msr	fpsr, x10
	ldr	x10, [x0, #RC_PSTATE_IN]
	pstate_write x11, x10
	ldr	x10, [x0, #RC_NZCV_IN]
	msr	nzcv, x10
	mov	x9, x1
	ldp	x1, x2, [x0, #8]
	ldp	x3, x4, [x0, #24]
	ldp	x5, x6, [x0, #40]
	ldp	x7, x8, [x0, #56]
	ldp	x10, x11, [x0, #80]
	ldp	x12, x13, [x0, #96]
	ldp	x14, x15, [x0, #112]
	ldp	x16, x17, [x0, #128]
	ldp	x18, x19, [x0, #144]
	ldp	x20, x21, [x0, #160]
	ldp	x22, x23, [x0, #176]
	ldp	x24, x25, [x0, #192]
	ldp	x26, x27, [x0, #208]
	ldp	x28, x29, [x0, #224]
	ldr	x30, [x0, #240]
	ldr	x0, [x0, #0]

.Lspin:						/* touches x9 and pc only */
	sub	x9, x9, #1
	cbnz	x9, .Lspin

	stp	x0, x1, [sp, #LOCAL_GPR]
	add	x0, sp, #LOCAL_GPR
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
	mrs	x1, nzcv
	str	x1, [sp, #LOCAL_NZCV]
	mrs	x1, fpsr
	str	x1, [sp, #LOCAL_FPSR]
	mrs	x1, fpcr
	str	x1, [sp, #LOCAL_FPCR_OUT]

	ldr	x0, [sp, #LOCAL_RC]
	ldr	x3, [x0, #RC_PSTATE_FIELDS]
	pstate_read x3, x4, x5
	str	x4, [x0, #RC_PSTATE_OUT]
	ldr	x4, [sp, #LOCAL_PSTATE]
	pstate_write x3, x4
	add	x1, sp, #LOCAL_GPR
	add	x2, x0, #RC_GPR_OUT
	mov	x3, #34				/* x0-x30, nzcv, fpsr, fpcr */
1:	ldr	x4, [x1], #8
	str	x4, [x2], #8
	subs	x3, x3, #1
	b.ne	1b
	add	x10, x0, #RC_VEC_OUT
	stp	q0, q1, [x10, #0]
	stp	q2, q3, [x10, #32]
	stp	q4, q5, [x10, #64]
	stp	q6, q7, [x10, #96]
	stp	q8, q9, [x10, #128]
	stp	q10, q11, [x10, #160]
	stp	q12, q13, [x10, #192]
	stp	q14, q15, [x10, #224]
	stp	q16, q17, [x10, #256]
	stp	q18, q19, [x10, #288]
	stp	q20, q21, [x10, #320]
	stp	q22, q23, [x10, #352]
	stp	q24, q25, [x10, #384]
	stp	q26, q27, [x10, #416]
	stp	q28, q29, [x10, #448]
	stp	q30, q31, [x10, #480]

	ldr	x10, [sp, #LOCAL_FPCR]
	msr	fpcr, x10
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	add	sp, sp, #LOCAL_SIZE
	.cfi_def_cfa_offset 0
	ret
	.cfi_endproc
	.size	regs_spin, .-regs_spin

	.section .note.GNU-stack,"",%progbits
