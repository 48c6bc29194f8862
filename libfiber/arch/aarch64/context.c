// SPDX-License-Identifier: MIT
/* AArch64: a new fiber's first switch frame. */
#include <stdint.h>
#include <string.h>

#include "internal.h"

_Static_assert(offsetof(struct fiber_preempt_ctl, upcall_pc) == CTL_UPCALL_PC,
	       "frame.h and the UAPI disagree on upcall_pc");
_Static_assert(offsetof(struct fiber_preempt_ctl, sve_live) == CTL_SVE_LIVE,
	       "frame.h and the UAPI disagree on sve_live");

void fiber_arch_init(void)
{
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
