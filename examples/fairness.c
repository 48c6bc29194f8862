// SPDX-License-Identifier: MIT
/*
 * The fairness demo: N fibers spin in tight loops with no function calls
 * on one worker. With preemption each gets a near-equal share of the
 * worker; without it the first one keeps the worker until told to stop.
 *
 * A fiber's share is its share of all loop iterations: each iteration is
 * the same few instructions, so iterations measure CPU time without
 * timing anything on the switch path.
 *
 *   fairness [--mode auto|kmod|signal|off] [--fibers N] [--ms T] [--slice-us S]
 */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiber.h"

#define MAX_FIBERS 256

struct spinner {
	atomic_bool *stop;
	volatile uint64_t iterations;
	struct fiber_stats stats;	/* as the fiber returned */
};

static void *spin(void *arg)
{
	struct spinner *s = arg;

	while (!atomic_load_explicit(s->stop, memory_order_relaxed))
		s->iterations++;
	fiber_stats(fiber_self(), &s->stats);
	return NULL;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--mode auto|kmod|signal|off] [--fibers N] [--ms T] [--slice-us S]\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "fibers", required_argument, NULL, 'n' },
		{ "ms", required_argument, NULL, 't' },
		{ "slice-us", required_argument, NULL, 's' },
		{ 0 }
	};
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_AUTO,
				    .slice_ns = 1000000 };
	static struct spinner spinners[MAX_FIBERS];
	static fiber_t *fibers[MAX_FIBERS];
	struct fiber_worker_stats ws;
	uint64_t total = 0, min = UINT64_MAX, max = 0;
	unsigned int nr = 8, ms = 1000, i;
	atomic_bool stop = false;
	enum fiber_preempt_mode mode;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			ret = fiber_preempt_mode_parse(optarg);
			if (ret < 0)
				usage(argv[0]);
			cfg.mode = ret;
			break;
		case 'n':
			nr = strtoul(optarg, NULL, 0);
			break;
		case 't':
			ms = strtoul(optarg, NULL, 0);
			break;
		case 's':
			cfg.slice_ns = strtoull(optarg, NULL, 0) * 1000;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (!nr || nr > MAX_FIBERS)
		usage(argv[0]);

	ret = fiber_sched_start(&cfg);
	if (ret) {
		fprintf(stderr, "fiber_sched_start(mode=%s): %s\n",
			fiber_preempt_mode_name(cfg.mode), strerror(-ret));
		return 1;
	}
	for (i = 0; i < nr; i++) {
		spinners[i].stop = &stop;
		ret = fiber_spawn(&fibers[i], spin, &spinners[i]);
		if (ret) {
			fprintf(stderr, "fiber_spawn: %s\n", strerror(-ret));
			return 1;
		}
	}
	fiber_sleep((uint64_t)ms * 1000000);
	atomic_store(&stop, true);

	for (i = 0; i < nr; i++)
		total += spinners[i].iterations;
	mode = fiber_sched_mode();
	printf("mode %s, %u fibers on one worker, %u ms, slice %llu us\n",
	       fiber_preempt_mode_name(mode), nr, ms,
	       (unsigned long long)cfg.slice_ns / 1000);
	for (i = 0; i < nr; i++)
		fiber_join(fibers[i], NULL);
	for (i = 0; i < nr; i++) {
		uint64_t it = spinners[i].iterations;

		printf("  fiber %2u: share %5.1f%%  slices %llu\n", i,
		       total ? 100.0 * it / total : 0.0,
		       (unsigned long long)spinners[i].stats.runs);
		min = it < min ? it : min;
		max = it > max ? it : max;
	}
	fiber_worker_stats(0, &ws);
	fiber_sched_stop();

	printf("fairness: mode=%s fibers=%u max/min=", fiber_preempt_mode_name(mode), nr);
	if (min)
		printf("%.2f", (double)max / min);
	else
		printf("inf");
	printf(" preemptions=%llu\n", (unsigned long long)ws.preemptions);
	return 0;
}
