// SPDX-License-Identifier: GPL-2.0
/*
 * examples/httpd as its users meet it: the real program, started on a
 * free port in each preemption mode, driven by a client over TCP. Routes
 * and refusals, keep-alive and pipelining, a thousand connections at
 * once, clients that leave mid-request or say nothing, a long request
 * beside short ones on one worker, and the shutdown SIGTERM asks for.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct server {
	pid_t pid;
	FILE *out;		/* its standard output */
	int port;
	char first[256];	/* the line naming its port and mode */
};

/* httpd: beside this program in the VM, in ../examples in the build tree. */
static void httpd_path(char *path, size_t size)
{
	char self[PATH_MAX] = "";

	if (readlink("/proc/self/exe", self, sizeof(self) - 1) < 0)
		strcpy(self, "./server");
	snprintf(path, size, "%s/../examples/httpd", dirname(self));
	if (access(path, X_OK))
		snprintf(path, size, "%s/httpd", self);
}

/*
 * Starts httpd; 0 with its port known, or -1 with why it did not start
 * in s->first (the mode cannot run here, no io_uring).
 */
static int server_start(struct server *s, enum fiber_preempt_mode mode, int workers,
			const char *idle_timeout_s)
{
	char path[PATH_MAX], nworkers[16];
	const char *p;
	int out[2];

	httpd_path(path, sizeof(path));
	snprintf(nworkers, sizeof(nworkers), "%d", workers);
	if (pipe(out))
		return -1;
	s->pid = fork();
	if (s->pid == 0) {
		dup2(out[1], 1);
		dup2(out[1], 2);
		execl(path, "httpd", "--port", "0", "--mode", fiber_preempt_mode_name(mode),
		      "--workers", nworkers, "--slice-us", "100",
		      "--idle-timeout-s", idle_timeout_s, (char *)NULL);
		dprintf(1, "exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(out[1]);
	s->out = fdopen(out[0], "r");
	if (!fgets(s->first, sizeof(s->first), s->out))
		snprintf(s->first, sizeof(s->first), "httpd printed nothing");
	p = strstr(s->first, "127.0.0.1:");
	if (!p || strncmp(s->first, "httpd: listening", 16)) {
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
		return -1;
	}
	s->port = atoi(p + 10);
	return 0;
}

/*
 * Stops httpd with SIGTERM; true if it exited with status 0 within 20 s,
 * its last line in last.
 */
static bool server_stop(struct server *s, char *last, size_t size)
{
	char line[512];
	int status = -1, i;

	last[0] = '\0';
	if (!s->pid)
		return false;
	kill(s->pid, SIGTERM);
	for (i = 0; i < 2000 && waitpid(s->pid, &status, WNOHANG) == 0; i++)
		usleep(10000);
	if (i == 2000) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &status, 0);
	}
	s->pid = 0;
	while (fgets(line, sizeof(line), s->out))
		snprintf(last, size, "%s", line);
	fclose(s->out);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* A count from httpd's last line ("requests=12"), or -1. */
static long count_of(const char *last, const char *name)
{
	char key[32];
	const char *p;

	snprintf(key, sizeof(key), " %s=", name);
	p = strstr(last, key);
	return p ? atol(p + strlen(key)) : -1;
}

struct client {
	int fd;
	size_t have;
	char buf[1 << 16];
};

/* Connects; every read waits 20 s at most, so that a hang fails. */
static int client_open(struct client *c, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 20 };
	int one = 1;

	c->have = 0;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0)
		return -errno;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(c->fd);
		return -errno;
	}
	return 0;
}

static bool client_send(struct client *c, const char *req, size_t len)
{
	while (len) {
		ssize_t n = send(c->fd, req, len, MSG_NOSIGNAL);

		if (n <= 0)
			return false;
		req += n;
		len -= n;
	}
	return true;
}

/* Reads more; false at end of file, on an error or after 20 s. */
static bool client_fill(struct client *c)
{
	ssize_t n = recv(c->fd, c->buf + c->have, sizeof(c->buf) - c->have, 0);

	if (n <= 0)
		return false;
	c->have += n;
	return true;
}

struct response {
	int status;
	bool close;		/* Connection: close */
	bool has_length;
	char body[256];
};

