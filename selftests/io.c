// SPDX-License-Identifier: GPL-2.0
/*
 * Fiber I/O on the workers' io_uring: a call parks only its fiber; pipes,
 * socket pairs, TCP over loopback and regular files; errors; deadlines
 * that cancel; 10,000 fibers blocked at once; the plain system calls
 * outside fibers and without io_uring.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define START_WITH_RING(cfg) do {					\
	ASSERT_EQ(0, fiber_sched_start(cfg));				\
	SKIP_WITHOUT_RING();						\
} while (0)

static const struct fiber_config one_worker = { .workers = 1, .mode = FIBER_PREEMPT_OFF };

struct pipe_reader {
	int fd;
	char buf[64];
	ssize_t ret;
	bool done;
};

static void *reader_main(void *arg)
{
	struct pipe_reader *r = arg;

	r->ret = fiber_read(r->fd, r->buf, sizeof(r->buf));
	r->done = true;
	return NULL;
}

/* One worker: the reader waits in the ring while the writer runs. */
TEST(read_parks_only_the_fiber)
{
	struct pipe_reader r = { 0 };
	fiber_t *f;
	int p[2];

	ASSERT_EQ(0, pipe(p));
	START_WITH_RING(&one_worker);
	r.fd = p[0];
	ASSERT_EQ(0, fiber_spawn(&f, reader_main, &r));
	fiber_sleep(20000000);
	ASSERT_FALSE(r.done);
	ASSERT_EQ(5, write(p[1], "hello", 5));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(5, r.ret);
	ASSERT_EQ(0, memcmp(r.buf, "hello", 5));
	ASSERT_EQ(0, fiber_sched_stop());
	close(p[0]);
	close(p[1]);
}

struct busy_worker {
	int fd;
	atomic_bool done;
	ssize_t ret;
};

static void *busy_yielder(void *arg)
{
	struct busy_worker *b = arg;

	while (!atomic_load(&b->done))
		fiber_yield();
	return NULL;
}

static void *busy_reader(void *arg)
{
	struct busy_worker *b = arg;
	char c;

	b->ret = fiber_recv(b->fd, &c, 1, 0);
	atomic_store(&b->done, true);
	return NULL;
}

/*
 * Its worker never goes idle (two fibers yield to each other until the
 * reader has its byte), so the completion reaches the reader only if the
 * worker reaps its ring between fibers, not just when it has nothing to
 * run: what a server needs while some of its fibers compute.
 */
TEST(completion_reaches_busy_worker)
{
	struct busy_worker b = { 0 };
	fiber_t *f[3];
	int sv[2], i;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	START_WITH_RING(&one_worker);
	b.fd = sv[0];
	ASSERT_EQ(0, fiber_spawn(&f[0], busy_reader, &b));
	ASSERT_EQ(0, fiber_spawn(&f[1], busy_yielder, &b));
	ASSERT_EQ(0, fiber_spawn(&f[2], busy_yielder, &b));
	fiber_sleep(20000000);
	ASSERT_EQ(1, write(sv[1], "x", 1));
	for (i = 0; i < 200 && !atomic_load(&b.done); i++)
		fiber_sleep(10000000);
	EXPECT_TRUE(atomic_load(&b.done)) TH_LOG("the reader still waits 2 s after its byte came");
	if (!atomic_load(&b.done)) {
		/* Let the yielders end; the reader is dropped with the process. */
		atomic_store(&b.done, true);
		return;
	}
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	EXPECT_EQ(1, b.ret);
	ASSERT_EQ(0, fiber_sched_stop());
	close(sv[0]);
	close(sv[1]);
}

FIBER_MODE_FIXTURE(preempted);

/* Program code without calls until *arg: only a preemption takes it off. */
static void *spin_until(void *arg)
{
	atomic_bool *done = arg;

	for (uint64_t i = 0; !atomic_load_explicit(done, memory_order_relaxed); i++)
		__asm__ volatile("" : "+r"(i));
	return NULL;
}

/*
 * The same with the reader's only company a fiber that never yields: each
 * preemption finds nothing else runnable, and must still let the worker
 * reap its ring rather than give the spinner a new slice at once.
 */
