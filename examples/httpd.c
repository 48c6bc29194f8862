// SPDX-License-Identifier: MIT
/*
 * An HTTP/1.1 server on libfiber: one fiber per connection, written as
 * plain blocking code (recv, parse, compute, send) over libfiber's
 * io_uring calls. Its point is GET /spin?us=N: a request that computes
 * for N microseconds without a single call. Without preemption it holds
 * its worker until it is done, and every request queued behind it waits;
 * with preemption the short requests go on being served within a slice
 * or so (make bench and make demo measure both).
 *
 *   httpd [--mode auto|kmod|signal|off] [--workers N] [--slice-us S]
 *         [--addr A] [--port P] [--idle-timeout-s T]
 *
 * --port 0 takes any free port; the first line printed names it. SIGINT or
 * SIGTERM stops the server: it accepts no more, lets each connection
 * finish the replies it owes, closes them all, and prints its counts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fiber.h"
#include "http.h"

#define MAX_WORKERS	256
#define IN_SIZE		(2 * HTTP_MAX_HEAD)
#define OUT_SIZE	(64 * HTTP_MAX_REPLY)

/* Each worker counts on a cache line of its own. */
struct counts {
	_Atomic uint64_t accepted;
	_Atomic uint64_t requests;
	_Atomic uint64_t status[6];	/* by status_slot() */
	_Atomic uint64_t aborted;	/* the client left mid-request */
	_Atomic uint64_t timed_out;	/* idle past --idle-timeout-s */
} __attribute__((aligned(64)));

static const int statuses[6] = { 200, 400, 404, 405, 431, 505 };

static struct {
	int listen_fd;
	uint64_t idle_timeout_ns;
	atomic_bool stopping;
	atomic_uint live;		/* connection fibers not yet returned */
	/* Open connections by descriptor, for the shutdown to close them. */
	atomic_uchar *open;
	unsigned int max_fd;
	struct counts counts[MAX_WORKERS];
} srv;

static struct counts *my_counts(void)
{
	return &srv.counts[fiber_worker_index()];
}

static int status_slot(int status)
{
	int i = 0;

	/* The last slot, 505, also takes anything unlisted. */
	while (i < 5 && statuses[i] != status)
		i++;
	return i;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* False when the client is gone. */
static bool send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = fiber_send(fd, buf, len, MSG_NOSIGNAL);

		if (n <= 0)
			return false;
		buf += n;
		len -= n;
	}
	return true;
}

/*
 * Closing with unread input makes TCP reset the connection, and a reset
 * can destroy the reply still on its way to the client: after a reply
 * that closes, read what the client sent on (at most 64 KiB, for at most
 * a second) until it closes its side.
 */
static void linger_close(int fd, char *buf, size_t size)
{
	size_t drained = 0;
	ssize_t n;

	shutdown(fd, SHUT_WR);
	fiber_set_deadline(now_ns() + 1000000000);
	do {
		n = fiber_recv(fd, buf, size, 0);
		drained += n > 0 ? n : 0;
	} while (n > 0 && drained < 65536);
}

/*
 * One connection: answers every complete request in what it has read,
 * pipelined ones in one send, then reads more. Only this fiber waits
 * while the client is slow, computes, or is preempted.
 */
static void *connection(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct counts *c = my_counts();
	char in[IN_SIZE], out[OUT_SIZE];
	size_t have = 0, out_len = 0;
	bool closing = false;

	/* Seen by the shutdown, or it sees the shutdown (both seq_cst). */
	atomic_store(&srv.open[fd], 1);
	for (;;) {
		struct http_reply reply;
		size_t off = 0, used;
		ssize_t n;

		while (!closing && (used = http_parse(in + off, have - off, &reply))) {
			off += used;
			if (reply.spin_us)
				http_spin(reply.spin_us);
			out_len += http_format(out + out_len, &reply);
			atomic_fetch_add_explicit(&c->requests, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&c->status[status_slot(reply.status)], 1,
						  memory_order_relaxed);
			closing = reply.close;
			if (OUT_SIZE - out_len < HTTP_MAX_REPLY) {
				if (!send_all(fd, out, out_len))
					goto out;
				out_len = 0;
			}
		}
		if (out_len && !send_all(fd, out, out_len))
			goto out;
		out_len = 0;
		if (closing || atomic_load(&srv.stopping))
			break;
		memmove(in, in + off, have - off);
		have -= off;

		if (srv.idle_timeout_ns)
			fiber_set_deadline(now_ns() + srv.idle_timeout_ns);
		n = fiber_recv(fd, in + have, sizeof(in) - have, 0);
		if (n <= 0) {
			if (n == -ETIMEDOUT)
				atomic_fetch_add_explicit(&c->timed_out, 1, memory_order_relaxed);
			else if (have)
				atomic_fetch_add_explicit(&c->aborted, 1, memory_order_relaxed);
			break;
		}
		have += n;
	}
	if (closing)
		linger_close(fd, in, sizeof(in));
out:
	atomic_store(&srv.open[fd], 0);
	close(fd);
	atomic_fetch_sub(&srv.live, 1);
	return NULL;
}

