// SPDX-License-Identifier: MIT
/* x86_64: a new fiber's first switch frame, and how much extended state to save. */
#include <cpuid.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Read by upcall.S. */
uint64_t fiber_xsave_size FIBER_HIDDEN;
uint32_t fiber_xsave_mode FIBER_HIDDEN;

_Static_assert(offsetof(struct fiber_preempt_ctl, upcall_pc) == CTL_UPCALL_PC,
	       "frame.h and the UAPI disagree on upcall_pc");

static uint64_t xgetbv0(void)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return lo | (uint64_t)hi << 32;
}

/*
 * Whether the trampoline's plain moves can save and restore every state
 * component XCR0 enables but x87 (saved by XSAVEC whenever in use): SSE,
 * AVX, AVX-512 with 64-bit opmasks (BW). Not PKRU, AMX or MPX state.
 */
static bool byhand_covers(uint64_t xcr0)
{
	unsigned int eax, ebx, ecx, edx;

	if (xcr0 & ~(uint64_t)(XFEATURE_X87 | XFEATURES_BYHAND))
		return false;
	if (!(xcr0 & XFEATURE_OPMASK))
		return true;
	__cpuid_count(7, 0, eax, ebx, ecx, edx);
	return (ebx & bit_AVX512F) && (ebx & bit_AVX512BW);
}

void fiber_arch_init(void)
{
	unsigned int eax, ebx, ecx, edx;
	uint64_t size = 512;		/* FXSAVE */

	fiber_xsave_mode = XSAVE_MODE_FXSAVE;
	if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_OSXSAVE)) {
		/* EBX: bytes needed by the components enabled in XCR0. */
		__cpuid_count(0xd, 0, eax, ebx, ecx, edx);
		size = ebx;
		fiber_xsave_mode = XSAVE_MODE_XSAVE;
		__cpuid_count(0xd, 1, eax, ebx, ecx, edx);
		if (eax & bit_XSAVEC)
			fiber_xsave_mode = XSAVE_MODE_XSAVEC;
		/* XGETBV 1 (XINUSE), and plain moves can restore all XCR0 holds. */
		if ((eax & bit_XSAVEC) && (eax & (1 << 2)) && byhand_covers(xgetbv0())) {
			fiber_xsave_mode = XSAVE_MODE_BYHAND;
			if (size < BYHAND_SIZE)
				size = BYHAND_SIZE;
		}
	}
	fiber_xsave_size = (size + 63) & ~(uint64_t)63;
}

void *fiber_arch_init_stack(void *top, struct fiber *f)
{
	/* fiber_entry starts with %rsp 16-byte aligned, as after a call's push. */
	uint64_t *frame = (uint64_t *)(((uintptr_t)top & ~(uintptr_t)15) - 16 -
				       SWITCH_FRAME_SIZE);
	uint32_t mxcsr = 0x1f80;	/* all exceptions masked, round to nearest */
	uint16_t fcw = 0x037f;		/* the x87 default */

	memset(frame, 0, SWITCH_FRAME_SIZE);
	memcpy((char *)frame + SWITCH_FRAME_CSR, &mxcsr, sizeof(mxcsr));
	memcpy((char *)frame + SWITCH_FRAME_CSR + 4, &fcw, sizeof(fcw));
	frame[SWITCH_FRAME_R12 / 8] = (uintptr_t)f;
	frame[SWITCH_FRAME_R13 / 8] = (uintptr_t)f->fn;
	frame[SWITCH_FRAME_R14 / 8] = (uintptr_t)f->arg;
	frame[SWITCH_FRAME_RET / 8] = (uintptr_t)fiber_entry;
	return frame;
}
