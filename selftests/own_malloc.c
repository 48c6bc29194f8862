// SPDX-License-Identifier: GPL-2.0
/*
 * A program that defines its own malloc (as one that links an allocator
 * statically does) never deadlocks: libc calls that malloc while holding
 * its own locks (setenv's), and a fiber preempted there would leave the
 * next fiber that calls setenv blocking the worker for good. Preemption
 * still lands in direct calls of the same malloc.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define NR_FIBERS	4
#define TARGET		20
#define TIME_LIMIT_NS	60000000000ULL
#define ARENA_SIZE	(256UL << 20)

/* A bump allocator: no lock of its own, so only libc's locks matter. */
static char arena[ARENA_SIZE] __attribute__((aligned(64)));
static atomic_size_t arena_used;

struct header {
	size_t size;
	size_t pad;
};

/* Not named malloc: gcc would turn malloc + memset in calloc into calloc. */
static void *bump_alloc(size_t size)
{
	size_t total = (sizeof(struct header) + size + 15) & ~(size_t)15;
	size_t at = atomic_fetch_add(&arena_used, total);
	volatile unsigned long spin;
	struct header *h;

	if (at + total > ARENA_SIZE)
		return NULL;
	/* Work of the allocator's own: where preemption lands. */
	for (spin = 0; spin < 20000; spin++)
		;
	h = (struct header *)(arena + at);
	h->size = size;
	return h + 1;
}

void *malloc(size_t size)
{
	return bump_alloc(size);
}

void free(void *p)
{
}

void *calloc(size_t n, size_t size)
{
	void *p = n && size > ~(size_t)0 / n ? NULL : bump_alloc(n * size);

	return p ? memset(p, 0, n * size) : NULL;
}

void *realloc(void *old, size_t size)
{
	void *p = bump_alloc(size);
	size_t old_size = old ? ((struct header *)old - 1)->size : 0;

	if (p && old)
		memcpy(p, old, old_size < size ? old_size : size);
	return p;
}

static atomic_bool stop;

static void *env_main(void *arg)
{
	char name[32], value[32];
	unsigned long i;

	for (i = 0; !atomic_load_explicit(&stop, memory_order_relaxed); i++) {
		snprintf(name, sizeof(name), "FIBER_TEST_%lu", (unsigned long)(uintptr_t)arg);
		snprintf(value, sizeof(value), "%lu", i);
		setenv(name, value, 1);		/* malloc under libc's env lock */
		free(malloc(64));		/* malloc called directly */
	}
	return NULL;
}

FIBER_MODE_FIXTURE(own_malloc);

TEST_F_TIMEOUT(own_malloc, setenv_never_deadlocks, 180)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 100000 };
	fiber_t *f[NR_FIBERS];
	uintptr_t i;

	FIBER_START(&cfg);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_spawn(&f[i], env_main, (void *)i));
	/*
	 * One more: read while an upcall is under way, the count has it as
	 * a preemption until it declines (a 6.12 VM run ended at 19).
	 */
	FIBER_WAIT_FOR(FIBER_STAT_SUM(deferred_stack) >= TARGET &&
		       FIBER_STAT_SUM(preemptions) >= TARGET + 1, TIME_LIMIT_NS);
	atomic_store(&stop, true);
	for (i = 0; i < NR_FIBERS; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	TH_LOG("%lu upcalls declined (malloc called by libc), %lu preemptions",
	       FIBER_STAT_SUM(deferred_stack), FIBER_STAT_SUM(preemptions));
	ASSERT_LE(TARGET, FIBER_STAT_SUM(deferred_stack));
	ASSERT_LE(TARGET, FIBER_STAT_SUM(preemptions));
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST_HARNESS_MAIN
