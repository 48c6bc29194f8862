// SPDX-License-Identifier: MIT
/*
 * An open-loop HTTP/1.1 load generator on io_uring, single-threaded.
 *
 *   loadgen --port P --rate R [--addr A] [--duration-ms D] [--warmup-ms W]
 *           [--conns C] [--long K] [--long-us U] [--path PATH] [--label STR]
 *
 * Short requests (GET PATH) go out on a fixed schedule, request i at
 * t0 + i/R seconds, whether or not earlier ones have been answered, and
 * each one's latency is counted from that scheduled time. A closed-loop
 * client such as wrk waits for a reply before sending the next request,
 * so when the server stalls it simply stops asking, and the requests that
 * would have queued up behind the stall are never measured. Here they are
 * sent anyway (pipelined when every connection is busy) and the wait they
 * would have seen shows up in the tail.
 *
 * Alongside, K connections each keep one GET /spin?us=U in flight, sending
 * the next as soon as a reply is complete: the long requests whose effect
 * on the short ones is being measured.
 *
 * The first W of the D milliseconds are a warmup: the counters and the
 * percentiles cover only short requests scheduled after it, except that
 * errors also counts every non-200 reply to a long request. Lost are the
 * requests unanswered 5 s after the schedule ends, or on a connection that
 * failed, or due when no connection was left. "late" counts requests sent
 * more than 1 ms after their time: the generator itself fell behind, and
 * the figures understate the queueing. One line is printed at the end; the
 * exit status is 0 only if replies came back and none were errors or lost.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP		8192			/* receive buffer per connection */
#define LATE_NS		1000000ULL
#define DRAIN_NS	5000000000ULL		/* wait for replies after the schedule */
#define MAX_REQS	(1ULL << 27)		/* latencies kept: 512 MiB at most */
#define MAX_CONNS	16384			/* two entries each fill the largest ring */

enum { OP_SEND, OP_RECV };

/*
 * The bytes of one request, repeated. All requests on a connection are the
 * same, so the ones waiting to go out are just a count of bytes, sent from
 * here at the right phase: unlike a per-connection output buffer this never
 * has to grow or move while the kernel may still be reading it.
 */
struct reqtext {
	char *buf;
	size_t len;		/* of one request */
	size_t size;		/* of buf, whole copies */
};

struct conn {
	int fd;
	bool is_long;
	bool dead;
	bool send_busy;
	size_t unsent;			/* request bytes not yet given to a send */
	unsigned long long sent_bytes;	/* phase in the repeated request */
	unsigned int nout;		/* requests queued or sent, not answered */
	/* short only: their indices, which give their times; oldest at fifo[head] */
	uint32_t *fifo;
	unsigned int head, cap;
	bool in_body;
	int status;			/* of the reply being read */
	size_t body_left;
	size_t in_len;
	char in[IN_CAP];
};

static struct io_uring ring;
static struct conn *conns;		/* the short ones first */
static unsigned int nr_short, nr_conns;
static struct reqtext short_req, long_req;

static unsigned long long rate;
static uint64_t t0;
static uint32_t first_measured;		/* index of the first request after warmup */
static unsigned int short_out;		/* short requests without a reply */
static uint32_t *lat_us;
static uint64_t last_done_ns;

static struct {
	unsigned long long sent, done, errors, lost, late, long_done;
} st;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint64_t sched_ns(uint32_t i)
{
	return t0 + i * 1000000000ULL / rate;
}

static void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (!p) {
		perror("loadgen: realloc");
		exit(1);
	}
	return p;
}

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)(c - conns) << 1 | OP_RECV);
}

/* One send at a time per connection, or the bytes could go out of order. */
static void kick_send(struct conn *c)
{
	struct reqtext *r = c->is_long ? &long_req : &short_req;
	struct io_uring_sqe *sqe;
	size_t off, n;

	if (c->send_busy || !c->unsent || c->dead)
		return;
	off = c->sent_bytes % r->len;
	n = r->size - off < c->unsent ? r->size - off : c->unsent;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_send(sqe, c->fd, r->buf + off, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(c - conns) << 1 | OP_SEND);
	c->send_busy = true;
}