/* The next response; false if none came whole. HEAD's have no body. */
static bool client_head_response(struct client *c, struct response *r, bool head)
{
	char *end, *p;
	size_t head_len, len;

	while (!(end = memmem(c->buf, c->have, "\r\n\r\n", 4)))
		if (!client_fill(c))
			return false;
	head_len = end + 4 - c->buf;
	*end = '\0';
	memset(r, 0, sizeof(*r));
	if (sscanf(c->buf, "HTTP/1.1 %d ", &r->status) != 1)
		return false;
	r->close = strcasestr(c->buf, "\r\nConnection: close") != NULL;
	p = strcasestr(c->buf, "\r\nContent-Length: ");
	r->has_length = p != NULL;
	len = p && !head ? strtoul(p + 18, NULL, 10) : 0;
	if (len >= sizeof(r->body))
		return false;
	while (c->have < head_len + len)
		if (!client_fill(c))
			return false;
	memcpy(r->body, c->buf + head_len, len);
	r->body[len] = '\0';
	c->have -= head_len + len;
	memmove(c->buf, c->buf + head_len + len, c->have);
	return true;
}

static bool client_response(struct client *c, struct response *r)
{
	return client_head_response(c, r, false);
}

/* Sends one request and reads its response. */
static bool client_ask(struct client *c, const char *req, struct response *r)
{
	return client_send(c, req, strlen(req)) &&
	       client_head_response(c, r, !strncmp(req, "HEAD ", 5));
}

/* True when the server closed the connection (and sent nothing more). */
static bool client_sees_eof(struct client *c)
{
	return !c->have && recv(c->fd, c->buf, sizeof(c->buf), 0) == 0;
}

FIXTURE(server) {
	struct server srv;
	char last[512];
};

FIXTURE_VARIANT(server) {
	enum fiber_preempt_mode mode;
};

FIXTURE_VARIANT_ADD(server, kmod) { .mode = FIBER_PREEMPT_KMOD };
FIXTURE_VARIANT_ADD(server, signal) { .mode = FIBER_PREEMPT_SIGNAL };

FIXTURE_SETUP(server)
{
	self->srv.pid = 0;
	signal(SIGPIPE, SIG_IGN);
}

FIXTURE_TEARDOWN(server)
{
	if (self->srv.pid)
		server_stop(&self->srv, self->last, sizeof(self->last));
}

/* Starts httpd in the variant's mode, or skips saying why it cannot run. */
#define START(workers, idle) do {					\
	if (server_start(&self->srv, variant->mode, workers, idle)) {	\
		/* kmod absent; no io_uring; qemu-user cannot exec it. */ \
		if (strstr(self->srv.first, "module loaded") ||		\
		    strstr(self->srv.first, "no io_uring") ||		\
		    strstr(self->srv.first, strerror(ENOEXEC)))		\
			SKIP(return, "%s", self->srv.first);		\
		ASSERT_TRUE(false) TH_LOG("httpd did not start: %s", self->srv.first); \
	}								\
	ASSERT_NE(NULL, strstr(self->srv.first,				\
			       fiber_preempt_mode_name(variant->mode)));	\
} while (0)

#define STOP() ASSERT_TRUE(server_stop(&self->srv, self->last, sizeof(self->last))) \
	TH_LOG("httpd did not exit 0 after SIGTERM; last line: %s", self->last)

