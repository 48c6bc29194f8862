/* SPDX-License-Identifier: MIT */
/* AArch64: the registers the stack walker tracks, as DWARF numbers them. */
#ifndef LIBFIBER_ARCH_AARCH64_UNWIND_H
#define LIBFIBER_ARCH_AARCH64_UNWIND_H

#ifndef LIBFIBER_UNWIND_H
#error "include unwind.h, not arch/aarch64/unwind.h"
#endif

/* DWARF columns 0-30: x0-x30 (x30 the return address); 31: sp. */
#define UNWIND_NR_REGS		32
#define UNWIND_SP		31
#define UNWIND_RA		30

static inline void fiber_unwind_from_mcontext(struct fiber_unwind_regs *r, const mcontext_t *mc)
{
	int i;

	for (i = 0; i < 31; i++)
		r->reg[i] = mc->regs[i];
	r->reg[31] = mc->sp;
	r->pc = mc->pc;
}

static inline void fiber_unwind_from_upcall(struct fiber_unwind_regs *r,
					    const struct fiber_upcall_frame *f)
{
	fiber_unwind_from_mcontext(r, &f->uc.uc_mcontext);
}

static inline void fiber_unwind_from_ucontext(struct fiber_unwind_regs *r, const ucontext_t *uc)
{
	fiber_unwind_from_mcontext(r, &uc->uc_mcontext);
}

/*
 * A return address signed with pointer authentication (the CFI said so
 * with DW_CFA_AARCH64_negate_ra_state): XPACLRI strips the signature; it
 * is a NOP on CPUs without the extension.
 */
static inline uint64_t fiber_unwind_strip_ra(uint64_t ra)
{
	register uint64_t x30 __asm__("x30") = ra;

	__asm__("hint #7" : "+r"(x30));		/* xpaclri */
	return x30;
}

/*
 * A switched-out fiber, from the switch frame fiber_switch() left at sp
 * (frame.h): x19-x29, and x30, the return address into the function that
 * switched.
 */
static inline void fiber_unwind_from_switch(struct fiber_unwind_regs *r, uintptr_t sp)
{
	const uint64_t *s = (const uint64_t *)sp;
	int i;

	for (i = 19; i <= 30; i++)
		r->reg[i] = s[SWITCH_FRAME_X19 / 8 + i - 19];
	r->reg[31] = sp + SWITCH_FRAME_SIZE;
	r->pc = fiber_unwind_strip_ra(r->reg[30]);
	r->caller = true;
}

#endif /* LIBFIBER_ARCH_AARCH64_UNWIND_H */
