// SPDX-License-Identifier: MIT
/*
 * What the upcall's whole-stack check costs: libfiber's CFI walker
 * (internal, hence libfiber.a) walking the calling thread's own stack
 * from a point D frames below main, as the upcall walks a preempted
 * fiber's stack from the interrupted instruction. The time of a walk at
 * several depths gives the cost per walk and, from the slope, per frame.
 * Compare the per-walk figure at a typical depth with "preempt cost" in
 * the same environment: that ratio is what the check adds to a
 * preemption.
 */
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <ucontext.h>

#include "unwind.h"

#define WALKS 20000

static uintptr_t stack_lo, stack_hi;
static volatile int frames_seen;

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Walks from uc until the walker finds no CFI (libc's __libc_start_main). */
static int walk(const ucontext_t *uc)
{
	struct fiber_unwind_regs r = { .caller = false };
	int n = 0;

	fiber_unwind_from_ucontext(&r, uc);
	while (n < FIBER_UNWIND_MAX_FRAMES && fiber_unwind_step(&r, stack_lo, stack_hi, NULL) == 1)
		n++;
	return n;
}

/* Recurses depth frames down, then times WALKS walks from there. */
__attribute__((noipa)) static double nest(int depth, int *frames)
{
	ucontext_t uc;
	double t0;
	int i;

	if (depth > 0)
		return nest(depth - 1, frames) + 0.0 * depth;
	getcontext(&uc);
	t0 = now_ns();
	for (i = 0; i < WALKS; i++)
		frames_seen = walk(&uc);
	*frames = frames_seen;
	return (now_ns() - t0) / WALKS;
}

static int add_executable(struct dl_phdr_info *info, size_t size, void *data)
{
	*(int *)data = fiber_unwind_add_object(info);
	return 1;
}

int main(void)
{
	static const int depths[] = { 1, 4, 16, 64 };
	double ns[4];
	int frames[4], err = -1, i;
	pthread_attr_t attr;
	size_t size;
	void *addr;

	dl_iterate_phdr(add_executable, &err);
	if (err) {
		fprintf(stderr, "unwind: the executable's CFI could not be indexed (%d)\n", err);
		return 1;
	}
	pthread_getattr_np(pthread_self(), &attr);
	pthread_attr_getstack(&attr, &addr, &size);
	stack_lo = (uintptr_t)addr;
	stack_hi = (uintptr_t)addr + size;
	for (i = 0; i < 4; i++) {
		ns[i] = nest(depths[i], &frames[i]);
		printf("unwind: frames=%d walk_ns=%.0f\n", frames[i], ns[i]);
	}
	printf("unwind: per_frame_ns=%.1f (slope from %d to %d frames; %d walks each, CLOCK_MONOTONIC)\n",
	       (ns[3] - ns[0]) / (frames[3] - frames[0]), frames[0], frames[3], WALKS);
	return 0;
}