static void queue_request(struct conn *c, uint32_t idx)
{
	if (!c->is_long) {
		if (c->head + c->nout == c->cap) {
			memmove(c->fifo, c->fifo + c->head, c->nout * sizeof(*c->fifo));
			c->head = 0;
			if (c->nout == c->cap) {
				c->cap = c->cap ? 2 * c->cap : 16;
				c->fifo = xrealloc(c->fifo, c->cap * sizeof(*c->fifo));
			}
		}
		c->fifo[c->head + c->nout] = idx;
		short_out++;
	}
	c->nout++;
	c->unsent += c->is_long ? long_req.len : short_req.len;
	kick_send(c);
}

/* Counts the measured short requests on c that will get no reply now. */
static unsigned int drop_outstanding(struct conn *c)
{
	unsigned int k, n = 0;

	if (c->is_long)
		return 0;
	for (k = 0; k < c->nout; k++)
		n += c->fifo[c->head + k] >= first_measured;
	st.lost += n;
	short_out -= c->nout;
	c->nout = 0;
	return n;
}

static void conn_fail(struct conn *c, const char *why)
{
	unsigned int nout = c->nout, lost = drop_outstanding(c);

	fprintf(stderr, "loadgen: %s connection %td: %s, %u request(s) unanswered, %u counted lost\n",
		c->is_long ? "long" : "short", c - conns, why, nout, lost);
	c->dead = true;
	/* Ends the recv (and any send) still pending on it, so nothing lingers. */
	shutdown(c->fd, SHUT_RDWR);
}

static void reply_done(struct conn *c, uint64_t now)
{
	uint32_t idx;

	if (!c->nout) {
		conn_fail(c, "reply to no request");
		return;
	}
	c->nout--;
	if (c->is_long) {
		st.long_done++;
		/* Any of them, or a server without /spin would pass unnoticed. */
		st.errors += c->status != 200;
		queue_request(c, 0);
		return;
	}
	idx = c->fifo[c->head++];
	if (!c->nout)
		c->head = 0;
	short_out--;
	if (idx < first_measured)
		return;
	if (c->status != 200) {
		st.errors++;
		return;
	}
	lat_us[st.done++] = (now - sched_ns(idx)) / 1000;
	last_done_ns = now;
}

/* The status and Content-Length of a header block ending in \r\n\r\n. */
static int parse_head(const char *p, size_t len, int *status, size_t *clen)
{
	const char *end = p + len, *line, *v;

	if (len < 12 || memcmp(p, "HTTP/1.", 7) || p[8] != ' ' ||
	    !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
	    !isdigit((unsigned char)p[11]))
		return -1;
	*status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	*clen = 0;
	for (line = memmem(p, len, "\r\n", 2) + 2; line < end - 2;
	     line = memmem(line, end - line, "\r\n", 2) + 2) {
		if (strncasecmp(line, "Content-Length:", 15))
			continue;
		for (v = line + 15; *v == ' ' || *v == '\t'; v++)
			;
		/* The block ends in \r\n, so the number cannot run off it. */
		if (!isdigit((unsigned char)*v))
			return -1;
		*clen = strtoull(v, NULL, 10);
		if (*clen > 1ULL << 40)
			return -1;
	}
	return 0;
}

/*
 * Takes every complete reply out of c's buffer; a reply's head is kept
 * until it is whole, its body only counted off, so a reply may straddle
 * any number of recvs and one recv may hold several replies.
 */
static void parse(struct conn *c, uint64_t now)
{
	size_t pos = 0, n;
	char *end;

	for (;;) {
		if (c->in_body) {
			n = c->in_len - pos < c->body_left ? c->in_len - pos : c->body_left;
			pos += n;
			c->body_left -= n;
			if (c->body_left)
				break;
			c->in_body = false;
			reply_done(c, now);
			if (c->dead)
				return;
			continue;
		}
		end = memmem(c->in + pos, c->in_len - pos, "\r\n\r\n", 4);
		if (!end)
			break;
		n = end + 4 - (c->in + pos);
		if (parse_head(c->in + pos, n, &c->status, &c->body_left)) {
			conn_fail(c, "malformed reply");
			return;
		}
		pos += n;
		c->in_body = true;
	}
	c->in_len -= pos;
	memmove(c->in, c->in + pos, c->in_len);
}

