// SPDX-License-Identifier: MIT
/*
 * Fiber I/O: one io_uring per worker.
 *
 * An I/O call made by a fiber prepares an SQE on its worker's ring,
 * pointing user_data at a request on the fiber's own stack, and parks the
 * fiber. The worker submits whatever its fibers queued once per pass of
 * its loop, and each completion it reaps makes the one fiber waiting for
 * it runnable. A call is libfiber code, never preempted, and it parks on
 * the worker whose ring holds its SQE: the fiber cannot move between
 * getting the SQE and its submission.
 *
 * The worker submits once per pass over its run queue (every fiber
 * runnable at the last submission has had its turn since), not once per
 * call, and reaps completions at the same points, and before a fiber
 * that ran its slice out runs again (sched.c: preempted_turn()); the
 * fibers completions wake go to the back of the queue, ahead of preempted
 * ones. A worker with nothing to run submits and waits in
 * its ring in one call, for a completion, its next timer, or a wake-up
 * (runq.c): an IORING_OP_MSG_RING CQE from another worker's ring, or a
 * write to its eventfd by any other thread.
 *
 * Deadlines: a fiber's deadline (fiber_set_deadline()) bounds each of
 * its calls with a linked timeout; the kernel cancels the operation when
 * it fires, and the call returns -ETIMEDOUT. A deadline already past
 * returns -ETIMEDOUT without starting anything.
 *
 * Without io_uring (a kernel without it, io_uring disabled, a seccomp
 * filter refusing it, qemu-user), and outside fibers, each call is the
 * plain system call, blocking the thread; fiber_worker_stats() then shows
 * ring_entries 0.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_RING_ENTRIES	256
#define MIN_RING_ENTRIES	2	/* an operation and its linked timeout */
#define MAX_RING_ENTRIES	32768

/* user_data of CQEs no fiber waits for. */
#define IO_DATA_IGNORE		0ULL	/* linked timeouts */
#define IO_DATA_WAKE		1ULL	/* the read of the worker's eventfd */
#define IO_DATA_MSG		2ULL	/* another worker's IORING_OP_MSG_RING */

/* One operation a fiber waits for; on the fiber's stack. */
struct io_request {
	struct fiber *fiber;
	int res;
};

/*
 * user_data: the request's address, tagged with a count of the fiber's
 * operations in the bits above user addresses (47 bits on x86_64, 48 on
 * arm64). The request sits at the same stack address call after call,
 * and a linked timeout that fires as its operation completes cancels by
 * user_data (6.1's io_req_task_link_timeout()): untagged, that late
 * cancellation could hit the fiber's next operation.
 */
#define IO_TAG_SHIFT		48
#define IO_ADDR_MASK		((1ULL << IO_TAG_SHIFT) - 1)

static uint64_t io_user_data(struct io_request *req, uint64_t seq)
{
	return (uint64_t)(uintptr_t)req | (seq << IO_TAG_SHIFT);
}

static struct io_request *io_request_of(uint64_t data)
{
	return (struct io_request *)(uintptr_t)(data & IO_ADDR_MASK);
}

/* A call in progress. */
struct io_call {
	struct fiber_worker *w;		/* NULL: a plain system call */
	struct io_uring_sqe *sqe;	/* NULL with w set: the deadline passed */
	uint64_t deadline;		/* 0: none */
	bool own_timeout;		/* the deadline is fiber_poll()'s timeout */
};

