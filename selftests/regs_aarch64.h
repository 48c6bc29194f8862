/* SPDX-License-Identifier: GPL-2.0 */
/* Layout of struct regs_check on aarch64, shared by regs_aarch64.S and regs.c. */
#ifndef _SELFTESTS_REGS_AARCH64_H
#define _SELFTESTS_REGS_AARCH64_H

#define RC_GPR_IN	0	/* x0-x30 */
#define RC_NZCV_IN	248
#define RC_FPSR_IN	256
#define RC_FPCR_IN	264
#define RC_VEC_IN	272	/* q0-q31 */
#define RC_GPR_OUT	784
#define RC_NZCV_OUT	1032
#define RC_FPSR_OUT	1040
#define RC_FPCR_OUT	1048
#define RC_VEC_OUT	1056
#define RC_PSTATE_FIELDS 1568	/* DIT, SSBS, TCO: those the CPU has */
#define RC_PSTATE_IN	1576
#define RC_PSTATE_OUT	1584
#define RC_SIZE		1600

/* The PSTATE fields' bits, in SPSR and in what MRS/MSR of each moves. */
#define RC_TCO_BIT	25
#define RC_DIT_BIT	24
#define RC_SSBS_BIT	12

#endif /* _SELFTESTS_REGS_AARCH64_H */
