/* SPDX-License-Identifier: GPL-2.0 */
/* Layout of struct regs_check, shared by regs_x86_64.S and regs.c. */
#ifndef _SELFTESTS_REGS_X86_64_H
#define _SELFTESTS_REGS_X86_64_H

#define RC_NR_GPRS	14	/* rax rbx rdx rsi rdi rbp r8-r15; rcx counts */
#define RC_GPR_IN	0
#define RC_FLAGS_IN	112
#define RC_MXCSR_IN	120
#define RC_FCW_IN	124
#define RC_REDZONE_IN	128
#define RC_GPR_OUT	256
#define RC_FLAGS_OUT	368
#define RC_MXCSR_OUT	376
#define RC_FCW_OUT	380
#define RC_REDZONE_OUT	384
#define RC_VEC_IN	512	/* 32 x 64 bytes */
#define RC_K_IN		2560	/* 8 x 8 bytes */
#define RC_VEC_OUT	2624
#define RC_K_OUT	4672
#define RC_SIZE		4736

/* Vector state levels. */
#define RC_SSE		0	/* xmm0-15 */
#define RC_BASE		RC_SSE	/* GPRs, rflags, MXCSR, x87 CW, red zone, xmm */
#define RC_AVX		1	/* ymm0-15 */
#define RC_AVX512	2	/* zmm0-31, k0-7 */

/* Layout of struct clean_out (regs_clean_spin()). */
#define CO_VEC		0	/* zmm0-31 (or ymm0-15), 64 bytes each */
#define CO_K		2048	/* k0-k7 */
#define CO_X87ENV	2112	/* FNSTENV: control, status, tag words first */
#define CO_SIZE		2176

#endif /* _SELFTESTS_REGS_X86_64_H */
