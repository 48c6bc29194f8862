// SPDX-License-Identifier: MIT
/*
 * A program built against an installed libfiber only: fiber.h and the
 * flags pkg-config gives, as a user's build does (make check builds it
 * from a staged make install, linked dynamically and statically).
 * It starts the scheduler, spawns fibers, joins them and prints
 * "consumer: ok" with what they returned.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <fiber.h>

#define FIBERS 4

static void *square(void *arg)
{
	uintptr_t n = (uintptr_t)arg;

	fiber_yield();
	return (void *)(n * n);
}

int main(void)
{
	struct fiber_config cfg = { .workers = 2 };
	fiber_t *fibers[FIBERS];
	uintptr_t sum = 0;
	int i, ret;

	ret = fiber_sched_start(&cfg);
	if (ret) {
		fprintf(stderr, "consumer: fiber_sched_start: %s\n", strerror(-ret));
		return 1;
	}
	for (i = 0; i < FIBERS; i++) {
		ret = fiber_spawn(&fibers[i], square, (void *)(uintptr_t)(i + 1));
		if (ret) {
			fprintf(stderr, "consumer: fiber_spawn: %s\n", strerror(-ret));
			return 1;
		}
	}
	for (i = 0; i < FIBERS; i++) {
		void *r;

		ret = fiber_join(fibers[i], &r);
		if (ret) {
			fprintf(stderr, "consumer: fiber_join: %s\n", strerror(-ret));
			return 1;
		}
		sum += (uintptr_t)r;
	}
	printf("consumer: ok mode=%s fibers=%d sum=%lu\n",
	       fiber_preempt_mode_name(fiber_sched_mode()), FIBERS, (unsigned long)sum);
	ret = fiber_sched_stop();
	if (ret) {
		fprintf(stderr, "consumer: fiber_sched_stop: %s\n", strerror(-ret));
		return 1;
	}
	return sum == 1 + 4 + 9 + 16 ? 0 : 1;
}