int fiber_io_worker_start(struct fiber_worker *w, unsigned int entries)
{
	struct io_uring_params p = {
		/*
		 * Completions wait as task work until the worker enters the
		 * kernel; TASKRUN_FLAG shows that some do (IORING_SQ_TASKRUN),
		 * so that a worker busy with fibers knows when to.
		 */
		.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
			 IORING_SETUP_TASKRUN_FLAG,
	};
	int ret;

	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0)
		return -errno;
	ret = io_uring_queue_init_params(entries, &w->ring, &p);
	if (ret == -EINVAL) {
		/* Before 5.19: the flags are optimisations only. */
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(entries, &w->ring, &p);
	}
	/* No io_uring here: the calls block (see the top of this file). */
	w->has_ring = ret == 0;
	w->ring_entries = w->has_ring ? entries : 0;
	if (w->has_ring) {
		struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);

		/* 5.18 and later; before, wake-ups go through the eventfd. */
		w->has_msg_ring = probe && io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
		io_uring_free_probe(probe);
	}
	return 0;
}

void fiber_io_worker_stop(struct fiber_worker *w)
{
	if (w->has_ring)
		io_uring_queue_exit(&w->ring);
	w->has_ring = false;
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	w->wake_fd = -1;
}

unsigned int fiber_io_ring_entries(unsigned int requested)
{
	if (!requested)
		return DEFAULT_RING_ENTRIES;
	return requested >= MIN_RING_ENTRIES && requested <= MAX_RING_ENTRIES ? requested : 0;
}

/* Submits what the worker's fibers queued. */
static void io_submit(struct fiber_worker *w)
{
	int ret;

	if (!io_uring_sq_ready(&w->ring))
		return;
	ret = io_uring_submit(&w->ring);
	if (ret > 0)
		w->io_submits++;
	/*
	 * -EBUSY/-EAGAIN: completions must be reaped first (or memory is
	 * short); what stays queued goes with the next pass.
	 */
}

/* Submits, then hands every completion to its fiber. */
void fiber_io_poll(struct fiber_worker *w)
{
	struct io_uring_cqe *cqe;

	io_submit(w);
	/*
	 * Nothing posted, nothing for the kernel to flush: the common case
	 * before each preempted fiber, without a call into liburing.
	 */
	if (!io_uring_cq_ready(&w->ring) &&
	    !(IO_URING_READ_ONCE(*w->ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
		return;
	while (!io_uring_peek_cqe(&w->ring, &cqe)) {
		uint64_t data = io_uring_cqe_get_data64(cqe);

		if (data == IO_DATA_WAKE) {
			w->wake_armed = false;
		} else if (data != IO_DATA_IGNORE && data != IO_DATA_MSG) {
			struct io_request *req = io_request_of(data);

			req->res = cqe->res;
			fiber_runq_push(w, req->fiber);
		}
		io_uring_cqe_seen(&w->ring, cqe);
	}
}

/*
 * Whether w's ring has work for the worker: operations its fibers queued,
 * completions, or task work that would post some. Reads shared memory
 * only: the upcall asks it before keeping a fiber that has run its slice.
 */
bool fiber_io_pending(struct fiber_worker *w)
{
	return w->has_ring &&
	       (io_uring_sq_ready(&w->ring) || io_uring_cq_ready(&w->ring) ||
		(IO_URING_READ_ONCE(*w->ring.sq.kflags) & IORING_SQ_TASKRUN));
}

/* Wakes w, waiting in its ring, from any thread. */
void fiber_io_wake(struct fiber_worker *w)
{
	eventfd_write(w->wake_fd, 1);
}

/*
 * Wakes w, waiting in its ring, with a CQE posted from self's ring (on
 * self's thread). False: no SQE free; the caller uses the eventfd.
 */
bool fiber_io_msg_ring(struct fiber_worker *self, struct fiber_worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);

	if (!sqe)
		return false;
	io_uring_prep_msg_ring(sqe, w->ring.ring_fd, 0, IO_DATA_MSG, 0);
	io_uring_sqe_set_data64(sqe, IO_DATA_IGNORE);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	/* At once, with whatever else is queued: the other worker waits. */
	io_submit(self);
	return true;
}

/*
 * Submits what is queued and waits in the ring for a completion, a
 * wake-up or until deadline (CLOCK_MONOTONIC ns, 0: none).
 */
void fiber_io_wait(struct fiber_worker *w, uint64_t deadline)
{
	struct __kernel_timespec ts, *tsp = NULL;
	struct io_uring_cqe *cqe;

	if (!w->wake_armed) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

		if (!sqe) {
			io_submit(w);
			sqe = io_uring_get_sqe(&w->ring);
		}
		if (sqe) {
			io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
			io_uring_sqe_set_data64(sqe, IO_DATA_WAKE);
			w->wake_armed = true;
		}
	}
	if (deadline) {
		uint64_t now = fiber_now_ns(), left = deadline > now ? deadline - now : 0;

		ts.tv_sec = left / 1000000000ULL;
		ts.tv_nsec = left % 1000000000ULL;
		tsp = &ts;
	}
	if (io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, tsp, NULL) > 0)
		w->io_submits++;
}