static void handle_cqe(struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	int res = cqe->res;
	struct conn *c;

	/* Kernels before 5.11 report liburing's own wait timeout here. */
	if (data == LIBURING_UDATA_TIMEOUT)
		return;
	c = &conns[data >> 1];
	if ((data & 1) == OP_SEND) {
		c->send_busy = false;
		if (c->dead)
			return;
		if (res <= 0) {
			conn_fail(c, res ? strerror(-res) : "send made no progress");
			return;
		}
		c->sent_bytes += res;
		c->unsent -= res;
		kick_send(c);
		return;
	}
	if (c->dead)
		return;
	if (res <= 0) {
		conn_fail(c, res ? strerror(-res) : "closed by server");
		return;
	}
	c->in_len += res;
	parse(c, now_ns());
	if (c->dead)
		return;
	if (c->in_len == IN_CAP) {
		conn_fail(c, "reply head does not fit the buffer");
		return;
	}
	arm_recv(c);
}

/* Submits what is prepared, sleeps up to ns for a completion, reaps all. */
static void wait_and_reap(uint64_t ns)
{
	struct __kernel_timespec ts = {
		.tv_sec = ns / 1000000000ULL, .tv_nsec = ns % 1000000000ULL,
	};
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;
	int ret;

	ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR) {
		fprintf(stderr, "loadgen: io_uring wait: %s\n", strerror(-ret));
		exit(1);
	}
	io_uring_for_each_cqe(&ring, head, cqe) {
		handle_cqe(cqe);
		n++;
	}
	io_uring_cq_advance(&ring, n);
}

/*
 * Puts short request i on a connection with nothing outstanding, or else
 * pipelines it behind the fewest; the scan starts at a rotating point so
 * idle connections share the work. False if no connection is left.
 */
static bool dispatch(uint32_t i, uint64_t now)
{
	static unsigned int rr;
	struct conn *c, *best = NULL;
	unsigned int k;

	for (k = 0; k < nr_short; k++) {
		c = &conns[(rr + k) % nr_short];
		if (c->dead)
			continue;
		if (!best || c->nout < best->nout)
			best = c;
		if (!c->nout)
			break;
	}
	rr = (rr + 1) % nr_short;
	if (!best)
		return false;
	queue_request(best, i);
	if (i >= first_measured) {
		st.sent++;
		st.late += now - sched_ns(i) > LATE_NS;
	}
	return true;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s --port P --rate R [--addr A] [--duration-ms D] [--warmup-ms W]\n"
		"       [--conns C] [--long K] [--long-us U] [--path PATH] [--label STR]\n", prog);
	exit(2);
}

static unsigned long long parse_num(const char *arg, unsigned long long min,
				    unsigned long long max, const char *prog)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg || *end || *arg == '-' || v < min || v > max)
		usage(prog);
	return v;
}

static void make_req(struct reqtext *r, const char *text)
{
	size_t k, copies;

	r->len = strlen(text);
	copies = r->len < 16384 ? 16384 / r->len : 1;
	r->size = copies * r->len;
	r->buf = xrealloc(NULL, r->size);
	for (k = 0; k < copies; k++)
		memcpy(r->buf + k * r->len, text, r->len);
}

static int connect_to(const struct sockaddr_in *sa, const char *addr, unsigned int port)
{
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		fprintf(stderr, "loadgen: connect to %s:%u: %s\n", addr, port, strerror(errno));
		exit(1);
	}
	return fd;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least q/10000 of them at or below. */
