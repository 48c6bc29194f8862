// SPDX-License-Identifier: MIT
/*
 * What lock-aware preemption adds to an uncontended pthread mutex: a
 * lock+unlock pair from a fiber through libfiber's pthread_mutex_lock()
 * and pthread_mutex_unlock() (the calls a program makes), against glibc's
 * own functions called directly in the same fiber, in one run. Best of
 * several rounds of CLOCK_MONOTONIC-timed loops.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "fiber.h"

#if defined(__x86_64__)
#define GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define GLIBC_BASE "GLIBC_2.17"
#endif

#define PAIRS	2000000
#define ROUNDS	7

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static int (*glibc_lock)(pthread_mutex_t *);
static int (*glibc_unlock)(pthread_mutex_t *);
static double best_fiber_ns = 1e30, best_glibc_ns = 1e30;

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *bench_main(void *arg)
{
	double t0, t;
	int r, i;

	for (r = 0; r < ROUNDS; r++) {
		t0 = now_ns();
		for (i = 0; i < PAIRS; i++) {
			pthread_mutex_lock(&mutex);
			pthread_mutex_unlock(&mutex);
		}
		t = (now_ns() - t0) / PAIRS;
		best_fiber_ns = t < best_fiber_ns ? t : best_fiber_ns;
		t0 = now_ns();
		for (i = 0; i < PAIRS; i++) {
			glibc_lock(&mutex);
			glibc_unlock(&mutex);
		}
		t = (now_ns() - t0) / PAIRS;
		best_glibc_ns = t < best_glibc_ns ? t : best_glibc_ns;
	}
	return NULL;
}

int main(void)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_t *f;

	glibc_lock = dlvsym(RTLD_DEFAULT, "__pthread_mutex_lock", GLIBC_BASE);
	glibc_unlock = dlvsym(RTLD_DEFAULT, "__pthread_mutex_unlock", GLIBC_BASE);
	if (!glibc_lock || !glibc_unlock || fiber_sched_start(&cfg) || fiber_spawn(&f, bench_main, NULL))
		return 1;
	fiber_join(f, NULL);
	fiber_sched_stop();
	printf("locks: mutex lock+unlock from a fiber: libfiber %.1f ns, glibc %.1f ns, ratio %.2f "
	       "(uncontended, best of %d x %d pairs)\n",
	       best_fiber_ns, best_glibc_ns, best_fiber_ns / best_glibc_ns, ROUNDS, PAIRS);
	return 0;
}
