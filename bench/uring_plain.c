// SPDX-License-Identifier: MIT
/*
 * The ceiling httpd is compared with: the same routes (examples/http.c)
 * served by one thread running a plain liburing event loop, each
 * connection a state machine (receive, answer what is complete, send,
 * receive again), no fibers, no preemption. A /spin request holds the
 * whole loop: this server is for measuring GET / throughput.
 *
 *   uring_plain [--addr A] [--port P]
 *
 * --port 0 takes any free port; the first line printed names it. SIGINT
 * or SIGTERM stops it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "http.h"

#define IN_SIZE		(2 * HTTP_MAX_HEAD)
#define OUT_SIZE	(64 * HTTP_MAX_REPLY)

/* What a completion is for: the low bits of its user_data. */
enum op { OP_ACCEPT, OP_SIGNAL, OP_RECV, OP_SEND, OP_MASK = 3 };

struct conn {
	int fd;
	bool closing;
	size_t have, off;		/* input read; the part answered */
	size_t out_len, out_sent;
	char in[IN_SIZE];
	char out[OUT_SIZE];
};

static struct io_uring ring;
static unsigned long long requests, connections;

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	/* Full: submit what is queued to make room. */
	if (!sqe) {
		io_uring_submit(&ring);
		sqe = io_uring_get_sqe(&ring);
	}
	return sqe;
}

static void queue(struct io_uring_sqe *sqe, void *ptr, enum op op)
{
	io_uring_sqe_set_data64(sqe, (uintptr_t)ptr | op);
}

static void queue_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_recv(sqe, c->fd, c->in + c->have, sizeof(c->in) - c->have, 0);
	queue(sqe, c, OP_RECV);
}

static void queue_send(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_send(sqe, c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
			   MSG_NOSIGNAL);
	queue(sqe, c, OP_SEND);
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
}

/* Answers what is complete in the input, then sends or reads on. */
static void serve(struct conn *c)
{
	struct http_reply reply;
	size_t used;

	while (!c->closing && c->out_len + HTTP_MAX_REPLY <= OUT_SIZE &&
	       (used = http_parse(c->in + c->off, c->have - c->off, &reply))) {
		c->off += used;
		if (reply.spin_us)
			http_spin(reply.spin_us);
		c->out_len += http_format(c->out + c->out_len, &reply);
		c->closing = reply.close;
		requests++;
	}
	if (c->out_len) {
		queue_send(c);
		return;
	}
	if (c->closing) {
		conn_close(c);
		return;
	}
	memmove(c->in, c->in + c->off, c->have - c->off);
	c->have -= c->off;
	c->off = 0;
	queue_recv(c);
}

static void queue_accept(int listen_fd)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
	queue(sqe, NULL, OP_ACCEPT);
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--addr A] [--port P]\n", prog);
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "port", required_argument, NULL, 'p' },
		{ 0 }
	};
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sa_len = sizeof(sa);
	const char *addr = "127.0.0.1";
	struct signalfd_siginfo si;
	struct io_uring_sqe *sqe;
	unsigned long port = 8080;
	int listen_fd, sig_fd, opt, ret, one = 1;
	struct rlimit nofile;
	bool stop = false;
	sigset_t stop_signals;
	char *end;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'a':
			addr = optarg;
			break;
		case 'p':
			port = strtoul(optarg, &end, 10);
			if (*end || end == optarg || port > 65535)
				usage(argv[0]);
			break;
		default:
			usage(argv[0]);
		}
	}
	if (optind != argc)
		usage(argv[0]);
	sa.sin_port = htons(port);
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "uring_plain: --addr %s: not an IPv4 address\n", addr);
		return 2;
	}

	getrlimit(RLIMIT_NOFILE, &nofile);
	nofile.rlim_cur = nofile.rlim_max;
	setrlimit(RLIMIT_NOFILE, &nofile);
	http_spin_calibrate();
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(listen_fd, 4096) ||
	    getsockname(listen_fd, (struct sockaddr *)&sa, &sa_len)) {
		fprintf(stderr, "uring_plain: listen on %s:%lu: %s\n", addr, port, strerror(errno));
		return 1;
	}
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
	/* The flags libfiber's rings use: task work runs when the loop enters. */
	ret = io_uring_queue_init(1024, &ring, IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN);
	if (ret == -EINVAL)
		ret = io_uring_queue_init(1024, &ring, 0);
	if (sig_fd < 0 || ret) {
		fprintf(stderr, "uring_plain: io_uring: %s\n", strerror(ret ? -ret : errno));
		return 1;
	}
	queue_accept(listen_fd);
	sqe = get_sqe();
	io_uring_prep_read(sqe, sig_fd, &si, sizeof(si), 0);
	queue(sqe, NULL, OP_SIGNAL);
	printf("uring_plain: listening on %s:%u\n", addr, ntohs(sa.sin_port));
	fflush(stdout);

	while (!stop) {
		struct io_uring_cqe *cqe;
		unsigned int head, seen = 0;

		ret = io_uring_submit_and_wait(&ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EBUSY) {
			fprintf(stderr, "uring_plain: io_uring_submit_and_wait: %s\n", strerror(-ret));
			return 1;
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			uint64_t data = io_uring_cqe_get_data64(cqe);
			struct conn *c = (struct conn *)(uintptr_t)(data & ~(uint64_t)OP_MASK);
			int res = cqe->res;

			seen++;
			switch (data & OP_MASK) {
			case OP_SIGNAL:
				stop = true;
				break;
			case OP_ACCEPT:
				queue_accept(listen_fd);
				if (res < 0)
					break;
				c = malloc(sizeof(*c));
				if (!c) {
					close(res);
					break;
				}
				memset(c, 0, offsetof(struct conn, in));
				c->fd = res;
				setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				connections++;
				queue_recv(c);
				break;
			case OP_RECV:
				if (res <= 0) {
					conn_close(c);
					break;
				}
				c->have += res;
				serve(c);
				break;
			case OP_SEND:
				if (res <= 0) {
					conn_close(c);
					break;
				}
				c->out_sent += res;
				if (c->out_sent < c->out_len) {
					queue_send(c);
					break;
				}
				c->out_len = c->out_sent = 0;
				serve(c);
				break;
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
	printf("uring_plain: stopped: connections=%llu requests=%llu\n", connections, requests);
	return 0;
}
