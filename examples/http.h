/* SPDX-License-Identifier: MIT */
/*
 * The HTTP/1.1 subset the example servers speak, apart from their I/O:
 * examples/httpd.c (a fiber per connection) and bench/uring_plain.c (one
 * io_uring event loop) parse and answer with these same functions, so
 * that comparing them compares only the way they run.
 *
 * Routes:
 *   GET /               a short fixed body
 *   GET /spin?us=N      N microseconds of CPU in a loop without calls,
 *                       then a short body; 0 <= N <= HTTP_SPIN_MAX_US
 *   anything else       404; HEAD works as GET without the body
 */
#ifndef EXAMPLES_HTTP_H
#define EXAMPLES_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Request line and headers; a longer head is answered 431. */
#define HTTP_MAX_HEAD		8192
/* Room one reply takes at most: callers flush before less is left. */
#define HTTP_MAX_REPLY		256
#define HTTP_SPIN_MAX_US	100000

struct http_reply {
	int status;		/* 200, 400, 404, 405, 431 or 505 */
	bool head;		/* HEAD: no body */
	bool close;		/* close the connection after this reply */
	bool spin;		/* a /spin request: */
	unsigned int spin_us;	/* CPU to spend before replying */
};

/*
 * Parse the request at the start of buf[0, len). Returns the bytes it
 * took, with *reply set, or 0 when the request is not complete yet. A
 * request the server cannot serve still gives a reply (400, 405, 431,
 * 505), one that closes the connection.
 */
size_t http_parse(const char *buf, size_t len, struct http_reply *reply);

/* Write the reply into out (HTTP_MAX_REPLY bytes at least); its length. */
size_t http_format(char *out, const struct http_reply *reply);

/* Time the spin loop; call once before http_spin(). */
void http_spin_calibrate(void);

/* Spend about us microseconds of CPU in this function's own loop. */
void http_spin(unsigned int us);

#endif /* EXAMPLES_HTTP_H */
