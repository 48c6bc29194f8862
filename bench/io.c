// SPDX-License-Identifier: MIT
/*
 * I/O ping-pong over a Unix stream socketpair: one byte each way, a round
 * trip per iteration, three ways in one run:
 *  - fibers: two fibers on one worker, fiber_write() then fiber_read();
 *  - liburing: one thread driving both ends with a plain ring, the ceiling
 *    a fiber runtime on io_uring can hope for (one submit-and-wait per
 *    step, as the fibers' worker does when nothing else can run);
 *  - threads: two threads in blocking write(2)/read(2).
 * It prints the time per round trip and, for the fibers, the io_uring
 * submissions per operation (fiber_worker_stats()).
 */
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fiber.h"

#define ROUND_TRIPS	50000

static int sv[2];

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void make_pair(void)
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
		perror("socketpair");
		exit(1);
	}
}

static void close_pair(void)
{
	close(sv[0]);
	close(sv[1]);
}

/* The side that starts each round trip (end 0) and the one that answers. */
static void *fiber_pinger(void *arg)
{
	char c = 'p';
	int i;

	for (i = 0; i < ROUND_TRIPS; i++)
		if (fiber_write(sv[0], &c, 1) != 1 || fiber_read(sv[0], &c, 1) != 1)
			return (void *)1L;
	return NULL;
}

static void *fiber_ponger(void *arg)
{
	char c;
	int i;

	for (i = 0; i < ROUND_TRIPS; i++)
		if (fiber_read(sv[1], &c, 1) != 1 || fiber_write(sv[1], &c, 1) != 1)
			return (void *)1L;
	return NULL;
}

static double fibers(double *submits_per_op)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF };
	struct fiber_worker_stats st;
	void *r1, *r2;
	fiber_t *a, *b;
	double t;

	if (fiber_sched_start(&cfg))
		exit(1);
	fiber_worker_stats(0, &st);
	if (!st.ring_entries) {
		fiber_sched_stop();
		return 0;
	}
	make_pair();
	t = now_ns();
	if (fiber_spawn(&b, fiber_ponger, NULL) || fiber_spawn(&a, fiber_pinger, NULL))
		exit(1);
	fiber_join(a, &r1);
	fiber_join(b, &r2);
	t = now_ns() - t;
	fiber_worker_stats(0, &st);
	fiber_sched_stop();
	close_pair();
	if (r1 || r2) {
		fprintf(stderr, "io: a fiber read or write failed\n");
		exit(1);
	}
	*submits_per_op = (double)st.io_submits / st.io_ops;
	return t / ROUND_TRIPS;
}

enum { PING_WRITE, PING_READ, PONG_READ, PONG_WRITE };

static void queue(struct io_uring *ring, uint64_t step, int fd, char *buf)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (step == PING_WRITE || step == PONG_WRITE)
		io_uring_prep_write(sqe, fd, buf, 1, (uint64_t)-1);
	else
		io_uring_prep_read(sqe, fd, buf, 1, (uint64_t)-1);
	io_uring_sqe_set_data64(sqe, step);
}

/*
 * The same exchange with one ring and no fibers: each completion queues
 * the next step of its end, and the loop submits and waits in one call.
 */
static double plain_uring(void)
{
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	char ping = 'p', pong;
	int pings = 0, pongs = 0;
	double t;

	if (io_uring_queue_init(8, &ring, 0))
		return 0;
	make_pair();
	t = now_ns();
	queue(&ring, PING_WRITE, sv[0], &ping);
	queue(&ring, PONG_READ, sv[1], &pong);
	while (pings < ROUND_TRIPS || pongs < ROUND_TRIPS) {
		uint64_t step;

		if (io_uring_submit_and_wait(&ring, 1) < 0 || io_uring_peek_cqe(&ring, &cqe))
			exit(1);
		step = io_uring_cqe_get_data64(cqe);
		if (cqe->res != 1) {
			fprintf(stderr, "io: liburing step %lu: %d\n", (unsigned long)step, cqe->res);
			exit(1);
		}
		io_uring_cqe_seen(&ring, cqe);
		if (step == PING_WRITE)
			queue(&ring, PING_READ, sv[0], &ping);
		else if (step == PING_READ && ++pings < ROUND_TRIPS)
			queue(&ring, PING_WRITE, sv[0], &ping);
		else if (step == PONG_READ)
			queue(&ring, PONG_WRITE, sv[1], &pong);
		else if (step == PONG_WRITE && ++pongs < ROUND_TRIPS)
			queue(&ring, PONG_READ, sv[1], &pong);
	}
	t = now_ns() - t;
	io_uring_queue_exit(&ring);
	close_pair();
	return t / ROUND_TRIPS;
}

static void *thread_ponger(void *arg)
{
	char c;
	int i;

	for (i = 0; i < ROUND_TRIPS; i++)
		if (read(sv[1], &c, 1) != 1 || write(sv[1], &c, 1) != 1)
			exit(1);
	return NULL;
}

static double threads(void)
{
	pthread_t t2;
	char c = 'p';
	double t;
	int i;

	make_pair();
	t = now_ns();
	if (pthread_create(&t2, NULL, thread_ponger, NULL))
		exit(1);
	for (i = 0; i < ROUND_TRIPS; i++)
		if (write(sv[0], &c, 1) != 1 || read(sv[0], &c, 1) != 1)
			exit(1);
	pthread_join(t2, NULL);
	t = now_ns() - t;
	close_pair();
	return t / ROUND_TRIPS;
}

int main(void)
{
	double submits = 0, f = fibers(&submits), u = plain_uring(), th = threads();

	if (!f || !u) {
		printf("io: ping-pong: SKIP (no io_uring here); threads %.2f us per round trip\n", th / 1e3);
		return 0;
	}
	printf("io: ping-pong over a socketpair, %d round trips of 1 byte: fibers %.2f us, "
	       "plain liburing loop %.2f us (fibers/liburing %.2f), blocking threads %.2f us per round trip; "
	       "fibers: %.2f io_uring submissions per operation\n",
	       ROUND_TRIPS, f / 1e3, u / 1e3, f / u, th / 1e3, submits);
	return 0;
}
