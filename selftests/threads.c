// SPDX-License-Identifier: GPL-2.0
/* Registrations are per thread: many threads register and unregister at once. */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <pthread.h>

#define NR_THREADS	8
#define ROUNDS		200

struct worker {
	int fd;
	int error;		/* first -errno seen, or 0 */
	pthread_barrier_t *start;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct fiber_preempt_register args;
	struct fp_test_ctl tctl;
	int i, ret;

	fp_fill_register(&args, &tctl);
	pthread_barrier_wait(w->start);
	for (i = 0; i < ROUNDS && !w->error; i++) {
		ret = fp_ioctl(w->fd, FIBER_PREEMPT_IOC_REGISTER, &args);
		if (!ret)
			ret = fp_ioctl(w->fd, FIBER_PREEMPT_IOC_REGISTER, &args) == -EBUSY ?
			      0 : -EPROTO;
		if (!ret)
			ret = fp_ioctl(w->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL);
		w->error = ret;
	}
	return NULL;
}

static void run_workers(struct __test_metadata *_metadata, int fd, bool own_fd)
{
	struct worker w[NR_THREADS];
	pthread_t tid[NR_THREADS];
	pthread_barrier_t start;
	int i;

	ASSERT_EQ(0, pthread_barrier_init(&start, NULL, NR_THREADS));
	for (i = 0; i < NR_THREADS; i++) {
		w[i].fd = own_fd ? fp_open() : fd;
		w[i].error = 0;
		w[i].start = &start;
		ASSERT_LE(0, w[i].fd);
		ASSERT_EQ(0, pthread_create(&tid[i], NULL, worker_main, &w[i]));
	}
	for (i = 0; i < NR_THREADS; i++) {
		ASSERT_EQ(0, pthread_join(tid[i], NULL));
		EXPECT_EQ(0, w[i].error) TH_LOG("thread %d: %s", i, strerror(-w[i].error));
		if (own_fd)
			close(w[i].fd);
	}
	pthread_barrier_destroy(&start);
}

TEST(shared_fd)
{
	int fd = fp_open();

	FP_REQUIRE_DEVICE(fd);
	run_workers(_metadata, fd, false);
	close(fd);
}

TEST(fd_per_thread)
{
	int fd = fp_open();

	FP_REQUIRE_DEVICE(fd);
	run_workers(_metadata, -1, true);
	close(fd);
}

TEST_HARNESS_MAIN