TEST_F(server, routes)
{
	static const struct {
		const char *req;
		int status;
		const char *body;
		bool close;
	} cases[] = {
		{ "GET / HTTP/1.1\r\nHost: t\r\n\r\n", 200, "hello from libfiber\n" },
		{ "GET /spin?us=2000 HTTP/1.1\r\n\r\n", 200, "spun 2000 us\n" },
		{ "GET /spin?us=0 HTTP/1.1\r\n\r\n", 200, "spun 0 us\n" },
		{ "GET /spin?us=100001 HTTP/1.1\r\n\r\n", 400, "Bad Request\n" },
		{ "GET /spin?us=12x HTTP/1.1\r\n\r\n", 400, "Bad Request\n" },
		{ "GET /spin?us= HTTP/1.1\r\n\r\n", 400, "Bad Request\n" },
		{ "GET /spin HTTP/1.1\r\n\r\n", 400, "Bad Request\n" },
		{ "GET /spinner HTTP/1.1\r\n\r\n", 404, "Not Found\n" },
		{ "GET /index.html HTTP/1.1\r\n\r\n", 404, "Not Found\n" },
		{ "HEAD / HTTP/1.1\r\n\r\n", 200, "" },
		{ "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 200, "hello from libfiber\n", true },
		{ "GET / HTTP/1.0\r\n\r\n", 200, "hello from libfiber\n", true },
		{ "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, "Method Not Allowed\n", true },
		{ "GET / HTTP/2.0\r\n\r\n", 505, "HTTP Version Not Supported\n", true },
		{ "HELLO\r\n\r\n", 400, "Bad Request\n", true },
		{ "GET /  HTTP/1.1\r\n\r\n", 400, "Bad Request\n", true },
		{ "GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "Bad Request\n", true },
		{ "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "Bad Request\n", true },
		{ "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "Bad Request\n", true },
	};
	struct client *c = malloc(sizeof(*c));
	struct response r;
	unsigned int i;

	ASSERT_NE(NULL, c);
	START(2, "60");
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ASSERT_EQ(0, client_open(c, self->srv.port));
		ASSERT_TRUE(client_ask(c, cases[i].req, &r)) TH_LOG("no response to %s", cases[i].req);
		EXPECT_EQ(cases[i].status, r.status) TH_LOG("%s", cases[i].req);
		EXPECT_STREQ(cases[i].body, r.body) TH_LOG("%s", cases[i].req);
		EXPECT_TRUE(r.has_length);
		EXPECT_EQ(cases[i].close, r.close) TH_LOG("%s", cases[i].req);
		if (cases[i].close)
			EXPECT_TRUE(client_sees_eof(c)) TH_LOG("still open after %s", cases[i].req);
		close(c->fd);
	}
	STOP();
	EXPECT_EQ(i, count_of(self->last, "requests"));
	EXPECT_EQ(6, count_of(self->last, "200"));
	EXPECT_EQ(9, count_of(self->last, "400"));
	free(c);
}

/* Headers past 8 KiB: 431, and the connection closes. */
TEST_F(server, oversized_headers)
{
	struct client *c = malloc(sizeof(*c));
	char req[12000];
	struct response r;

	ASSERT_NE(NULL, c);
	START(1, "60");
	ASSERT_EQ(0, client_open(c, self->srv.port));
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %0*d\r\n\r\n", 10000, 0);
	ASSERT_TRUE(client_ask(c, req, &r));
	EXPECT_EQ(431, r.status);
	EXPECT_TRUE(r.close);
	EXPECT_TRUE(client_sees_eof(c));
	close(c->fd);
	/* Just under the limit is fine. */
	ASSERT_EQ(0, client_open(c, self->srv.port));
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %0*d\r\n\r\n", 8000, 0);
	ASSERT_TRUE(client_ask(c, req, &r));
	EXPECT_EQ(200, r.status);
	close(c->fd);
	STOP();
	EXPECT_EQ(1, count_of(self->last, "431"));
	free(c);
}

/*
 * One connection: requests one at a time, then 64 in one write, answered
 * in order (each /spin body names its own N).
 */
TEST_F(server, keep_alive_and_pipelining)
{
	struct client *c = malloc(sizeof(*c));
	char req[64 * 64], expect[64];
	struct response r;
	size_t len = 0;
	int i;

	ASSERT_NE(NULL, c);
	START(2, "60");
	ASSERT_EQ(0, client_open(c, self->srv.port));
	for (i = 0; i < 200; i++) {
		ASSERT_TRUE(client_ask(c, "GET / HTTP/1.1\r\n\r\n", &r));
		ASSERT_EQ(200, r.status);
	}
	for (i = 0; i < 64; i++)
		len += snprintf(req + len, sizeof(req) - len, i % 4 == 3 ?
				"GET /nope%d HTTP/1.1\r\n\r\n" : "GET /spin?us=%d HTTP/1.1\r\n\r\n", i);
	ASSERT_TRUE(client_send(c, req, len));
	for (i = 0; i < 64; i++) {
		ASSERT_TRUE(client_response(c, &r)) TH_LOG("response %d of 64 missing", i);
		if (i % 4 == 3) {
			EXPECT_EQ(404, r.status);
			continue;
		}
		snprintf(expect, sizeof(expect), "spun %d us\n", i);
		EXPECT_STREQ(expect, r.body);
	}
	/* A request split across writes is put back together. */
	ASSERT_TRUE(client_send(c, "GET /spin?u", 11));
	usleep(20000);
	ASSERT_TRUE(client_ask(c, "s=7 HTTP/1.1\r\n\r\n", &r));
	EXPECT_STREQ("spun 7 us\n", r.body);
	close(c->fd);
	STOP();
	EXPECT_EQ(1, count_of(self->last, "connections"));
	EXPECT_EQ(265, count_of(self->last, "requests"));
	free(c);
}

#define CONNS 1000

/* A thousand connections open at once, each asked once, all answered. */
TEST_F(server, thousand_connections)
{
	struct client *c = calloc(CONNS, sizeof(*c));
	struct rlimit nofile;
	struct response r;
	int i, answered = 0;

	ASSERT_NE(NULL, c);
	ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &nofile));
	if (nofile.rlim_max < CONNS + 64)
		SKIP(return, "RLIMIT_NOFILE hard limit %lu < %d", (unsigned long)nofile.rlim_max,
		     CONNS + 64);
	nofile.rlim_cur = nofile.rlim_max;
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &nofile));
	START(2, "60");
	for (i = 0; i < CONNS; i++)
		ASSERT_EQ(0, client_open(&c[i], self->srv.port)) TH_LOG("connection %d", i);
	for (i = 0; i < CONNS; i++)
		ASSERT_TRUE(client_send(&c[i], "GET / HTTP/1.1\r\n\r\n", 18));
	for (i = 0; i < CONNS; i++)
		answered += client_response(&c[i], &r) && r.status == 200;
	EXPECT_EQ(CONNS, answered);
	for (i = 0; i < CONNS; i++)
		close(c[i].fd);
	STOP();
	EXPECT_EQ(CONNS, count_of(self->last, "connections"));
	EXPECT_EQ(CONNS, count_of(self->last, "requests"));
	free(c);
}

