// SPDX-License-Identifier: MIT
/*
 * What one preemption costs in user space, on this CPU, without the
 * module: the upcall is entered as the module leaves a thread it
 * preempts. A fiber stores the address to resume at in its worker's
 * control block (ctl->upcall_pc), sets ctl->in_upcall and jumps to the
 * trampoline with every other register live. The trampoline saves them
 * and the extended state, the handler checks the fiber's stack and
 * switches to the other fiber, and when this fiber runs again the
 * trampoline restores everything and returns to the stored address.
 *
 * Two fibers on one worker take turns that way; the time per upcall is
 * the wall time of both loops over the number of upcalls: one save, one
 * handler, one switch and the other fiber's restore. The same two fibers
 * taking turns with fiber_yield() give the cooperative switch, and a
 * loop of one XSAVEC (or XSAVE) and one XRSTOR of the same state gives
 * what the extended state alone costs. Each in three states: SSE only,
 * AVX (YMM upper halves) live, AVX-512 (ZMM, opmask) live. Each figure
 * is the best of RUNS interleaved runs of ITERATIONS turns per fiber: the
 * run the rest of the machine disturbed least.
 *
 * What this leaves out is the kernel's part: the timer interrupt and the
 * return to user space at another PC ("preempt cost" in the VM splits
 * that part from the interrupt any design pays).
 *
 * arm64 (under qemu-user, for correctness only: the times are
 * emulated): the same round trip through the arm64 trampoline, which
 * returns by rt_sigreturn.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __x86_64__
#include <cpuid.h>
#endif

#include "internal.h"

#define RUNS		7
#define ITERATIONS	200000

enum loop_kind {
	LOOP_UPCALL,
	LOOP_YIELD,
};

struct loop {
	enum loop_kind kind;
	unsigned long iterations;	/* per fiber */
	double start_ns;		/* when the first fiber began */
	double end_ns;			/* when the last one ended */
	unsigned long upcalls;		/* turns that returned, both fibers */
	int started;
};

/* The state each fiber sets up before its loop. */
enum state {
	STATE_SSE,		/* arm64: FP/SIMD (no SVE) */
	STATE_AVX,
	STATE_AVX512,
	NR_STATES,
};

#ifdef __x86_64__
static const char *const state_names[NR_STATES] = { "sse", "avx", "avx512" };
#else
static const char *const state_names[NR_STATES] = { "fpsimd" };
#endif
static enum state live_state;

static double least(double a, double b)
{
	return a < b ? a : b;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#ifdef __x86_64__

static uint64_t xcr0;
static bool have_xinuse;		/* XGETBV with ECX=1 */

static uint64_t xgetbv(uint32_t index)
{
	uint32_t lo, hi;

	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(index));
	return lo | (uint64_t)hi << 32;
}

/* The components in their initial state: XRSTOR of an empty header. */
static void init_extended_state(void)
{
	static uint8_t area[4096] __attribute__((aligned(64)));
	uint64_t mask = xcr0 & ~3ULL;	/* all but x87 and SSE */

	/* MXCSR is loaded with AVX: keep its default, exceptions masked. */
	*(uint32_t *)&area[24] = 0x1f80;
	asm volatile("xrstor64 %0" : : "m"(area), "a"((uint32_t)mask),
		     "d"((uint32_t)(mask >> 32)) : "memory");
}

static const uint8_t pattern[64] __attribute__((aligned(64))) = {
	1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
	23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
	43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62,
	63, 64,
};

/*
 * Makes live_state the extended state in use. Only registers the loops'
 * own code leaves alone (compiled without AVX, it uses no YMM or ZMM).
 */
static void set_state(void)
{
	init_extended_state();
	if (live_state >= STATE_AVX)
		asm volatile("vmovdqu %0, %%ymm8\n\tvmovdqu %0, %%ymm15" : : "m"(pattern));
	if (live_state >= STATE_AVX512)
		asm volatile("vmovdqu64 %0, %%zmm9\n\tvmovdqu64 %0, %%zmm31\n\t"
			     "movl $0x5a5a, %%eax\n\tkmovw %%eax, %%k3"
			     : : "m"(pattern) : "eax");
}