/* A plain system call's result in libfiber's convention. */
static long io_plain(long ret)
{
	return ret < 0 ? -errno : ret;
}

/*
 * Starts a call. False: make the plain system call. True with c->sqe
 * NULL: the fiber's deadline has passed.
 */
static bool io_start(struct io_call *c)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *f = w ? w->current : NULL;

	c->w = NULL;
	c->sqe = NULL;
	c->own_timeout = false;
	c->deadline = f ? f->deadline : 0;
	if (c->deadline && fiber_now_ns() >= c->deadline)
		return true;
	if (!f || !w->has_ring)
		return false;
	c->w = w;
	/* Room for the operation and its linked timeout. */
	while (io_uring_sq_space_left(&w->ring) < 2) {
		io_submit(w);
		if (io_uring_sq_space_left(&w->ring) < 2)
			fiber_yield_here();	/* the worker reaps, then submits */
	}
	c->sqe = io_uring_get_sqe(&w->ring);
	return true;
}

/* Queues the operation prepared in c->sqe, parks until it completes. */
static long io_finish(struct io_call *c)
{
	struct fiber_worker *w = c->w;
	struct io_request req = { .fiber = w ? w->current : NULL };
	struct __kernel_timespec ts;

	if (!c->sqe)
		return c->own_timeout ? 0 : -ETIMEDOUT;
	io_uring_sqe_set_data64(c->sqe, io_user_data(&req, ++w->io_ops));
	if (c->deadline) {
		struct io_uring_sqe *t = io_uring_get_sqe(&w->ring);
		uint64_t now = fiber_now_ns();
		uint64_t left = c->deadline > now ? c->deadline - now : 1;

		/* The kernel copies ts when it submits, while this fiber waits. */
		ts.tv_sec = left / 1000000000ULL;
		ts.tv_nsec = left % 1000000000ULL;
		c->sqe->flags |= IOSQE_IO_LINK;
		io_uring_prep_link_timeout(t, &ts, 0);
		io_uring_sqe_set_data64(t, IO_DATA_IGNORE);
	}
	req.fiber->wait_op = c->sqe->opcode;
	req.fiber->wait_fd = c->sqe->fd;
	fiber_wait_begins(req.fiber, FIBER_WAIT_IO, NULL);
	fiber_park(w, NULL);
	fiber_wait_ends(req.fiber);
	if (req.res == -ECANCELED && c->deadline)
		return c->own_timeout ? 0 : -ETIMEDOUT;
	return req.res;
}

int fiber_set_deadline(uint64_t deadline_ns)
{
	struct fiber_worker *w = fiber_tls_worker;

	if (!w || !w->current)
		return -EPERM;
	w->current->deadline = deadline_ns;
	return 0;
}

ssize_t fiber_read(int fd, void *buf, size_t len)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(read(fd, buf, len));
	if (c.sqe)
		io_uring_prep_read(c.sqe, fd, buf, len, (uint64_t)-1);
	return io_finish(&c);
}

ssize_t fiber_write(int fd, const void *buf, size_t len)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(write(fd, buf, len));
	if (c.sqe)
		io_uring_prep_write(c.sqe, fd, buf, len, (uint64_t)-1);
	return io_finish(&c);
}