TEST_F(preempted, completion_reaches_preempted_worker)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 200000 };
	struct busy_worker b = { 0 };
	fiber_t *f[2];
	int sv[2], i;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	FIBER_START(&cfg);
	SKIP_WITHOUT_RING();
	b.fd = sv[0];
	ASSERT_EQ(0, fiber_spawn(&f[0], busy_reader, &b));
	fiber_sleep(20000000);
	ASSERT_EQ(0, fiber_spawn(&f[1], spin_until, &b.done));
	fiber_sleep(20000000);
	ASSERT_EQ(1, write(sv[1], "x", 1));
	for (i = 0; i < 200 && !atomic_load(&b.done); i++)
		fiber_sleep(10000000);
	EXPECT_TRUE(atomic_load(&b.done)) TH_LOG("the reader still waits 2 s after its byte came");
	atomic_store(&b.done, true);
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	EXPECT_EQ(1, b.ret);
	ASSERT_EQ(0, fiber_sched_stop());
	close(sv[0]);
	close(sv[1]);
}

/*
 * Bytes that count, and bytes to send at most for them: in an arm64 VM
 * under TCG, where the write and its wake-up take a good part of the
 * 200 us slice, as many as 43 of 60 bytes were sent across a switch.
 */
#define ORDERING_BYTES		20
#define ORDERING_ATTEMPTS	300

struct ordering {
	int fd;
	fiber_t *spinner[2];
	atomic_bool done;
	atomic_ulong seen[2];		/* the spinners' runs when the reader woke */
	atomic_int got;			/* bytes the reader received */
};

static void *ordering_reader(void *arg)
{
	struct ordering *o = arg;
	struct fiber_stats st;
	char c;
	int j;

	while (fiber_recv(o->fd, &c, 1, 0) == 1) {
		for (j = 0; j < 2; j++) {
			fiber_stats(o->spinner[j], &st);
			atomic_store(&o->seen[j], st.runs);
		}
		atomic_fetch_add(&o->got, 1);
	}
	return NULL;
}

/* Both spinners' run counts, summed with a weight: any run changes it. */
static unsigned long spinner_runs(struct ordering *o, unsigned long *runs)
{
	struct fiber_stats st;
	int j;

	for (j = 0; j < 2; j++) {
		fiber_stats(o->spinner[j], &st);
		runs[j] = st.runs;
	}
	return runs[0] * 1000003 + runs[1];
}

/*
 * A fiber woken by a completion runs before fibers that ran their slice
 * out: before the preempted one gets another slice, and before the other
 * spinner, queued earlier, gets its turn. The reader sees both spinners'
 * run counts unchanged since the byte was sent. Queued behind them, it
 * would wait a slice or two more, every time. A byte during whose write
 * a spinner was switched to proves nothing and does not count.
 */
TEST_F(preempted, completion_runs_before_preempted_fibers)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 200000 };
	struct ordering o = { 0 };
	unsigned long before[2], after[2];
	int sv[2], j, attempts, counted = 0, first = 0;
	fiber_t *reader;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	FIBER_START(&cfg);
	SKIP_WITHOUT_RING();
	o.fd = sv[0];
	ASSERT_EQ(0, fiber_spawn(&reader, ordering_reader, &o));
	fiber_sleep(20000000);
	for (j = 0; j < 2; j++)
		ASSERT_EQ(0, fiber_spawn(&o.spinner[j], spin_until, &o.done));
	fiber_sleep(20000000);
	for (attempts = 0; attempts < ORDERING_ATTEMPTS && counted < ORDERING_BYTES; attempts++) {
		int got = atomic_load(&o.got);
		unsigned long b = spinner_runs(&o, before);

		ASSERT_EQ(1, write(sv[1], "x", 1));
		if (spinner_runs(&o, after) != b) {
			FIBER_WAIT_FOR(atomic_load(&o.got) > got, 10000000000ULL);
			continue;
		}
		FIBER_WAIT_FOR(atomic_load(&o.got) > got, 10000000000ULL);
		ASSERT_LT(got, atomic_load(&o.got));
		counted++;
		first += atomic_load(&o.seen[0]) == before[0] && atomic_load(&o.seen[1]) == before[1];
	}
	shutdown(sv[1], SHUT_WR);
	ASSERT_EQ(0, fiber_join(reader, NULL));
	atomic_store(&o.done, true);
	for (j = 0; j < 2; j++)
		ASSERT_EQ(0, fiber_join(o.spinner[j], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%d bytes sent for %d that count", attempts, counted);
	ASSERT_EQ(ORDERING_BYTES, counted);
	/* A byte sent as a spinner was being switched to may still miss. */
	EXPECT_LE(15, first) TH_LOG("the reader ran first for %d of %d bytes", first, counted);
	close(sv[0]);
	close(sv[1]);
}

struct duo {
	int fd[2];
	int step;
	ssize_t results[8];
};

static void *socket_peer(void *arg)
{
	struct duo *d = arg;
	char buf[32] = { 0 }, a[4], b[8];
	struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };

	d->results[0] = fiber_recv(d->fd[1], buf, sizeof(buf), 0);
	d->results[1] = !memcmp(buf, "ping", 4);
	d->results[2] = fiber_send(d->fd[1], "pong", 4, 0);
	d->results[3] = fiber_recvmsg(d->fd[1], &msg, MSG_WAITALL);
	d->results[4] = !memcmp(a, "abcd", 4) && !memcmp(b, "efghijkl", 8);
	d->results[5] = fiber_writev(d->fd[1], iov, 2);
	return NULL;
}