static uint32_t percentile(unsigned long long n, unsigned int q)
{
	unsigned long long rank = (n * q + 9999) / 10000;

	return n ? lat_us[rank ? rank - 1 : 0] : 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "addr", required_argument, NULL, 'a' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration-ms", required_argument, NULL, 'd' },
		{ "warmup-ms", required_argument, NULL, 'w' },
		{ "conns", required_argument, NULL, 'c' },
		{ "long", required_argument, NULL, 'l' },
		{ "long-us", required_argument, NULL, 'u' },
		{ "path", required_argument, NULL, 'P' },
		{ "label", required_argument, NULL, 'L' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long long duration_ms = 3000, warmup_ms = 500, long_us = 10000, total;
	unsigned int port = 0, nr_long = 0, k;
	const char *addr = "127.0.0.1", *path = "/", *label = "none";
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint64_t end_ns, deadline, now;
	char text[4096];
	uint32_t next = 0;
	int opt, ret;

	nr_short = 32;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			port = parse_num(optarg, 1, 65535, argv[0]);
			break;
		case 'a':
			addr = optarg;
			break;
		case 'r':
			rate = parse_num(optarg, 1, 10000000, argv[0]);
			break;
		case 'd':
			duration_ms = parse_num(optarg, 1, 86400000, argv[0]);
			break;
		case 'w':
			warmup_ms = parse_num(optarg, 0, 86400000, argv[0]);
			break;
		case 'c':
			nr_short = parse_num(optarg, 1, MAX_CONNS, argv[0]);
			break;
		case 'l':
			nr_long = parse_num(optarg, 0, MAX_CONNS, argv[0]);
			break;
		case 'u':
			long_us = parse_num(optarg, 0, 3600000000ULL, argv[0]);
			break;
		case 'P':
			path = optarg;
			break;
		case 'L':
			label = optarg;
			break;
		default:
			usage(argv[0]);
		}
	}
	total = rate * duration_ms / 1000;
	/* A path with blanks or line breaks in it would not make a request line. */
	if (optind != argc || !port || !rate || nr_short + nr_long > MAX_CONNS ||
	    warmup_ms >= duration_ms || !total ||
	    total > MAX_REQS || path[0] != '/' || strpbrk(path, " \t\r\n") ||
	    strlen(path) > 1024 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		usage(argv[0]);
	sa.sin_port = htons(port);
	/* Rounded up: the first request scheduled at or after the warmup. */
	first_measured = (warmup_ms * rate + 999) / 1000;
	if (first_measured > total)
		first_measured = total;

	snprintf(text, sizeof(text), "GET %s HTTP/1.1\r\nHost: loadgen\r\n\r\n", path);
	make_req(&short_req, text);
	snprintf(text, sizeof(text), "GET /spin?us=%llu HTTP/1.1\r\nHost: loadgen\r\n\r\n", long_us);
	make_req(&long_req, text);
	lat_us = xrealloc(NULL, (total - first_measured + 1) * sizeof(*lat_us));
	nr_conns = nr_short + nr_long;
	conns = xrealloc(NULL, nr_conns * sizeof(*conns));
	memset(conns, 0, nr_conns * sizeof(*conns));
	/*
	 * A connection has at most one send and one recv prepared or in flight,
	 * so with two entries each the submission queue is never found full,
	 * and the completion queue, twice as large, never overflows.
	 */
	ret = io_uring_queue_init(2 * nr_conns, &ring, 0);
	if (ret) {
		fprintf(stderr, "loadgen: io_uring_queue_init: %s\n", strerror(-ret));
		exit(1);
	}
	for (k = 0; k < nr_conns; k++) {
		conns[k].fd = connect_to(&sa, addr, port);
		conns[k].is_long = k >= nr_short;
		arm_recv(&conns[k]);
		if (conns[k].is_long)
			queue_request(&conns[k], 0);
	}
	io_uring_submit(&ring);

	t0 = now_ns();
	end_ns = t0 + duration_ms * 1000000ULL;
	deadline = end_ns + DRAIN_NS;
	for (;;) {
		now = now_ns();
		while (next < total && sched_ns(next) <= now) {
			if (!dispatch(next, now)) {
				fprintf(stderr, "loadgen: no short connection left\n");
				/* What can no longer be sent will not be answered either. */
				st.lost += total - (next > first_measured ? next : first_measured);
				next = total;
				break;
			}
			next++;
		}
		if (next == total && (!short_out || now >= deadline))
			break;
		wait_and_reap((next < total ? sched_ns(next) : deadline) - now);
	}
	if (short_out) {
		unsigned int lost = 0;

		for (k = 0; k < nr_short; k++)
			lost += drop_outstanding(&conns[k]);
		fprintf(stderr, "loadgen: %u measured request(s) unanswered after %llu ms\n",
			lost, DRAIN_NS / 1000000);
	}
	io_uring_queue_exit(&ring);
	for (k = 0; k < nr_conns; k++)
		close(conns[k].fd);

	qsort(lat_us, st.done, sizeof(*lat_us), cmp_u32);
	/* Over the measured window, stretched if the last replies came after it. */
	now = last_done_ns > end_ns ? last_done_ns : end_ns;
	printf("loadgen: label=%s rate=%llu long=%u sent=%llu done=%llu errors=%llu lost=%llu "
	       "late=%llu p50_us=%u p99_us=%u p999_us=%u max_us=%u rps=%.0f long_done=%llu\n",
	       label, rate, nr_long, st.sent, st.done, st.errors, st.lost, st.late,
	       percentile(st.done, 5000), percentile(st.done, 9900), percentile(st.done, 9990),
	       percentile(st.done, 10000),
	       st.done * 1e9 / (now - (t0 + warmup_ms * 1000000ULL)), st.long_done);
	return st.done && !st.errors && !st.lost ? 0 : 1;
}