/* Accepts until the listening socket is shut down; one per worker. */
static void *acceptor(void *arg)
{
	static atomic_bool warned;

	for (;;) {
		int fd = fiber_accept(srv.listen_fd, NULL, NULL, SOCK_CLOEXEC), one = 1;
		fiber_t *f;

		if (atomic_load(&srv.stopping)) {
			if (fd >= 0)
				close(fd);
			return NULL;
		}
		if (fd < 0) {
			if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
				/* Out of descriptors or memory: let connections end. */
				if (!atomic_exchange(&warned, true))
					fprintf(stderr, "httpd: accept: %s; pausing accepts\n",
						strerror(-fd));
				fiber_sleep(10000000);
			}
			continue;
		}
		if ((unsigned int)fd >= srv.max_fd) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		atomic_fetch_add(&srv.live, 1);
		if (fiber_spawn(&f, connection, (void *)(intptr_t)fd)) {
			atomic_fetch_sub(&srv.live, 1);
			close(fd);
			continue;
		}
		fiber_detach(f);
		atomic_fetch_add_explicit(&my_counts()->accepted, 1, memory_order_relaxed);
	}
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--mode auto|kmod|signal|off] [--workers N] [--slice-us S]\n"
		"       [--addr A] [--port P] [--idle-timeout-s T]\n", prog);
	exit(2);
}

static unsigned long parse_num(const char *arg, unsigned long max, const char *prog)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || v > max)
		usage(prog);
	return v;
}

