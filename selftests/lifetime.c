// SPDX-License-Identifier: GPL-2.0
/* A registered thread that exits, is killed or execs leaves no registration behind. */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

static int register_self(int fd, struct fp_test_ctl *tctl, __u64 slice_ns)
{
	struct fiber_preempt_register args;

	fp_fill_register(&args, tctl);
	args.slice_ns = slice_ns;
	/* Preemptible anywhere: the timer really fires on these threads. */
	args.nr_ranges = 0;
	args.ranges[0].start = args.ranges[0].end = 0;
	args.upcall = (uintptr_t)fp_test_upcall;
	/* Keep deliveries away: the trampoline stand-in must never run. */
	tctl->ctl.preempt_off = 1;
	return fp_ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &args);
}

static void *exit_registered(void *arg)
{
	static __thread struct fp_test_ctl tctl;
	int fd = *(int *)arg;

	return (void *)(long)register_self(fd, &tctl, FIBER_PREEMPT_MIN_SLICE_NS);
}

static void *spin_registered(void *arg)
{
	static __thread struct fp_test_ctl tctl;
	int fd = *(int *)arg;

	if (register_self(fd, &tctl, FIBER_PREEMPT_MIN_SLICE_NS))
		exit(3);
	for (;;)
		__asm__ volatile("" ::: "memory");
	return NULL;
}

FIXTURE(life) {
	int fd;
	int base;
};

FIXTURE_SETUP(life)
{
	self->fd = fp_open();
	FP_REQUIRE_DEVICE(self->fd);
	self->base = fp_module_refcnt();
	ASSERT_LT(0, self->base);
}

FIXTURE_TEARDOWN(life)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(life, thread_exit)
{
	pthread_t t;
	void *ret;
	int i;

	for (i = 0; i < 50; i++) {
		ASSERT_EQ(0, pthread_create(&t, NULL, exit_registered, &self->fd));
		ASSERT_EQ(0, pthread_join(t, &ret));
		ASSERT_EQ(0, (long)ret);
	}
	ASSERT_EQ(self->base, fp_settled_refcnt(self->base));
}

TEST_F(life, registration_is_counted)
{
	struct fp_test_ctl *tctl = aligned_alloc(FIBER_PREEMPT_CTL_ALIGN, sizeof(*tctl));

	ASSERT_NE(NULL, tctl);
	ASSERT_EQ(0, register_self(self->fd, tctl, FIBER_PREEMPT_MIN_SLICE_NS));
	ASSERT_EQ(self->base + 1, fp_module_refcnt());
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
	ASSERT_EQ(self->base, fp_module_refcnt());
	free(tctl);
}

TEST_F(life, kill_spinning_process)
{
	pid_t pid = fork();
	int status, i;

	ASSERT_LE(0, pid);
	if (!pid) {
		pthread_t t;

		for (i = 0; i < 4; i++)
			if (pthread_create(&t, NULL, spin_registered, &self->fd))
				_exit(2);
		spin_registered(&self->fd);
	}
	/* Wait until all four are registered and spinning with live timers. */
	for (i = 0; i < 2000 && fp_module_refcnt() < self->base + 5; i++)
		usleep(1000);
	EXPECT_LE(self->base + 5, fp_module_refcnt());
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(SIGKILL, WTERMSIG(status));
	ASSERT_EQ(self->base, fp_module_refcnt());
}

TEST_F(life, exec_while_registered)
{
	pid_t pid = fork();
	int status;

	ASSERT_LE(0, pid);
	if (!pid) {
		struct fp_test_ctl *tctl = aligned_alloc(FIBER_PREEMPT_CTL_ALIGN,
							 sizeof(*tctl));
		char refs[16];

		if (!tctl || register_self(self->fd, tctl, FIBER_PREEMPT_MIN_SLICE_NS))
			_exit(3);
		/* The new program reads the refcount with the registration gone. */
		snprintf(refs, sizeof(refs), "%d", self->base);
		execl("/bin/sh", "sh", "-c",
		      "test \"$(cat /sys/module/fiber_preempt/refcnt)\" = \"$0\"",
		      refs, (char *)NULL);
		_exit(4);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
	ASSERT_EQ(self->base, fp_module_refcnt());
}

TEST_HARNESS_MAIN
