/* SPDX-License-Identifier: MIT */
/*
 * The stack walker: DWARF call frame information (.eh_frame) of the
 * objects whose code fibers may be preempted in, read without locks or
 * allocation so that the upcall can walk the interrupted fiber's stack.
 */
#ifndef LIBFIBER_UNWIND_H
#define LIBFIBER_UNWIND_H

#include <link.h>
#include <stdbool.h>
#include <stdint.h>
#include <ucontext.h>

#include "arch.h"

/* One frame: the registers the walker knows, and where it is executing. */
struct fiber_unwind_regs {
	uint64_t reg[32];	/* by DWARF register number, UNWIND_NR_REGS used */
	uint64_t pc;		/* frame 0: the interrupted PC; then a return address */
	bool caller;		/* pc is a return address: look up pc - 1 */
};

#if defined(__x86_64__)
#include "arch/x86_64/unwind.h"
#elif defined(__aarch64__)
#include "arch/aarch64/unwind.h"
#else
#error "unsupported architecture"
#endif

_Static_assert(UNWIND_NR_REGS <= 32, "struct fiber_unwind_regs is too small");

/* Most frames walked before a stack counts as not walkable. */
#define FIBER_UNWIND_MAX_FRAMES	128

/*
 * Adds the object described by info (as dl_iterate_phdr() reports it) to
 * the objects whose CFI the walker reads. Not thread-safe against walks:
 * called while no fiber runs. Returns 0 (also for an object indexed already),
 * -ENOSPC when the index is full, or -ENOEXEC when the object has no usable
 * .eh_frame_hdr.
 */
int fiber_unwind_add_object(const struct dl_phdr_info *info) __attribute__((visibility("hidden")));

/* Empties the index. */
void fiber_unwind_reset(void) __attribute__((visibility("hidden")));

/* Frames already looked up, by PC: one per thread that walks often. */
struct fiber_unwind_cache;

/*
 * A cache for fiber_unwind_step(), empty; free() releases it. NULL when
 * out of memory. Valid until the index changes (fiber_unwind_reset()).
 */
struct fiber_unwind_cache *fiber_unwind_cache_new(void) __attribute__((visibility("hidden")));

/*
 * Steps r from a frame to its caller, reading the stack only inside
 * [lo, hi). cache, if not NULL, is used by this thread alone. Returns 1
 * with r describing the caller, 0 when the CFI says the frame has no
 * caller (the bottom of a stack), or a negative errno when the walk
 * cannot go on: -ENOENT (no CFI for r->pc), -EFAULT (a read outside the
 * stack), -EINVAL (CFI the walker does not understand).
 */
int fiber_unwind_step(struct fiber_unwind_regs *r, uintptr_t lo, uintptr_t hi,
		      struct fiber_unwind_cache *cache) __attribute__((visibility("hidden")));

#endif /* LIBFIBER_UNWIND_H */