TEST(socketpair_every_call)
{
	struct duo d = { 0 };
	char buf[32], x[6], y[6];
	struct iovec out[2] = { { "abcdef", 6 }, { "ghijkl", 6 } };
	struct iovec in[2] = { { x, 6 }, { y, 6 } };
	struct msghdr msg = { .msg_iov = out, .msg_iovlen = 2 };
	fiber_t *f;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, d.fd));
	START_WITH_RING(&one_worker);
	ASSERT_EQ(0, fiber_spawn(&f, socket_peer, &d));
	/* The test's body runs outside fibers: plain calls, same results. */
	ASSERT_EQ(4, fiber_send(d.fd[0], "ping", 4, 0));
	ASSERT_EQ(4, fiber_recv(d.fd[0], buf, sizeof(buf), 0));
	ASSERT_EQ(0, memcmp(buf, "pong", 4));
	ASSERT_EQ(12, fiber_sendmsg(d.fd[0], &msg, 0));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(4, d.results[0]);
	ASSERT_EQ(1, d.results[1]);
	ASSERT_EQ(4, d.results[2]);
	ASSERT_EQ(12, d.results[3]);
	ASSERT_EQ(1, d.results[4]);
	ASSERT_EQ(12, d.results[5]);
	ASSERT_EQ(12, fiber_readv(d.fd[0], in, 2));
	ASSERT_EQ(0, memcmp(x, "abcdef", 6));
	ASSERT_EQ(0, fiber_sched_stop());
	close(d.fd[0]);
	close(d.fd[1]);
}

struct tcp {
	int listen_fd;
	struct sockaddr_in addr;
	ssize_t server_got, client_got, eof;
	int accept_ret, connect_ret, close_ret;
	char reply[16];
};

static void *tcp_server(void *arg)
{
	struct tcp *t = arg;
	char buf[16];
	int fd;

	/* Bounded: a client that cannot connect fails the test, not hangs it. */
	fiber_set_deadline(test_now_ns() + 20000000000ULL);
	fd = fiber_accept(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	t->accept_ret = fd;
	if (fd < 0)
		return NULL;
	t->server_got = fiber_read(fd, buf, sizeof(buf));
	fiber_send(fd, buf, t->server_got > 0 ? t->server_got : 0, MSG_NOSIGNAL);
	t->close_ret = fiber_close(fd);
	return NULL;
}

static void *tcp_client(void *arg)
{
	struct tcp *t = arg;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	t->connect_ret = fiber_connect(fd, (struct sockaddr *)&t->addr, sizeof(t->addr));
	if (t->connect_ret) {
		fiber_close(fd);
		return NULL;
	}
	fiber_send(fd, "over tcp", 8, MSG_NOSIGNAL);
	t->client_got = fiber_read(fd, t->reply, sizeof(t->reply));
	t->eof = fiber_read(fd, t->reply + 8, sizeof(t->reply) - 8);
	fiber_close(fd);
	return NULL;
}

TEST(tcp_loopback)
{
	struct tcp t = { .addr = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) } };
	socklen_t len = sizeof(t.addr);
	fiber_t *s, *c;

	t.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_LE(0, t.listen_fd);
	if (bind(t.listen_fd, (struct sockaddr *)&t.addr, len))
		SKIP(return, "no loopback interface: %s", strerror(errno));
	ASSERT_EQ(0, listen(t.listen_fd, 8));
	ASSERT_EQ(0, getsockname(t.listen_fd, (struct sockaddr *)&t.addr, &len));
	START_WITH_RING(&one_worker);
	ASSERT_EQ(0, fiber_spawn(&s, tcp_server, &t));
	ASSERT_EQ(0, fiber_spawn(&c, tcp_client, &t));
	ASSERT_EQ(0, fiber_join(s, NULL));
	ASSERT_EQ(0, fiber_join(c, NULL));
	ASSERT_EQ(0, t.connect_ret) TH_LOG("connect: %s", strerror(-t.connect_ret));
	ASSERT_LE(0, t.accept_ret);
	ASSERT_EQ(8, t.server_got);
	ASSERT_EQ(8, t.client_got);
	ASSERT_EQ(0, memcmp(t.reply, "over tcp", 8));
	ASSERT_EQ(0, t.eof);		/* the server closed: end of file */
	ASSERT_EQ(0, t.close_ret);
	ASSERT_EQ(0, fiber_sched_stop());
	close(t.listen_fd);
}

