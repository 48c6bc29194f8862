// SPDX-License-Identifier: MIT
/* AArch64: the PSTATE fields a preemption keeps, a new fiber's first switch frame. */
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>
#include <asm/hwcap.h>

#include "internal.h"

_Static_assert(offsetof(struct fiber_preempt_ctl, upcall_pc) == CTL_UPCALL_PC,
	       "frame.h and the UAPI disagree on upcall_pc");
_Static_assert(offsetof(struct fiber_preempt_ctl, sve_live) == CTL_SVE_LIVE,
	       "frame.h and the UAPI disagree on sve_live");

uint64_t fiber_pstate_fields;

/*
 * Beside NZCV, EL0 writes three PSTATE fields with MSR, and a preempted
 * fiber must get back the values it had: DIT (data-independent timing,
 * which constant-time cryptographic code turns on around itself), SSBS
 * (whether stores may be bypassed speculatively, a thread's Spectre v4
 * setting) and TCO (memory tagging's check override, which allocators
 * turn on to reach memory of any tag). Reading one the CPU lacks is an
 * undefined instruction, so the trampoline reads only those set here.
 */
void fiber_arch_init(void)
{
	unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
	uint64_t fields = PSTATE_NZCV;

	if (hwcap & HWCAP_DIT)
		fields |= 1ULL << PSTATE_DIT_BIT;
	if (hwcap & HWCAP_SSBS)
		fields |= 1ULL << PSTATE_SSBS_BIT;
	if (hwcap2 & HWCAP2_MTE)
		fields |= 1ULL << PSTATE_TCO_BIT;
	fiber_pstate_fields = fields;
}

void *fiber_arch_init_stack(void *top, struct fiber *f)
{
	uint64_t *frame = (uint64_t *)(((uintptr_t)top & ~(uintptr_t)15) - SWITCH_FRAME_SIZE);

	memset(frame, 0, SWITCH_FRAME_SIZE);	/* FPCR 0: round to nearest */
	frame[SWITCH_FRAME_X19 / 8] = (uintptr_t)f;
	frame[SWITCH_FRAME_X19 / 8 + 1] = (uintptr_t)f->fn;	/* x20 */
	frame[SWITCH_FRAME_X19 / 8 + 2] = (uintptr_t)f->arg;	/* x21 */
	frame[SWITCH_FRAME_X29 / 8 + 1] = (uintptr_t)fiber_entry;
	return frame;
}