/* The components in use now, 0 if the CPU cannot say. */
static uint64_t state_in_use(void)
{
	return have_xinuse ? xgetbv(1) : 0;
}

/* Enters the trampoline as the module would, resuming at the label. */
static inline __attribute__((always_inline)) void synthetic_upcall(struct fiber_preempt_ctl *ctl)
{
	asm volatile("leaq 1f(%%rip), %%rax\n\t"
		     "movq %%rax, %c[pc](%[ctl])\n\t"
		     "movl $1, %c[in](%[ctl])\n\t"
		     "jmp fiber_upcall_entry\n"
		     "1:"
		     : : [ctl] "r"(ctl),
		       [pc] "i"(offsetof(struct fiber_preempt_ctl, upcall_pc)),
		       [in] "i"(offsetof(struct fiber_preempt_ctl, in_upcall))
		     : "rax", "memory", "cc");
}

static bool state_available(enum state s)
{
	unsigned int eax, ebx, ecx, edx;

	if (s == STATE_SSE)
		return true;
	if (s == STATE_AVX)
		return (xcr0 & 0x6) == 0x6;
	__cpuid_count(7, 0, eax, ebx, ecx, edx);
	/* AVX-512 F and BW (kmovw needs F only), enabled by the kernel. */
	return (ebx & bit_AVX512F) && (xcr0 & 0xe6) == 0xe6;
}

/* ns per XSAVE-and-XRSTOR pair of the state in use, as the trampoline does. */
static double xsave_pair_ns(void)
{
	static uint8_t *area;
	double t0;
	int i;

	if (!area)
		area = aligned_alloc(64, fiber_xsave_size);
	set_state();
	t0 = now_ns();
	for (i = 0; i < ITERATIONS; i++) {
		memset(area + 512, 0, 64);
		if (fiber_xsave_mode >= XSAVE_MODE_XSAVEC)
			asm volatile("xsavec64 %0" : "=m"(*area) : "a"(-1), "d"(-1) : "memory");
		else
			asm volatile("xsave64 %0" : "=m"(*area) : "a"(-1), "d"(-1) : "memory");
		asm volatile("xrstor64 %0" : : "m"(*area), "a"(-1), "d"(-1) : "memory");
	}
	return (now_ns() - t0) / ITERATIONS;
}

static void arch_setup(void)
{
	unsigned int eax, ebx, ecx, edx;

	if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_OSXSAVE)) {
		xcr0 = xgetbv(0);
		__cpuid_count(0xd, 1, eax, ebx, ecx, edx);
		have_xinuse = eax & (1 << 2);
	}
}

#elif defined(__aarch64__)

static void set_state(void)
{
}

static uint64_t state_in_use(void)
{
	return 0;
}

/*
 * Enters the trampoline as the module would: x16 (IP0, free to clobber at
 * a branch) carries the target, everything else stays live.
 */
static inline __attribute__((always_inline)) void synthetic_upcall(struct fiber_preempt_ctl *ctl)
{
	asm volatile("adr x16, 1f\n\t"
		     "str x16, [%[ctl], %[pc]]\n\t"
		     "mov w16, #1\n\t"
		     "str w16, [%[ctl], %[in]]\n\t"
		     "adrp x16, fiber_upcall_entry\n\t"
		     "add x16, x16, :lo12:fiber_upcall_entry\n\t"
		     "br x16\n"
		     "1:"
		     : : [ctl] "r"(ctl),
		       [pc] "i"(offsetof(struct fiber_preempt_ctl, upcall_pc)),
		       [in] "i"(offsetof(struct fiber_preempt_ctl, in_upcall))
		     : "x16", "memory", "cc");
}

static bool state_available(enum state s)
{
	return s == STATE_SSE;
}

static double xsave_pair_ns(void)
{
	return 0;
}

static void arch_setup(void)
{
}

#endif