struct file_io {
	char path[64];
	long r[8];
	char buf[16];
};

static void *file_main(void *arg)
{
	struct file_io *io = arg;
	int fd = fiber_openat(AT_FDCWD, io->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	io->r[0] = fd;
	io->r[1] = fiber_pwrite(fd, "0123456789", 10, 0);
	io->r[2] = fiber_fsync(fd);
	io->r[3] = fiber_pread(fd, io->buf, 4, 6);		/* "6789" */
	io->r[4] = fiber_read(fd, io->buf + 4, 3);		/* position 0: "012" */
	io->r[5] = fiber_write(fd, "xy", 2);			/* at 3 */
	io->r[6] = fiber_pread(fd, io->buf + 7, 16 - 7, 100);	/* past the end */
	io->r[7] = fiber_close(fd);
	return NULL;
}

TEST(regular_file)
{
	struct file_io io = { 0 };
	char check[16] = { 0 };
	fiber_t *f;
	int fd;

	snprintf(io.path, sizeof(io.path), "/tmp/fiber-io-%d", getpid());
	START_WITH_RING(&one_worker);
	ASSERT_EQ(0, fiber_spawn(&f, file_main, &io));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_LE(0, io.r[0]);
	ASSERT_EQ(10, io.r[1]);
	ASSERT_EQ(0, io.r[2]);
	ASSERT_EQ(4, io.r[3]);
	ASSERT_EQ(3, io.r[4]);
	ASSERT_EQ(0, memcmp(io.buf, "6789012", 7));
	ASSERT_EQ(2, io.r[5]);
	ASSERT_EQ(0, io.r[6]);
	ASSERT_EQ(0, io.r[7]);
	fd = open(io.path, O_RDONLY);
	ASSERT_EQ(10, read(fd, check, sizeof(check)));
	ASSERT_EQ(0, memcmp(check, "012xy56789", 10));
	close(fd);
	unlink(io.path);
}

struct errs {
	int pipe_fd;
	long r[6];
};

static void *errors_main(void *arg)
{
	struct errs *e = arg;
	char buf[8];

	e->r[0] = fiber_read(e->pipe_fd + 1000, buf, sizeof(buf));
	e->r[1] = fiber_read(e->pipe_fd, (void *)8, 8);
	e->r[2] = fiber_pread(e->pipe_fd, buf, 1, -1);
	e->r[3] = fiber_accept(e->pipe_fd, NULL, NULL, 0);
	e->r[4] = fiber_poll(e->pipe_fd + 1000, POLLIN, 100);
	e->r[5] = fiber_close(e->pipe_fd + 1000);
	return NULL;
}

TEST(errors)
{
	struct errs e;
	fiber_t *f;
	int p[2];

	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(3, write(p[1], "abc", 3));
	e.pipe_fd = p[0];
	START_WITH_RING(&one_worker);
	ASSERT_EQ(0, fiber_spawn(&f, errors_main, &e));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(-EBADF, e.r[0]);
	ASSERT_EQ(-EFAULT, e.r[1]);
	ASSERT_EQ(-EINVAL, e.r[2]);
	ASSERT_EQ(-ENOTSOCK, e.r[3]);
	ASSERT_EQ(-EBADF, e.r[4]);
	ASSERT_EQ(-EBADF, e.r[5]);
}

struct timed {
	volatile bool *go;		/* if set, wait for it before starting */
	int fd;
	uint64_t deadline;
	long ret;
	uint64_t took;
	uint64_t end;
	char buf[8];
};

static void *timed_read(void *arg)
{
	struct timed *t = arg;
	uint64_t start;

	while (t->go && !*t->go)
		fiber_sleep(1000000);
	start = test_now_ns();
	fiber_set_deadline(t->deadline);
	t->ret = fiber_read(t->fd, t->buf, sizeof(t->buf));
	t->end = test_now_ns();
	t->took = t->end - start;
	return NULL;
}

/* A deadline already past: -ETIMEDOUT, and the data stays unread. */
TEST(deadline_in_the_past)
{
	struct timed t = { 0 };
	char buf[4];
	fiber_t *f;
	int p[2];

	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(3, write(p[1], "abc", 3));
	START_WITH_RING(&one_worker);
	t.fd = p[0];
	t.deadline = test_now_ns() - 1;
	ASSERT_EQ(0, fiber_spawn(&f, timed_read, &t));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(-ETIMEDOUT, t.ret);
	ASSERT_EQ(3, read(p[0], buf, sizeof(buf)));
	ASSERT_EQ(-EPERM, fiber_set_deadline(1));	/* not a fiber */
}

/*
 * 200 readers with deadlines between 20 and 220 ms on their own pipes;
 * every other one gets its byte at 120 ms. Each reader gets its own byte
 * or -ETIMEDOUT, never another's, and a byte written after a reader timed
 * out is still in its pipe.
 */
#define TIMED 200
TEST(deadlines_under_load)
{
	static struct timed t[TIMED];
	static int p[TIMED][2];
	static fiber_t *f[TIMED];
	uint64_t start, seed = 42;
	int i, timed_out = 0, got = 0;
	volatile bool go = false;

	START_WITH_RING(&one_worker);
	for (i = 0; i < TIMED; i++) {
		ASSERT_EQ(0, pipe(p[i]));
		t[i].fd = p[i][0];
		t[i].go = &go;
		ASSERT_EQ(0, fiber_spawn(&f[i], timed_read, &t[i]));
	}
	/* Deadlines from now on: spawning takes long under emulation. */
	start = test_now_ns();
	for (i = 0; i < TIMED; i++)
		t[i].deadline = start + 20000000 + test_rand(&seed) % 200000000;
	go = true;
	/* Writes at 120 ms (later when spawning took longer). */
	while (test_now_ns() < start + 120000000)
		fiber_sleep(1000000);
	for (i = 0; i < TIMED; i += 2) {
		char c = (char)i;

		ASSERT_EQ(1, write(p[i][1], &c, 1));
	}
	for (i = 0; i < TIMED; i++) {
		ASSERT_EQ(0, fiber_join(f[i], NULL));
		if (t[i].ret == -ETIMEDOUT) {
			char c;

			timed_out++;
			/* Not early, and nothing consumed. */
			ASSERT_LE(t[i].deadline, t[i].end);
			if (!(i % 2)) {
				ASSERT_EQ(1, read(p[i][0], &c, 1));
				ASSERT_EQ((char)i, c);
			}
		} else {
			ASSERT_EQ(1, t[i].ret) TH_LOG("reader %d: %ld", i, t[i].ret);
			ASSERT_EQ(0, i % 2);
			ASSERT_EQ((char)i, t[i].buf[0]);
			got++;
		}
		close(p[i][0]);
		close(p[i][1]);
	}
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%d timed out, %d got their byte", timed_out, got);
	ASSERT_LT(TIMED / 2, timed_out);	/* all odd ones, some even ones */
	ASSERT_LT(0, got);
}

static void *poll_main(void *arg)
{
	struct timed *t = arg;

	t->ret = fiber_poll(t->fd, POLLIN, 50);
	t->took = fiber_poll(t->fd, POLLIN, -1);
	return NULL;
}

TEST(poll_with_timeout)
{
	struct timed t = { 0 };
	uint64_t start;
	fiber_t *f;
	int p[2];

	ASSERT_EQ(0, pipe(p));
	START_WITH_RING(&one_worker);
	t.fd = p[0];
	start = test_now_ns();
	ASSERT_EQ(0, fiber_spawn(&f, poll_main, &t));
	fiber_sleep(200000000);
	ASSERT_EQ(1, write(p[1], "x", 1));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(0, t.ret);			/* 50 ms passed first */
	ASSERT_EQ(POLLIN, t.took);
	ASSERT_LE(200000000, test_now_ns() - start);
}

/*
 * 10,000 fibers blocked in fiber_read at once, on a 256-entry ring, all
 * on one datagram socket: each gets exactly one of the 10,000 messages.
 */
#define MANY_READERS 10000
FIXTURE(many) {};
FIXTURE_SETUP(many) {}
FIXTURE_TEARDOWN(many) {}
TEST_F_TIMEOUT(many, ten_thousand_readers, 300)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_OFF,
				    .stack_size = 32768 };
	static struct pipe_reader r[MANY_READERS];
	static fiber_t *f[MANY_READERS];
	static bool seen[MANY_READERS];
	struct fiber_worker_stats st;
	int sv[2], i;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	START_WITH_RING(&cfg);
	for (i = 0; i < MANY_READERS; i++) {
		r[i].fd = sv[0];
		ASSERT_EQ(0, fiber_spawn(&f[i], reader_main, &r[i]));
	}
	FIBER_WAIT_FOR(FIBER_STAT_SUM(io_ops) >= MANY_READERS, 120000000000ULL);
	for (i = 0; i < MANY_READERS; i++)
		ASSERT_FALSE(r[i].done);
	/* Blocking sends from this thread, while the worker hands them out. */
	for (i = 0; i < MANY_READERS; i++)
		ASSERT_EQ(4, send(sv[1], &i, 4, 0));
	for (i = 0; i < MANY_READERS; i++) {
		int tag;

		ASSERT_EQ(0, fiber_join(f[i], NULL));
		ASSERT_EQ(4, r[i].ret);
		memcpy(&tag, r[i].buf, 4);
		ASSERT_TRUE(tag >= 0 && tag < MANY_READERS && !seen[tag]);
		seen[tag] = true;
	}
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	TH_LOG("%lu operations, %lu submits", st.io_ops, st.io_submits);
	ASSERT_EQ(MANY_READERS, st.io_ops);
	ASSERT_EQ(0, fiber_sched_stop());
	close(sv[0]);
	close(sv[1]);
}

