/* SPDX-License-Identifier: MIT */
/* x86_64: the registers the stack walker tracks, as DWARF numbers them. */
#ifndef LIBFIBER_ARCH_X86_64_UNWIND_H
#define LIBFIBER_ARCH_X86_64_UNWIND_H

#ifndef LIBFIBER_UNWIND_H
#error "include unwind.h, not arch/x86_64/unwind.h"
#endif

/* DWARF columns 0-15: rax rdx rcx rbx rsi rdi rbp rsp r8-r15; 16: rip. */
#define UNWIND_NR_REGS		17
#define UNWIND_SP		7
#define UNWIND_RA		16

static inline void fiber_unwind_from_upcall(struct fiber_unwind_regs *r,
					    const struct fiber_upcall_frame *f)
{
	r->reg[0] = f->rax;
	r->reg[1] = f->rdx;
	r->reg[2] = f->rcx;
	r->reg[3] = f->rbx;
	r->reg[4] = f->rsi;
	r->reg[5] = f->rdi;
	r->reg[6] = f->rbp;
	/* The interrupted %rsp: above the frame and the red zone it skipped. */
	r->reg[7] = (uintptr_t)f + UPCALL_CFA_OFFSET;
	r->reg[8] = f->r8;
	r->reg[9] = f->r9;
	r->reg[10] = f->r10;
	r->reg[11] = f->r11;
	r->reg[12] = f->r12;
	r->reg[13] = f->r13;
	r->reg[14] = f->r14;
	r->reg[15] = f->r15;
	r->reg[16] = f->pc;
	r->pc = f->pc;
}

static inline void fiber_unwind_from_ucontext(struct fiber_unwind_regs *r, const ucontext_t *uc)
{
	static const unsigned char greg[16] = {
		REG_RAX, REG_RDX, REG_RCX, REG_RBX, REG_RSI, REG_RDI, REG_RBP, REG_RSP,
		REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15,
	};
	int i;

	for (i = 0; i < 16; i++)
		r->reg[i] = uc->uc_mcontext.gregs[greg[i]];
	r->pc = r->reg[16] = uc->uc_mcontext.gregs[REG_RIP];
}

/*
 * A switched-out fiber, from the switch frame fiber_switch() left at sp
 * (frame.h): the callee-saved registers, and the return address into
 * the function that switched.
 */
static inline void fiber_unwind_from_switch(struct fiber_unwind_regs *r, uintptr_t sp)
{
	const uint64_t *s = (const uint64_t *)sp;

	r->reg[15] = s[1];
	r->reg[14] = s[SWITCH_FRAME_R14 / 8];
	r->reg[13] = s[SWITCH_FRAME_R13 / 8];
	r->reg[12] = s[SWITCH_FRAME_R12 / 8];
	r->reg[3] = s[5];
	r->reg[6] = s[SWITCH_FRAME_RBP / 8];
	r->reg[7] = sp + SWITCH_FRAME_SIZE;
	r->pc = r->reg[16] = s[SWITCH_FRAME_RET / 8];
	r->caller = true;
}

/* No pointer authentication on x86_64. */
static inline uint64_t fiber_unwind_strip_ra(uint64_t ra)
{
	return ra;
}

#endif /* LIBFIBER_ARCH_X86_64_UNWIND_H */