/*
 * Clients that go away: mid-request, reset during a long request, and
 * one that says nothing (closed by the idle timeout). The server goes on
 * answering, and its counts say what happened.
 */
TEST_F(server, clients_that_leave)
{
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	struct client *c = malloc(sizeof(*c)), *silent = malloc(sizeof(*c));
	struct response r;
	int i;

	ASSERT_NE(NULL, c);
	ASSERT_NE(NULL, silent);
	START(1, "1");
	ASSERT_EQ(0, client_open(silent, self->srv.port));
	for (i = 0; i < 20; i++) {
		ASSERT_EQ(0, client_open(c, self->srv.port));
		ASSERT_TRUE(client_send(c, "GET / HT", 8));
		usleep(2000);
		close(c->fd);
	}
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(0, client_open(c, self->srv.port));
		ASSERT_TRUE(client_send(c, "GET /spin?us=20000 HTTP/1.1\r\n\r\n", 31));
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		close(c->fd);
	}
	ASSERT_EQ(0, client_open(c, self->srv.port));
	ASSERT_TRUE(client_ask(c, "GET / HTTP/1.1\r\n\r\n", &r));
	EXPECT_EQ(200, r.status);
	close(c->fd);
	/* The silent one is closed after its second of idleness. */
	EXPECT_TRUE(client_sees_eof(silent));
	close(silent->fd);
	STOP();
	EXPECT_EQ(20, count_of(self->last, "aborted"));
	EXPECT_EQ(1, count_of(self->last, "timed_out"));
	free(c);
	free(silent);
}

/*
 * One worker: a request computing for 100 ms without a call, then a
 * short one on another connection. Preempted, the long one lets the short
 * one through before it ends; cooperative, it would not.
 */
