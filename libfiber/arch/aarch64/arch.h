/* SPDX-License-Identifier: MIT */
/* AArch64 part of libfiber's internals: the upcall frame seen from C. */
#ifndef LIBFIBER_ARCH_AARCH64_ARCH_H
#define LIBFIBER_ARCH_AARCH64_ARCH_H

#ifndef LIBFIBER_ARCH_H
#error "include arch.h, not arch/aarch64/arch.h"
#endif

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <asm/sigcontext.h>

#include "frame.h"

/* What rt_sigreturn reads at SP: the kernel's struct rt_sigframe. */
struct fiber_upcall_frame {
	siginfo_t info;
	ucontext_t uc;
};

#define FIBER_UC_OFFSET(field) (offsetof(struct fiber_upcall_frame, uc.uc_mcontext.field))
_Static_assert(FIBER_UC_OFFSET(regs) == UC_REGS, "frame.h disagrees with ucontext_t");
_Static_assert(FIBER_UC_OFFSET(sp) == UC_SP, "frame.h disagrees with ucontext_t");
_Static_assert(FIBER_UC_OFFSET(pc) == UC_PC, "frame.h disagrees with ucontext_t");
_Static_assert(FIBER_UC_OFFSET(pstate) == UC_PSTATE, "frame.h disagrees with ucontext_t");
_Static_assert(FIBER_UC_OFFSET(__reserved) == UC_FPSIMD, "frame.h disagrees with ucontext_t");
_Static_assert(UC_FPSIMD + offsetof(struct fpsimd_context, fpsr) == FPSIMD_FPSR, "frame.h");
_Static_assert(UC_FPSIMD + offsetof(struct fpsimd_context, vregs) == FPSIMD_VREGS, "frame.h");
_Static_assert(sizeof(struct fiber_upcall_frame) <= UPCALL_FRAME_SIZE, "frame.h");

static inline uint64_t fiber_arch_uc_pc(const ucontext_t *uc)
{
	return uc->uc_mcontext.pc;
}

static inline void fiber_arch_uc_set_pc(ucontext_t *uc, uint64_t pc)
{
	uc->uc_mcontext.pc = pc;
}

/*
 * Completes the frame upcall.S filled for rt_sigreturn: the signal mask
 * and alternate stack to put back (the worker's own: preemption happens
 * only with the worker's usual mask), and the records of uc_mcontext.
 */
static inline void fiber_arch_upcall_return(struct fiber_upcall_frame *frame,
					    const sigset_t *mask, const stack_t *altstack)
{
	struct fpsimd_context *fp = (struct fpsimd_context *)frame->uc.uc_mcontext.__reserved;
	struct _aarch64_ctx *end = (struct _aarch64_ctx *)(fp + 1);

	frame->uc.uc_flags = 0;
	frame->uc.uc_link = NULL;
	frame->uc.uc_stack = *altstack;
	frame->uc.uc_sigmask = *mask;
	frame->uc.uc_mcontext.fault_address = 0;
	/* EL0t with the saved NZCV; nothing else of PSTATE is user state. */
	frame->uc.uc_mcontext.pstate &= 0xf0000000ULL;
	fp->head.magic = FPSIMD_MAGIC;
	fp->head.size = sizeof(*fp);
	end->magic = 0;
	end->size = 0;
}

#endif /* LIBFIBER_ARCH_AARCH64_ARCH_H */
