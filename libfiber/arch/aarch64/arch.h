/* SPDX-License-Identifier: MIT */
/* AArch64 part of libfiber's internals: the upcall frame seen from C. */
#ifndef LIBFIBER_ARCH_AARCH64_ARCH_H
#define LIBFIBER_ARCH_AARCH64_ARCH_H

#ifndef LIBFIBER_ARCH_H
#error "include arch.h, not arch/aarch64/arch.h"
#endif

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <asm/sigcontext.h>

#include "frame.h"

/* The PSTATE fields upcall.S saves, NZCV and those of DIT, SSBS, TCO the CPU has. */
extern uint64_t fiber_pstate_fields __attribute__((visibility("hidden")));

/* The architecture's longest SVE vector: 2048 bits. */
#define FIBER_SVE_VQ_MAX	16

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
_Static_assert(UC_FPSIMD + sizeof(struct fpsimd_context) == UC_EXTRA, "frame.h");
_Static_assert(UC_EXTRA + sizeof(struct extra_context) + 16 == UC_SVE, "frame.h");
_Static_assert(UC_SVE + SVE_SIG_REGS_OFFSET == SVE_ZREGS, "frame.h");
_Static_assert(UC_SVE + SVE_SIG_CONTEXT_SIZE(FIBER_SVE_VQ_MAX) + 16 <= UPCALL_FRAME_SIZE, "frame.h");

/*
 * The CPU's free-running counter, the same on every CPU: orders fibers
 * queued on different workers without a shared counter.
 */
static inline uint64_t fiber_arch_ticks(void)
{
	uint64_t v;

	__asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
	return v;
}

static inline uint64_t fiber_arch_uc_pc(const ucontext_t *uc)
{
	return uc->uc_mcontext.pc;
}

static inline void fiber_arch_uc_set_pc(ucontext_t *uc, uint64_t pc)
{
	uc->uc_mcontext.pc = pc;
}

/* A record of uc_mcontext.__reserved (or of the extra area) at an offset. */
static inline void *fiber_arch_frame_at(struct fiber_upcall_frame *frame, size_t offset)
{
	return (char *)frame + offset;
}

/*
 * With SVE saved, __reserved holds the FP/SIMD record, an extra_context
 * pointing just past its own terminator, and that terminator; the SVE
 * record and a last terminator follow there, as the kernel lays out a
 * signal frame too large for __reserved. Returns the end of the records.
 */
static inline struct _aarch64_ctx *fiber_arch_sve_records(struct fiber_upcall_frame *frame,
							  unsigned int vl)
{
	struct extra_context *extra = fiber_arch_frame_at(frame, UC_EXTRA);
	struct sve_context *sve = fiber_arch_frame_at(frame, UC_SVE);
	uint32_t sve_size = (SVE_SIG_CONTEXT_SIZE(sve_vq_from_vl(vl)) + 15) & ~15U;

	memset(fiber_arch_frame_at(frame, UC_EXTRA), 0, UC_SVE - UC_EXTRA);
	extra->head.magic = EXTRA_MAGIC;
	extra->head.size = sizeof(*extra);
	extra->datap = (uintptr_t)sve;
	extra->size = sve_size + 16;
	memset(sve, 0, sizeof(*sve));
	sve->head.magic = SVE_MAGIC;
	sve->head.size = sve_size;
	sve->vl = vl;
	return fiber_arch_frame_at(frame, UC_SVE + sve_size);
}

/*
 * Completes the frame upcall.S filled for rt_sigreturn: the signal mask
 * and alternate stack to put back (the worker's own: preemption happens
 * only with the worker's usual mask), and the records of uc_mcontext.
 */
static inline void fiber_arch_upcall_return(struct fiber_upcall_frame *frame,
					    const sigset_t *mask, const stack_t *altstack)
{
	struct fpsimd_context *fp = fiber_arch_frame_at(frame, UC_FPSIMD);
	uint64_t sve_vl = *(uint64_t *)fiber_arch_frame_at(frame, UPCALL_SVE_VL);
	struct _aarch64_ctx *end = (struct _aarch64_ctx *)(fp + 1);

	frame->uc.uc_flags = 0;
	frame->uc.uc_link = NULL;
	frame->uc.uc_stack = *altstack;
	frame->uc.uc_sigmask = *mask;
	frame->uc.uc_mcontext.fault_address = 0;
	/* EL0t with the fields the trampoline saved (BTYPE 0: not at a branch). */
	frame->uc.uc_mcontext.pstate &= fiber_pstate_fields;
	fp->head.magic = FPSIMD_MAGIC;
	fp->head.size = sizeof(*fp);
	if (sve_vl)
		end = fiber_arch_sve_records(frame, sve_vl);
	end->magic = 0;
	end->size = 0;
}

/*
 * Signal mode: what the trampoline must save of the vector state the
 * kernel's signal frame records (the handler's sigreturn makes it live
 * again before the trampoline runs). False when it cannot: SME streaming
 * mode or ZA storage in use.
 */
static inline bool fiber_arch_uc_vector_state(const ucontext_t *uc, uint32_t *sve_live)
{
	const char *base = (const char *)uc->uc_mcontext.__reserved;
	size_t offset = 0, limit = sizeof(uc->uc_mcontext.__reserved);
	bool extra_seen = false;

	*sve_live = 0;
	while (limit - offset >= sizeof(struct _aarch64_ctx)) {
		const struct _aarch64_ctx *head = (const void *)(base + offset);

		if (!head->magic || head->size < sizeof(*head) || head->size > limit - offset)
			break;
		if (head->magic == SVE_MAGIC && head->size > sizeof(struct sve_context)) {
			const struct sve_context *sve = (const void *)head;

			if (sve->flags & SVE_SIG_FLAG_SM)
				return false;
			*sve_live = 1;
		} else if (head->magic == ZA_MAGIC && head->size > sizeof(struct za_context)) {
			return false;
		} else if (head->magic == EXTRA_MAGIC && !extra_seen) {
			const struct extra_context *extra = (const void *)head;

			extra_seen = true;
			base = (const char *)(uintptr_t)extra->datap;
			offset = 0;
			limit = extra->size;
			continue;
		}
		offset += head->size;
	}
	return true;
}

#endif /* LIBFIBER_ARCH_AARCH64_ARCH_H */
