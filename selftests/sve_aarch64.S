/* SPDX-License-Identifier: GPL-2.0 */
/*
 * SVE register images for sve.c. An image is what the kernel's
 * sve_context record holds after its header: z0-z31 (VL bytes each),
 * p0-p15 (VL/8 bytes each), then FFR (VL/8 bytes).
 *
 * uint64_t sve_spin(const void *in, void *out, const volatile int *stop,
 *                   uint64_t iterations)
 *	Loads every SVE register from in, spins until *stop is set or
 *	`iterations` run out (ldr, cbnz, sub and cbnz on x2, x3 and x6
 *	only), stores every SVE register to out; returns the iterations
 *	left.
 *
 * void sve_clobber(const void *in)
 *	Loads every SVE register from in and returns (d8-d15, which the
 *	caller keeps, are put back; their upper bits stay clobbered).
 *
 * unsigned long sve_vl(void)
 *	The vector length in bytes (RDVL), which also makes SVE state live.
 */
	.arch	armv8.2-a+sve
	.text

/* Saves d8-d15 (the low halves of z8-z15) that AAPCS64 has callees keep. */
.macro	save_d8_d15
	stp	d8, d9, [sp, #-64]!
	.cfi_def_cfa_offset 64
	stp	d10, d11, [sp, #16]
	stp	d12, d13, [sp, #32]
	stp	d14, d15, [sp, #48]
.endm

.macro	restore_d8_d15
	ldp	d10, d11, [sp, #16]
	ldp	d12, d13, [sp, #32]
	ldp	d14, d15, [sp, #48]
	ldp	d8, d9, [sp], #64
	.cfi_def_cfa_offset 0
.endm

/* All of z, p and FFR from the image at \base; \vl holds VL; clobbers \tmp. */
.macro	load_image base, vl, tmp
	add	\tmp, \base, \vl, lsl #5
	ldr	p0, [\tmp, #16, mul vl]
	wrffr	p0.b
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	ldr	p\n, [\tmp, #\n, mul vl]
	.endr
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	ldr	z\n, [\base, #\n, mul vl]
	.endr
.endm

	.globl	sve_spin
	.type	sve_spin, %function
sve_spin:
	.cfi_startproc
	hint	#34				/* bti c */
	save_d8_d15
	rdvl	x4, #1
	load_image x0, x4, x5
1:	ldr	w6, [x2]
	cbnz	w6, 2f
	sub	x3, x3, #1
	cbnz	x3, 1b
2:	add	x5, x1, x4, lsl #5
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	str	z\n, [x1, #\n, mul vl]
	.endr
	.irp	n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
	str	p\n, [x5, #\n, mul vl]
	.endr
	rdffr	p0.b
	str	p0, [x5, #16, mul vl]
	mov	x0, x3
	restore_d8_d15
	ret
	.cfi_endproc
	.size	sve_spin, .-sve_spin

	.globl	sve_clobber
	.type	sve_clobber, %function
sve_clobber:
	.cfi_startproc
	hint	#34				/* bti c */
	save_d8_d15
	rdvl	x4, #1
	load_image x0, x4, x5
	restore_d8_d15
	ret
	.cfi_endproc
	.size	sve_clobber, .-sve_clobber

	.globl	sve_vl
	.type	sve_vl, %function
sve_vl:
	hint	#34				/* bti c */
	rdvl	x0, #1
	ret
	.size	sve_vl, .-sve_vl

	.section .note.GNU-stack,"",%progbits
