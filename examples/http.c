// SPDX-License-Identifier: MIT
/*
 * HTTP/1.1 requests in, replies out, for the example servers (http.h).
 *
 * Only what the routes need: a request line, headers (Connection matters,
 * a body is refused), no chunked bodies. Each request is parsed from the
 * start of the connection's buffer and never copied.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	case 505: return "HTTP Version Not Supported";
	}
	return "Internal Server Error";
}

/* RFC 9110's tchar: what a method or a header name is made of. */
static bool is_tchar(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Whether the comma-separated list value[0, len) holds token. */
static bool has_token(const char *value, size_t len, const char *token)
{
	size_t tlen = strlen(token), i = 0;

	while (i < len) {
		size_t start, end;

		while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
			i++;
		start = i;
		while (i < len && value[i] != ',')
			i++;
		end = i;
		while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end - start == tlen && !strncasecmp(value + start, token, tlen))
			return true;
	}
	return false;
}

/* A refusal: the connection closes after it. */
static void refuse(struct http_reply *reply, int status)
{
	reply->status = status;
	reply->close = true;
	reply->spin = false;
	reply->spin_us = 0;
}

/* The route of a well-formed GET or HEAD. */
static void route(const char *target, size_t len, struct http_reply *reply)
{
	static const char spin[] = "/spin?us=";
	unsigned long us = 0;
	size_t i;

	if (len == 1 && target[0] == '/') {
		reply->status = 200;
		return;
	}
	if (len < sizeof(spin) - 1 || memcmp(target, spin, sizeof(spin) - 1)) {
		reply->status = strncmp(target, "/spin", 5) || (len > 5 && target[5] != '?') ? 404 : 400;
		return;
	}
	i = sizeof(spin) - 1;
	if (i == len) {
		reply->status = 400;
		return;
	}
	for (; i < len; i++) {
		if (target[i] < '0' || target[i] > '9' || us > HTTP_SPIN_MAX_US) {
			reply->status = 400;
			return;
		}
		us = us * 10 + (target[i] - '0');
	}
	if (us > HTTP_SPIN_MAX_US) {
		reply->status = 400;
		return;
	}
	reply->status = 200;
	reply->spin = true;
	reply->spin_us = us;
}

size_t http_parse(const char *buf, size_t len, struct http_reply *reply)
{
	const char *p = buf, *end, *line_end, *method, *target, *version;
	size_t method_len, target_len, skipped = 0;
	bool http10, conn_close = false, conn_keep = false;

	memset(reply, 0, sizeof(*reply));
	/* Empty lines before a request are to be ignored (RFC 9112 2.2). */
	while (len - skipped >= 2 && p[0] == '\r' && p[1] == '\n') {
		p += 2;
		skipped += 2;
	}
	end = memmem(p, len - skipped, "\r\n\r\n", 4);
	if (!end) {
		if (len - skipped < HTTP_MAX_HEAD)
			return 0;
		refuse(reply, 431);
		return len;
	}
	end += 4;
	if (end - p > HTTP_MAX_HEAD) {
		refuse(reply, 431);
		return end - buf;
	}

	/* The request line: method SP target SP HTTP/1.x CRLF. */
	line_end = memmem(p, end - p, "\r\n", 2);
	method = p;
	while (p < line_end && is_tchar(*p))
		p++;
	method_len = p - method;
	if (!method_len || p == line_end || *p++ != ' ')
		goto bad;
	target = p;
	while (p < line_end && *p != ' ' && (unsigned char)*p > ' ' && *p != 0x7f)
		p++;
	target_len = p - target;
	if (!target_len || p == line_end || *p++ != ' ')
		goto bad;
	version = p;
	if (line_end - version != 8 || memcmp(version, "HTTP/", 5) || version[6] != '.' ||
	    version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
		goto bad;
	if (version[5] != '1') {
		refuse(reply, 505);
		return end - buf;
	}
	http10 = version[7] == '0';

	/* Header fields: name ":" OWS value OWS CRLF, up to the empty line. */
	for (p = line_end + 2; p < end - 2; p = line_end + 2) {
		const char *name = p, *value;
		size_t name_len, value_len;

		line_end = memmem(p, end - p, "\r\n", 2);
		while (p < line_end && is_tchar(*p))
			p++;
		name_len = p - name;
		if (!name_len || p == line_end || *p++ != ':')
			goto bad;	/* obsolete line folding included */
		while (p < line_end && (*p == ' ' || *p == '\t'))
			p++;
		value = p;
		value_len = line_end - value;
		if (memchr(value, '\0', value_len))
			goto bad;
		if (name_len == 10 && !strncasecmp(name, "connection", 10)) {
			conn_close |= has_token(value, value_len, "close");
			conn_keep |= has_token(value, value_len, "keep-alive");
		} else if (name_len == 17 && !strncasecmp(name, "transfer-encoding", 17)) {
			goto bad;	/* no request here has a body */
		} else if (name_len == 14 && !strncasecmp(name, "content-length", 14)) {
			while (value_len && (value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
				value_len--;
			if (value_len != 1 || value[0] != '0')
				goto bad;
		}
	}

	reply->close = conn_close || (http10 && !conn_keep);
	if (method_len == 4 && !memcmp(method, "HEAD", 4))
		reply->head = true;
	else if (method_len != 3 || memcmp(method, "GET", 3)) {
		refuse(reply, 405);
		return end - buf;
	}
	route(target, target_len, reply);
	return end - buf;
bad:
	refuse(reply, 400);
	return end - buf;
}

size_t http_format(char *out, const struct http_reply *reply)
{
	char body[64];
	int body_len, len;

	if (reply->status == 200 && reply->spin)
		body_len = snprintf(body, sizeof(body), "spun %u us\n", reply->spin_us);
	else if (reply->status == 200)
		body_len = snprintf(body, sizeof(body), "hello from libfiber\n");
	else
		body_len = snprintf(body, sizeof(body), "%s\n", reason(reply->status));
	len = snprintf(out, HTTP_MAX_REPLY,
		       "HTTP/1.1 %d %s\r\n"
		       "Server: libfiber-httpd\r\n"
		       "Content-Type: text/plain\r\n"
		       "Content-Length: %d\r\n"
		       "%s%s"
		       "\r\n%s",
		       reply->status, reason(reply->status), body_len,
		       reply->status == 405 ? "Allow: GET, HEAD\r\n" : "",
		       reply->close ? "Connection: close\r\n" : "",
		       reply->head ? "" : body);
	return len;
}

/* Loop iterations per millisecond, from http_spin_calibrate(). */
static uint64_t spin_per_ms;

/*
 * The loop is the program's own code and makes no call, so a preemption
 * may stop it at any instruction: it stands for any long computation.
 */
static void spin_loop(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		__asm__ volatile("" : "+r"(i));
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void http_spin_calibrate(void)
{
	uint64_t n = 1 << 16, best = 0;
	int trial;

	/* Grow the run to 5 ms, then keep the fastest of five such runs. */
	for (;;) {
		uint64_t t = now_ns();

		spin_loop(n);
		if (now_ns() - t >= 5000000)
			break;
		n *= 2;
	}
	for (trial = 0; trial < 5; trial++) {
		uint64_t t = now_ns(), rate;

		spin_loop(n);
		rate = n * 1000000 / (now_ns() - t + 1);
		best = rate > best ? rate : best;
	}
	spin_per_ms = best ? best : 1;
}

void http_spin(unsigned int us)
{
	spin_loop(spin_per_ms * us / 1000);
}
