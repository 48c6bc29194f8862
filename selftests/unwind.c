// SPDX-License-Identifier: GPL-2.0
/*
 * The upcall trampoline's CFI lets an unwinder walk from inside an upcall
 * through the trampoline frame into the function that was preempted, at
 * whatever instruction it was, and on to the bottom of the fiber's stack.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <unwind.h>

#define TARGET		200		/* upcalls to walk from */
#define TIME_LIMIT_NS	20000000000ULL

static atomic_bool stop;
static atomic_long walks, found_target, found_main, too_deep;
static volatile unsigned long spins;

/* Preempted here, at any of its instructions. */
__attribute__((noinline)) void unwind_spin_target(void)
{
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		spins++;
}

__attribute__((noinline)) void *unwind_fiber_main(void *arg)
{
	unwind_spin_target();
	__asm__ volatile("" ::: "memory");	/* not a tail call */
	return NULL;
}

struct walk {
	int depth;
	bool target, main;
};

static bool frame_is(void *pc, void *fn)
{
	Dl_info di;

	return dladdr(pc, &di) && di.dli_saddr == fn;
}

static _Unwind_Reason_Code walk_frame(struct _Unwind_Context *ctx, void *arg)
{
	struct walk *w = arg;
	int before_insn = 0;
	uintptr_t pc = _Unwind_GetIPInfo(ctx, &before_insn);

	/* A return address points after the call; an interrupted PC does not. */
	if (pc && !before_insn)
		pc--;
	if (frame_is((void *)pc, unwind_spin_target))
		w->target = true;
	if (w->target && frame_is((void *)pc, unwind_fiber_main))
		w->main = true;
	return ++w->depth < 64 ? _URC_NO_REASON : _URC_END_OF_STACK;
}

/* libfiber calls this at the start of each upcall. */
void fiber_upcall_inject(void)
{
	struct walk w = { 0 };

	_Unwind_Backtrace(walk_frame, &w);
	atomic_fetch_add(&walks, 1);
	if (w.target)
		atomic_fetch_add(&found_target, 1);
	if (w.main)
		atomic_fetch_add(&found_main, 1);
	if (w.depth >= 64)
		atomic_fetch_add(&too_deep, 1);
}

static void *other_main(void *arg)
{
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		;
	return NULL;
}

FIBER_MODE_FIXTURE(unwind);

TEST_F_TIMEOUT(unwind, through_trampoline, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *a, *b;
	uint64_t deadline;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&a, unwind_fiber_main, NULL));
	ASSERT_EQ(0, fiber_spawn(&b, other_main, NULL));
	deadline = test_now_ns() + TIME_LIMIT_NS;
	while (atomic_load(&walks) < TARGET && test_now_ns() < deadline)
		fiber_sleep(10000000);
	atomic_store(&stop, true);
	ASSERT_EQ(0, fiber_join(a, NULL));
	ASSERT_EQ(0, fiber_join(b, NULL));
	ASSERT_EQ(0, fiber_sched_stop());

	TH_LOG("%ld walks: %ld reached the preempted function, %ld its caller, %ld too deep",
	       atomic_load(&walks), atomic_load(&found_target), atomic_load(&found_main),
	       atomic_load(&too_deep));
	ASSERT_LE(TARGET, atomic_load(&walks));
	/* Upcalls in other_main cannot find the target; about half are in it. */
	ASSERT_LT(TARGET / 4, atomic_load(&found_target));
	/* Every walk that reached the target went on to its caller... */
	ASSERT_EQ(atomic_load(&found_target), atomic_load(&found_main));
	/* ...and every walk ended at the bottom of the fiber's stack. */
	ASSERT_EQ(0, atomic_load(&too_deep));
}

TEST_HARNESS_MAIN
