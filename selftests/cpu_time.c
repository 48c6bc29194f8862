// SPDX-License-Identifier: GPL-2.0
/* A slice is the thread's time on a CPU: time asleep or waiting for a CPU does not use it up. */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

/* Long beside the CPU time used here, short beside the time around it. */
#define SLICE_NS	(200 * 1000000ULL)

static uint64_t ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void spin_ns(uint64_t n)
{
	uint64_t end = ns(CLOCK_THREAD_CPUTIME_ID) + n;

	while (ns(CLOCK_THREAD_CPUTIME_ID) < end)
		;
}

FIXTURE(cpu_time) {
	int fd;
	struct fp_test_ctl tctl;
	struct fiber_preempt_register args;
	uint64_t cpu0, wall0;
};

/*
 * The timer runs and counts slices that run out (ctl->fired), but never
 * delivers: the preemptible range holds no code.
 */
FIXTURE_SETUP(cpu_time)
{
	self->fd = fp_open();
	FP_REQUIRE_DEVICE(self->fd);
	fp_fill_register(&self->args, &self->tctl);
	self->args.slice_ns = SLICE_NS;
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, &self->args));
	self->cpu0 = ns(CLOCK_THREAD_CPUTIME_ID);
	self->wall0 = ns(CLOCK_MONOTONIC);
}

FIXTURE_TEARDOWN(cpu_time)
{
	if (self->fd >= 0)
		close(self->fd);
}

/*
 * Unregisters and checks that no slice ran out, if the thread's CPU time
 * was well within one while the time around it was well beyond.
 */
static void check_no_slice_ran_out(struct __test_metadata *_metadata,
				   FIXTURE_DATA(cpu_time) *self)
{
	uint64_t cpu = ns(CLOCK_THREAD_CPUTIME_ID) - self->cpu0;
	uint64_t wall = ns(CLOCK_MONOTONIC) - self->wall0;

	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
	TH_LOG("%llu ms on a CPU in %llu ms: %llu slices of %llu ms ran out",
	       (unsigned long long)cpu / 1000000, (unsigned long long)wall / 1000000,
	       (unsigned long long)self->tctl.ctl.fired, SLICE_NS / 1000000);
	if (cpu > SLICE_NS * 3 / 4)
		SKIP(return, "this thread got %llu ms of CPU time: too much to tell",
		     (unsigned long long)cpu / 1000000);
	ASSERT_LT(SLICE_NS, wall);
	EXPECT_EQ(0, self->tctl.ctl.fired);
}

TEST_F(cpu_time, asleep_is_not_the_slice)
{
	int i;

	for (i = 0; i < 5; i++) {
		spin_ns(2000000);
		usleep(100000);
	}
	check_no_slice_ran_out(_metadata, self);
}

static void *hog(void *arg)
{
	volatile int *stop = arg;

	while (!*stop)
		;
	return NULL;
}

/* Two threads on the same CPU take about two thirds of it. */
TEST_F(cpu_time, waiting_for_a_cpu_is_not_the_slice)
{
	volatile int stop = 0;
	cpu_set_t one;
	pthread_attr_t attr;
	pthread_t t[2];
	int i;

	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(one), &one));
	ASSERT_EQ(0, pthread_attr_init(&attr));
	ASSERT_EQ(0, pthread_attr_setaffinity_np(&attr, sizeof(one), &one));
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&t[i], &attr, hog, (void *)&stop));
	/* Until the wall clock is well past the slice. */
	while (ns(CLOCK_MONOTONIC) - self->wall0 < SLICE_NS * 3 / 2)
		spin_ns(1000000);
	stop = 1;
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	check_no_slice_ran_out(_metadata, self);
}

TEST_HARNESS_MAIN