/* A process whose seccomp filter refuses io_uring_setup(). */
static int refuse_io_uring(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = filter };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) ? -errno : 0;
}

static void *echo_main(void *arg)
{
	struct pipe_reader *r = arg;

	r->ret = fiber_read(r->fd, r->buf, sizeof(r->buf));
	return NULL;
}

/* Without io_uring the scheduler starts and the calls block the worker. */
TEST(without_io_uring)
{
	struct pipe_reader r = { 0 };
	struct fiber_worker_stats st;
	fiber_t *f;
	int p[2];

	if (refuse_io_uring())
		SKIP(return, "no seccomp filters here (qemu-user)");
	ASSERT_EQ(0, pipe(p));
	ASSERT_EQ(2, write(p[1], "ok", 2));
	ASSERT_EQ(0, fiber_sched_start(&one_worker));
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	ASSERT_EQ(0, st.ring_entries);
	r.fd = p[0];
	ASSERT_EQ(0, fiber_spawn(&f, echo_main, &r));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(2, r.ret);
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	ASSERT_EQ(0, st.io_ops);
	ASSERT_EQ(0, fiber_sched_stop());
}

struct small_ring_writer {
	int fd;
	int ok;
};

static void *small_ring_main(void *arg)
{
	struct small_ring_writer *sw = arg;
	char c = 'x';
	int i;

	for (i = 0; i < 500; i++) {
		fiber_set_deadline(i % 2 ? test_now_ns() + 1000000000 : 0);
		sw->ok += fiber_write(sw->fd, &c, 1) == 1;
	}
	return NULL;
}