ssize_t fiber_pread(int fd, void *buf, size_t len, off_t offset)
{
	struct io_call c;

	if (offset < 0)
		return -EINVAL;
	if (!io_start(&c))
		return io_plain(pread(fd, buf, len, offset));
	if (c.sqe)
		io_uring_prep_read(c.sqe, fd, buf, len, offset);
	return io_finish(&c);
}

ssize_t fiber_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
	struct io_call c;

	if (offset < 0)
		return -EINVAL;
	if (!io_start(&c))
		return io_plain(pwrite(fd, buf, len, offset));
	if (c.sqe)
		io_uring_prep_write(c.sqe, fd, buf, len, offset);
	return io_finish(&c);
}

ssize_t fiber_readv(int fd, const struct iovec *iov, int iovcnt)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(readv(fd, iov, iovcnt));
	if (c.sqe)
		io_uring_prep_readv(c.sqe, fd, iov, iovcnt, (uint64_t)-1);
	return io_finish(&c);
}

ssize_t fiber_writev(int fd, const struct iovec *iov, int iovcnt)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(writev(fd, iov, iovcnt));
	if (c.sqe)
		io_uring_prep_writev(c.sqe, fd, iov, iovcnt, (uint64_t)-1);
	return io_finish(&c);
}

ssize_t fiber_recv(int fd, void *buf, size_t len, int flags)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(recv(fd, buf, len, flags));
	if (c.sqe)
		io_uring_prep_recv(c.sqe, fd, buf, len, flags);
	return io_finish(&c);
}

ssize_t fiber_send(int fd, const void *buf, size_t len, int flags)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(send(fd, buf, len, flags));
	if (c.sqe)
		io_uring_prep_send(c.sqe, fd, buf, len, flags);
	return io_finish(&c);
}

ssize_t fiber_recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(recvmsg(fd, msg, flags));
	if (c.sqe)
		io_uring_prep_recvmsg(c.sqe, fd, msg, flags);
	return io_finish(&c);
}

ssize_t fiber_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(sendmsg(fd, msg, flags));
	if (c.sqe)
		io_uring_prep_sendmsg(c.sqe, fd, msg, flags);
	return io_finish(&c);
}

int fiber_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(accept4(fd, addr, addrlen, flags));
	if (c.sqe)
		io_uring_prep_accept(c.sqe, fd, addr, addrlen, flags);
	return io_finish(&c);
}

int fiber_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(connect(fd, addr, addrlen));
	if (c.sqe)
		io_uring_prep_connect(c.sqe, fd, addr, addrlen);
	return io_finish(&c);
}

int fiber_close(int fd)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(close(fd));
	if (c.sqe)
		io_uring_prep_close(c.sqe, fd);
	return io_finish(&c);
}

int fiber_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(openat(dirfd, path, flags, mode));
	if (c.sqe)
		io_uring_prep_openat(c.sqe, dirfd, path, flags, mode);
	return io_finish(&c);
}

int fiber_fsync(int fd)
{
	struct io_call c;

	if (!io_start(&c))
		return io_plain(fsync(fd));
	if (c.sqe)
		io_uring_prep_fsync(c.sqe, fd, 0);
	return io_finish(&c);
}

int fiber_poll(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	struct io_call c;
	long ret;

	if (timeout_ms == 0 || !io_start(&c)) {
		ret = io_plain(poll(&pfd, 1, timeout_ms));
		return ret > 0 ? pfd.revents : ret;
	}
	if (timeout_ms > 0 && c.sqe) {
		uint64_t own = fiber_now_ns() + (uint64_t)timeout_ms * 1000000ULL;

		if (!c.deadline || own < c.deadline) {
			c.deadline = own;
			c.own_timeout = true;
		}
	}
	if (c.sqe)
		io_uring_prep_poll_add(c.sqe, fd, events);
	return io_finish(&c);
}