TEST_F(server, long_request_lets_short_ones_through)
{
	struct client *c = malloc(2 * sizeof(*c)), *lng = &c[0], *shrt = &c[1];
	struct response r;
	char peek;

	ASSERT_NE(NULL, c);
	START(1, "60");
	ASSERT_EQ(0, client_open(lng, self->srv.port));
	ASSERT_EQ(0, client_open(shrt, self->srv.port));
	ASSERT_TRUE(client_ask(shrt, "GET / HTTP/1.1\r\n\r\n", &r));
	ASSERT_TRUE(client_send(lng, "GET /spin?us=100000 HTTP/1.1\r\n\r\n", 33));
	usleep(10000);
	ASSERT_TRUE(client_ask(shrt, "GET / HTTP/1.1\r\n\r\n", &r));
	EXPECT_EQ(200, r.status);
	EXPECT_EQ(-1, recv(lng->fd, &peek, 1, MSG_DONTWAIT | MSG_PEEK))
		TH_LOG("the long request had finished before the short one was answered");
	ASSERT_TRUE(client_response(lng, &r));
	EXPECT_STREQ("spun 100000 us\n", r.body);
	close(lng->fd);
	close(shrt->fd);
	STOP();
	free(c);
}

/*
 * SIGTERM: idle connections are closed, a request being computed is
 * answered first, the server exits 0 and its counts add up.
 */
TEST_F(server, sigterm_shutdown)
{
	struct client *c = calloc(11, sizeof(*c));
	struct response r;
	int i;

	ASSERT_NE(NULL, c);
	START(2, "60");
	for (i = 0; i < 10; i++) {
		ASSERT_EQ(0, client_open(&c[i], self->srv.port));
		ASSERT_TRUE(client_ask(&c[i], "GET / HTTP/1.1\r\n\r\n", &r));
	}
	/* Its fiber is reading when the long request comes. */
	ASSERT_EQ(0, client_open(&c[10], self->srv.port));
	ASSERT_TRUE(client_ask(&c[10], "GET / HTTP/1.1\r\n\r\n", &r));
	ASSERT_TRUE(client_send(&c[10], "GET /spin?us=50000 HTTP/1.1\r\n\r\n", 31));
	usleep(10000);
	STOP();
	for (i = 0; i < 10; i++)
		EXPECT_TRUE(client_sees_eof(&c[i])) TH_LOG("connection %d left open", i);
	ASSERT_TRUE(client_response(&c[10], &r)) TH_LOG("the request in progress was dropped");
	EXPECT_STREQ("spun 50000 us\n", r.body);
	EXPECT_TRUE(client_sees_eof(&c[10]));
	EXPECT_EQ(11, count_of(self->last, "connections"));
	EXPECT_EQ(12, count_of(self->last, "requests"));
	EXPECT_NE(NULL, strstr(self->last, "stopped by SIGTERM"));
	for (i = 0; i < 11; i++)
		close(c[i].fd);
	free(c);
}

/* Runs a shell command; its output in out. -1 if it could not run. */
static int run(const char *cmd, char *out, size_t size)
{
	FILE *p = popen(cmd, "r");
	size_t len = 0, n;

	if (!p)
		return -1;
	while (len + 1 < size && (n = fread(out + len, 1, size - len - 1, p)) > 0)
		len += n;
	out[len] = '\0';
	return pclose(p);
}

/* The clients people point at a server: curl, and wrk for a second. */
TEST_F(server, curl_and_wrk)
{
	char cmd[256], out[4096];

	if (access("/usr/bin/curl", X_OK) || access("/usr/bin/wrk", X_OK))
		SKIP(return, "curl or wrk not installed (they are on the host, not in the VM)");
	START(2, "60");
	snprintf(cmd, sizeof(cmd), "curl --noproxy '*' -sS http://127.0.0.1:%d/spin?us=10 "
		 "http://127.0.0.1:%d/ 2>&1", self->srv.port, self->srv.port);
	ASSERT_EQ(0, run(cmd, out, sizeof(out))) TH_LOG("%s", out);
	EXPECT_STREQ("spun 10 us\nhello from libfiber\n", out);
	snprintf(cmd, sizeof(cmd), "wrk -t1 -c16 -d1s http://127.0.0.1:%d/ 2>&1", self->srv.port);
	ASSERT_EQ(0, run(cmd, out, sizeof(out))) TH_LOG("%s", out);
	EXPECT_NE(NULL, strstr(out, "Requests/sec")) TH_LOG("%s", out);
	EXPECT_EQ(NULL, strstr(out, "Non-2xx")) TH_LOG("%s", out);
	EXPECT_EQ(NULL, strstr(out, "Socket errors")) TH_LOG("%s", out);
	STOP();
	EXPECT_EQ(0, count_of(self->last, "aborted"));
}

TEST_HARNESS_MAIN
