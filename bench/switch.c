// SPDX-License-Identifier: MIT
/*
 * Cooperative switch cost: two fibers on one worker hand the worker back
 * and forth with fiber_yield(); the same ping-pong with swapcontext(3)
 * runs beside it as a reference. Each yield is fiber -> worker loop ->
 * other fiber (two stack switches and a run-queue round trip); each
 * swapcontext is one switch, which also saves and restores the signal
 * mask with a system call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include "fiber.h"

#define ROUNDS	5

static long yields;
static ucontext_t uc_main, uc_a, uc_b;
static long uc_iterations;

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *yielder(void *arg)
{
	long i;

	for (i = 0; i < yields; i++)
		fiber_yield();
	return NULL;
}

static double fiber_yield_ns(void)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	fiber_t *a, *b;
	double t;
	int ret;

	ret = fiber_sched_start(&cfg);
	if (ret) {
		fprintf(stderr, "fiber_sched_start: %s\n", strerror(-ret));
		exit(1);
	}
	t = now_ns();
	if (fiber_spawn(&a, yielder, NULL) || fiber_spawn(&b, yielder, NULL))
		exit(1);
	fiber_join(a, NULL);
	fiber_join(b, NULL);
	t = now_ns() - t;
	fiber_sched_stop();
	return t / (2.0 * yields);
}

static void uc_a_main(void)
{
	long i;

	for (i = 0; i < uc_iterations; i++)
		swapcontext(&uc_a, &uc_b);
}

static void uc_b_main(void)
{
	for (;;)
		swapcontext(&uc_b, &uc_a);
}

static double swapcontext_ns(void)
{
	static char stack_a[65536], stack_b[65536];
	double t;

	getcontext(&uc_a);
	uc_a.uc_stack.ss_sp = stack_a;
	uc_a.uc_stack.ss_size = sizeof(stack_a);
	uc_a.uc_link = &uc_main;
	makecontext(&uc_a, uc_a_main, 0);
	getcontext(&uc_b);
	uc_b.uc_stack.ss_sp = stack_b;
	uc_b.uc_stack.ss_size = sizeof(stack_b);
	makecontext(&uc_b, uc_b_main, 0);
	t = now_ns();
	swapcontext(&uc_main, &uc_a);
	t = now_ns() - t;
	return t / (2.0 * uc_iterations);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	double fy[ROUNDS], sc[ROUNDS];
	int i;

	yields = argc > 1 ? atol(argv[1]) : 2000000;
	uc_iterations = yields;
	for (i = 0; i < ROUNDS; i++) {
		fy[i] = fiber_yield_ns();
		sc[i] = swapcontext_ns();
	}
	qsort(fy, ROUNDS, sizeof(double), cmp_double);
	qsort(sc, ROUNDS, sizeof(double), cmp_double);
	printf("switch: fiber_yield %.1f ns per yield, swapcontext %.1f ns per switch "
	       "(median of %d runs of %ld, one worker, native)\n",
	       fy[ROUNDS / 2], sc[ROUNDS / 2], ROUNDS, yields);
	return 0;
}