/*
 * Sizes out of range are refused: 1 entry has no room for an operation
 * and its linked timeout (calls waited for that room forever). 2 entries
 * carry 8 fibers' writes with and without deadlines.
 */
TEST(ring_size_bounds)
{
	struct fiber_config cfg = { .mode = FIBER_PREEMPT_OFF, .ring_entries = 1 << 20 };
	struct small_ring_writer sw[8];
	fiber_t *f[8];
	int i, devnull;

	ASSERT_EQ(-EINVAL, fiber_sched_start(&cfg));
	cfg.ring_entries = 1;
	ASSERT_EQ(-EINVAL, fiber_sched_start(&cfg));
	cfg.ring_entries = 2;
	START_WITH_RING(&cfg);
	devnull = open("/dev/null", O_WRONLY);
	ASSERT_LE(0, devnull);
	for (i = 0; i < 8; i++) {
		sw[i] = (struct small_ring_writer){ .fd = devnull };
		ASSERT_EQ(0, fiber_spawn(&f[i], small_ring_main, &sw[i]));
	}
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(0, fiber_join(f[i], NULL));
		ASSERT_EQ(500, sw[i].ok);
	}
	ASSERT_EQ(0, fiber_sched_stop());
	close(devnull);
}

#define RACE_PAIRS	8
#define RACE_RECORDS	4000
#define RACE_NS		3000000000ULL	/* emulated, fewer records */

