/* SPDX-License-Identifier: MIT */
/* x86_64 part of libfiber's internals: the upcall frame seen from C. */
#ifndef LIBFIBER_ARCH_X86_64_ARCH_H
#define LIBFIBER_ARCH_X86_64_ARCH_H

#ifndef LIBFIBER_ARCH_H
#error "include arch.h, not arch/x86_64/arch.h"
#endif

#include <stddef.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <ucontext.h>

#include "frame.h"

/* The GPR part of the upcall frame, as upcall.S pushes it. */
struct fiber_upcall_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t rflags;
	uint64_t pc;
};

_Static_assert(offsetof(struct fiber_upcall_frame, rflags) == UPCALL_FRAME_RFLAGS,
	       "frame.h and struct fiber_upcall_frame disagree");
_Static_assert(offsetof(struct fiber_upcall_frame, pc) == UPCALL_FRAME_RIP,
	       "frame.h and struct fiber_upcall_frame disagree");
_Static_assert(sizeof(struct fiber_upcall_frame) == UPCALL_FRAME_SIZE,
	       "frame.h and struct fiber_upcall_frame disagree");

/*
 * How upcall.S saves the extended state (XSAVE_MODE_*), and the bytes of
 * its area: set once by fiber_arch_init().
 */
extern uint64_t fiber_xsave_size __attribute__((visibility("hidden")));
extern uint32_t fiber_xsave_mode __attribute__((visibility("hidden")));

/*
 * The CPU's free-running counter, the same on every CPU: orders fibers
 * queued on different workers without a shared counter.
 */
static inline uint64_t fiber_arch_ticks(void)
{
	return __builtin_ia32_rdtsc();
}

static inline uint64_t fiber_arch_uc_pc(const ucontext_t *uc)
{
	return uc->uc_mcontext.gregs[REG_RIP];
}

static inline void fiber_arch_uc_set_pc(ucontext_t *uc, uint64_t pc)
{
	uc->uc_mcontext.gregs[REG_RIP] = pc;
}

/* Signal mode: the trampoline's XSAVE covers all vector state. */
static inline bool fiber_arch_uc_vector_state(const ucontext_t *uc, uint32_t *sve_live)
{
	*sve_live = 0;
	return true;
}

/* upcall.S restores everything itself. */
static inline void fiber_arch_upcall_return(struct fiber_upcall_frame *frame,
					    const sigset_t *mask, const stack_t *altstack)
{
}

#endif /* LIBFIBER_ARCH_X86_64_ARCH_H */