/* The listening socket, or exits with a message naming the problem. */
static int listen_on(const char *addr, unsigned int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd, one = 1;

	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "httpd: --addr %s: not an IPv4 address\n", addr);
		exit(2);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
		fprintf(stderr, "httpd: listen on %s:%u: %s\n", addr, port, strerror(errno));
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "workers", required_argument, NULL, 'w' },
		{ "slice-us", required_argument, NULL, 's' },
		{ "addr", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ "idle-timeout-s", required_argument, NULL, 'i' },
		{ 0 }
	};
	struct fiber_config cfg = { .mode = FIBER_PREEMPT_AUTO, .slice_ns = 100000 };
	const char *addr = "127.0.0.1";
	unsigned int port = 8080, i;
	fiber_t *acceptors[MAX_WORKERS];
	struct fiber_worker_stats ws;
	struct sockaddr_in bound;
	socklen_t bound_len = sizeof(bound);
	uint64_t sum[10] = { 0 }, preemptions = 0, deferred = 0;
	struct rlimit nofile;
	sigset_t stop_signals;
	int opt, ret, sig;

	srv.idle_timeout_ns = 60000000000ULL;
	cfg.workers = sysconf(_SC_NPROCESSORS_ONLN);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			ret = fiber_preempt_mode_parse(optarg);
			if (ret < 0)
				usage(argv[0]);
			cfg.mode = ret;
			break;
		case 'w':
			cfg.workers = parse_num(optarg, MAX_WORKERS, argv[0]);
			break;
		case 's':
			cfg.slice_ns = parse_num(optarg, 1000000, argv[0]) * 1000;
			break;
		case 'a':
			addr = optarg;
			break;
		case 'p':
			port = parse_num(optarg, 65535, argv[0]);
			break;
		case 'i':
			srv.idle_timeout_ns = parse_num(optarg, 86400, argv[0]) * 1000000000ULL;
			break;
		default:
			usage(argv[0]);
		}
	}
	if (optind != argc || !cfg.workers)
		usage(argv[0]);
	if (cfg.workers > MAX_WORKERS)
		cfg.workers = MAX_WORKERS;

	/* A connection is a descriptor: allow as many as the hard limit does. */
	getrlimit(RLIMIT_NOFILE, &nofile);
	nofile.rlim_cur = nofile.rlim_max;
	setrlimit(RLIMIT_NOFILE, &nofile);
	srv.max_fd = nofile.rlim_cur > (1U << 20) ? 1U << 20 : nofile.rlim_cur;
	srv.open = calloc(srv.max_fd, 1);
	if (!srv.open) {
		fprintf(stderr, "httpd: no memory for %u connections\n", srv.max_fd);
		return 1;
	}

	http_spin_calibrate();
	srv.listen_fd = listen_on(addr, port);
	getsockname(srv.listen_fd, (struct sockaddr *)&bound, &bound_len);

	/* Every thread, the workers included, leaves these to sigwait(). */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	ret = fiber_sched_start(&cfg);
	if (ret) {
		fprintf(stderr, "httpd: fiber_sched_start(mode=%s): %s%s\n",
			fiber_preempt_mode_name(cfg.mode), strerror(-ret),
			ret == -ENODEV ? " (is the fiber_preempt module loaded?)" : "");
		return 1;
	}
	fiber_worker_stats(0, &ws);
	if (!ws.ring_entries) {
		fprintf(stderr, "httpd: no io_uring here (kernel, seccomp or emulator): "
			"each connection would hold a worker\n");
		fiber_sched_stop();
		return 1;
	}
	for (i = 0; i < cfg.workers; i++) {
		ret = fiber_spawn(&acceptors[i], acceptor, NULL);
		if (ret) {
			fprintf(stderr, "httpd: fiber_spawn: %s\n", strerror(-ret));
			return 1;
		}
	}
	printf("httpd: listening on %s:%u mode=%s workers=%u slice_us=%llu\n",
	       addr, ntohs(bound.sin_port), fiber_preempt_mode_name(fiber_sched_mode()),
	       cfg.workers, (unsigned long long)cfg.slice_ns / 1000);
	fflush(stdout);

	while (sigwait(&stop_signals, &sig))
		;
	/* No more connections; the acceptors see the shutdown and return. */
	atomic_store(&srv.stopping, true);
	shutdown(srv.listen_fd, SHUT_RDWR);
	for (i = 0; i < cfg.workers; i++)
		fiber_join(acceptors[i], NULL);
	close(srv.listen_fd);
	/* Connections waiting for a request read end of file and close. */
	for (i = 0; i < srv.max_fd; i++)
		if (atomic_load(&srv.open[i]))
			shutdown(i, SHUT_RD);
	/* Those computing finish and reply first (sends have the idle timeout). */
	while (atomic_load(&srv.live))
		fiber_sleep(1000000);
	for (i = 0; i < cfg.workers; i++) {
		struct counts *c = &srv.counts[i];
		int s;

		fiber_worker_stats(i, &ws);
		preemptions += ws.preemptions;
		deferred += ws.deferred_off + ws.deferred_pc + ws.deferred_signal +
			    ws.deferred_kernel + ws.deferred_upcall + ws.deferred_rseq +
			    ws.deferred_vector + ws.deferred_stack;

		sum[0] += c->accepted;
		sum[1] += c->requests;
		for (s = 0; s < 6; s++)
			sum[2 + s] += c->status[s];
		sum[8] += c->aborted;
		sum[9] += c->timed_out;
	}
	fiber_sched_stop();
	printf("httpd: stopped by %s: connections=%llu requests=%llu",
	       sig == SIGINT ? "SIGINT" : "SIGTERM",
	       (unsigned long long)sum[0], (unsigned long long)sum[1]);
	for (i = 0; i < 6; i++)
		printf(" %d=%llu", statuses[i], (unsigned long long)sum[2 + i]);
	printf(" aborted=%llu timed_out=%llu preemptions=%llu deferred=%llu\n",
	       (unsigned long long)sum[8], (unsigned long long)sum[9],
	       (unsigned long long)preemptions, (unsigned long long)deferred);
	return 0;
}