static int race_pipe[RACE_PAIRS][2];
static uint64_t race_written[RACE_PAIRS], race_read[RACE_PAIRS], race_end;
static atomic_int race_bad, race_timeouts;

/* Writes numbered records, then closes its end: the reader sees EOF. */
static void *race_writer(void *arg)
{
	long k = (long)arg;
	uint64_t seed = k + 1, v;

	for (v = 0; v < RACE_RECORDS && test_now_ns() < race_end; v++) {
		if (fiber_write(race_pipe[k][1], &v, sizeof(v)) != sizeof(v))
			atomic_fetch_add(&race_bad, 1);
		if (test_rand(&seed) % 4 == 0)
			fiber_sleep(test_rand(&seed) % 20000);
	}
	race_written[k] = v;
	close(race_pipe[k][1]);
	return NULL;
}

/*
 * Reads with a deadline of a few microseconds, which often fires just as
 * the data arrives, alternate with reads without one: the latter never
 * fail, and every record arrives once, in order.
 */
static void *race_reader(void *arg)
{
	long k = (long)arg;
	uint64_t seed = 7 * k + 3, expect = 0, v;
	ssize_t n;

	for (;;) {
		bool timed = test_rand(&seed) % 2;

		fiber_set_deadline(timed ? test_now_ns() + test_rand(&seed) % 30000 : 0);
		n = fiber_read(race_pipe[k][0], &v, sizeof(v));
		if (n == -ETIMEDOUT && timed) {
			atomic_fetch_add(&race_timeouts, 1);
			continue;
		}
		if (n == 0)
			break;
		/* Records are written whole: a pipe never splits 8 bytes. */
		if (n != sizeof(v) || v != expect) {
			atomic_fetch_add(&race_bad, 1);
			break;
		}
		expect++;
	}
	race_read[k] = expect;
	return NULL;
}

/*
 * A linked timeout that fires as its read completes cancels by user_data;
 * a fiber's requests reuse one stack address, so without a per-operation
 * tag the late cancellation hit the fiber's next read (-ECANCELED on a
 * read with no deadline, about once in 5-20 runs of this with migration).
 */
TEST_F_TIMEOUT(many, late_timeout_spares_next_call, 120)
{
	struct fiber_config cfg = { .workers = 2, .mode = FIBER_PREEMPT_SIGNAL,
				    .slice_ns = 100000, .flags = FIBER_MIGRATE_PREEMPTED };
	fiber_t *r[RACE_PAIRS], *w[RACE_PAIRS];
	long k;

	atomic_store(&race_bad, 0);
	atomic_store(&race_timeouts, 0);
	race_end = test_now_ns() + RACE_NS;
	START_WITH_RING(&cfg);
	for (k = 0; k < RACE_PAIRS; k++) {
		ASSERT_EQ(0, pipe(race_pipe[k]));
		ASSERT_EQ(0, fiber_spawn(&r[k], race_reader, (void *)k));
		ASSERT_EQ(0, fiber_spawn(&w[k], race_writer, (void *)k));
	}
	for (k = 0; k < RACE_PAIRS; k++) {
		ASSERT_EQ(0, fiber_join(w[k], NULL));
		ASSERT_EQ(0, fiber_join(r[k], NULL));
		close(race_pipe[k][0]);
	}
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%d reads timed out, %lu records on pair 0", atomic_load(&race_timeouts),
	       (unsigned long)race_written[0]);
	ASSERT_EQ(0, atomic_load(&race_bad));
	for (k = 0; k < RACE_PAIRS; k++)
		ASSERT_EQ(race_written[k], race_read[k]);
	ASSERT_LT(0, atomic_load(&race_timeouts));
}

TEST_HARNESS_MAIN
