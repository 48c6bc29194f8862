// SPDX-License-Identifier: GPL-2.0
/*
 * Program code that libc calls back while it holds state for the caller
 * (a qsort comparator, a dl_iterate_phdr callback, a fopencookie write
 * function) is never preempted: no other fiber runs on the worker while
 * a callback runs, though the same code is preempted when called directly.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <link.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define TARGET		20		/* declined upcalls and preemptions to see */
#define TIME_LIMIT_NS	60000000000ULL

static atomic_bool stop;
static atomic_ulong other_ticks;
/* [0]: calls from libc, [1]: direct calls */
static atomic_long interleaved[2], calls[2];

/* A while of the program's own code; counts another fiber running meanwhile. */
__attribute__((noinline)) static void body(int direct)
{
	unsigned long before = atomic_load(&other_ticks);
	volatile unsigned long spin;

	for (spin = 0; spin < 400000; spin++)
		;
	if (atomic_load(&other_ticks) != before)
		atomic_fetch_add(&interleaved[direct], 1);
	atomic_fetch_add(&calls[direct], 1);
}

static void callback_body(void)
{
	body(0);
}

static int compare(const void *a, const void *b)
{
	callback_body();
	return *(const int *)a - *(const int *)b;
}

static void via_qsort(void)
{
	int v[4] = { 4, 3, 2, 1 };

	qsort(v, 4, sizeof(v[0]), compare);
}

static int phdr_callback(struct dl_phdr_info *info, size_t size, void *data)
{
	callback_body();
	return 1;
}

static void via_dl_iterate_phdr(void)
{
	dl_iterate_phdr(phdr_callback, NULL);
}

static ssize_t cookie_write(void *cookie, const char *buf, size_t size)
{
	callback_body();
	return size;
}

static void via_fopencookie(void)
{
	static cookie_io_functions_t io = { .write = cookie_write };
	FILE *f = fopencookie(NULL, "w", io);

	if (!f)
		abort();
	fputs("line\n", f);
	fclose(f);		/* flushes through cookie_write, FILE lock held */
}

static void *caller_main(void *arg)
{
	void (*via)(void) = arg;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		via();
		body(1);		/* called directly: preemptible */
	}
	return NULL;
}

static void *other_main(void *arg)
{
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		atomic_fetch_add_explicit(&other_ticks, 1, memory_order_relaxed);
	return NULL;
}

static void run(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
		void (*via)(void))
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = 100000 };
	fiber_t *caller, *other;

	atomic_store(&stop, false);
	memset(interleaved, 0, sizeof(interleaved));
	memset(calls, 0, sizeof(calls));
	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&caller, caller_main, via));
	ASSERT_EQ(0, fiber_spawn(&other, other_main, NULL));
	FIBER_WAIT_FOR(FIBER_STAT_SUM(deferred_stack) >= TARGET &&
		       FIBER_STAT_SUM(preemptions) >= TARGET, TIME_LIMIT_NS);
	atomic_store(&stop, true);
	ASSERT_EQ(0, fiber_join(caller, NULL));
	ASSERT_EQ(0, fiber_join(other, NULL));
	TH_LOG("callbacks: %ld, %ld interleaved; direct calls: %ld, %ld interleaved; "
	       "%lu upcalls declined, %lu preemptions",
	       atomic_load(&calls[0]), atomic_load(&interleaved[0]),
	       atomic_load(&calls[1]), atomic_load(&interleaved[1]),
	       FIBER_STAT_SUM(deferred_stack), FIBER_STAT_SUM(preemptions));
	/* The walk said no inside callbacks and yes in direct calls... */
	ASSERT_LE(TARGET, FIBER_STAT_SUM(deferred_stack));
	ASSERT_LE(TARGET, FIBER_STAT_SUM(preemptions));
	ASSERT_EQ(0, fiber_sched_stop());
	/* ...so only direct calls were interleaved with the other fiber. */
	ASSERT_LT(0, atomic_load(&interleaved[1]));
	ASSERT_EQ(0, atomic_load(&interleaved[0]));
}

FIBER_MODE_FIXTURE(safe);

TEST_F_TIMEOUT(safe, qsort_comparator, 180)
{
	run(_metadata, variant->mode, via_qsort);
}

/* The callback reading program headers another fiber's dlclose() frees. */
TEST_F_TIMEOUT(safe, dl_iterate_phdr_callback, 180)
{
	run(_metadata, variant->mode, via_dl_iterate_phdr);
}

/* A stream's write function, called with the FILE lock held. */
TEST_F_TIMEOUT(safe, fopencookie_write, 180)
{
	run(_metadata, variant->mode, via_fopencookie);
}

TEST_HARNESS_MAIN