/* One fiber's turns; the loops are the same but for the call. */
static void *turns(void *arg)
{
	struct loop *l = arg;
	unsigned long i;

	set_state();
	if (!l->started++)
		l->start_ns = now_ns();
	if (l->kind == LOOP_UPCALL) {
		for (i = 0; i < l->iterations; i++) {
			synthetic_upcall(fiber_tls_ctl);
			l->upcalls++;
		}
	} else {
		for (i = 0; i < l->iterations; i++)
			fiber_yield();
	}
	l->end_ns = now_ns();
	return (void *)state_in_use();
}

static uint64_t in_use;			/* components in use after the loops */

/* ns per turn of one run of two fibers on one worker. */
static double run(enum loop_kind kind)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct loop l = { .kind = kind, .iterations = ITERATIONS };
	fiber_t *f[2];
	void *ret;
	int err, i;

	err = fiber_sched_start(&cfg);
	for (i = 0; i < 2 && !err; i++)
		err = fiber_spawn(&f[i], turns, &l);
	if (err) {
		fprintf(stderr, "upcall: start: %s\n", strerror(-err));
		exit(1);
	}
	for (i = 0; i < 2; i++) {
		fiber_join(f[i], &ret);
		in_use |= (uintptr_t)ret;
	}
	fiber_sched_stop();
	if (kind == LOOP_UPCALL && l.upcalls != 2 * l.iterations) {
		fprintf(stderr, "upcall: %lu of %lu upcalls returned\n", l.upcalls,
			2 * l.iterations);
		exit(1);
	}
	return (l.end_ns - l.start_ns) / (2 * l.iterations);
}

int main(void)
{
	double upcall = 0, yield = 0, xsave = 0;
	bool avx512 = false;
	enum state s;
	int i;

	arch_setup();
	for (s = 0; s < NR_STATES; s++) {
		if (!state_available(s))
			continue;
		live_state = s;
		in_use = 0;
		/* Interleaved, the best of each: what another process took is left out. */
		for (i = 0; i < RUNS; i++) {
			upcall = i ? least(upcall, run(LOOP_UPCALL)) : run(LOOP_UPCALL);
			yield = i ? least(yield, run(LOOP_YIELD)) : run(LOOP_YIELD);
			xsave = i ? least(xsave, xsave_pair_ns()) : xsave_pair_ns();
		}
#ifdef __x86_64__
		printf("upcall: state=%s round_trip_ns=%.0f yield_ns=%.0f xsave_pair_ns=%.0f "
		       "in_use=%#lx\n", state_names[s], upcall, yield, xsave, (unsigned long)in_use);
#else
		printf("upcall: state=%s round_trip_ns=%.0f yield_ns=%.0f (emulated)\n",
		       state_names[s], upcall, yield);
#endif
		avx512 = s == STATE_AVX512;
	}
#ifdef __x86_64__
	printf("upcall: method: two fibers on one worker take turns %d times each by entering "
	       "the trampoline as the module leaves a preempted thread (round_trip: save, "
	       "stack check, switch, the other's restore) or by fiber_yield(); xsave_pair: "
	       "XSAVE%s+XRSTOR of the same state; best of %d interleaved runs on this CPU "
	       "(under TCG, the emulator's), no kernel part\n",
	       ITERATIONS, fiber_xsave_mode >= XSAVE_MODE_XSAVEC ? "C" : "", RUNS);
	if (avx512)
		printf("upcall goal, avx512 state: round trip at most 150 ns: %s; at most yield + "
		       "xsave pair + 30 ns (%.0f ns): %s\n", upcall <= 150 ? "met" : "NOT met",
		       yield + xsave + 30, upcall <= yield + xsave + 30 ? "met" : "NOT met");
	else
		printf("upcall goal: not measured (the CPU has no AVX-512)\n");
#else
	(void)avx512;
	printf("upcall: method: as on x86_64, through the arm64 trampoline (rt_sigreturn); "
	       "under emulation these times are not the hardware's\n");
#endif
	return 0;
}
