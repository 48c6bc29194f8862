// SPDX-License-Identifier: GPL-2.0
/*
 * The module's trace events name every expired slice, delivered upcall and
 * deferred preemption of a worker (its tid, the interrupted PC, the slice,
 * why it was deferred), one event for each count the worker's stats show.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#define SLICE_NS	1000000ULL	/* 1 ms */
#define RUN_NS		300000000ULL
#define SECTION_NS	3000000ULL	/* one preempt-off section: 3 slices */

#define TRACEFS		"/sys/kernel/tracing"
#define TRACEFS_OLD	"/sys/kernel/debug/tracing"

/*
 * Each fiber's code goes to a section of its own, whose bounds
 * (__start_, __stop_) tell an event's PC apart.
 */
#define IN_SECTION(name)	__attribute__((noinline, section(#name)))
extern const char __start_tp_spin[], __stop_tp_spin[];
extern const char __start_tp_off[], __stop_tp_off[];

struct run {
	atomic_bool stop;
	atomic_int tid;			/* the worker's, seen from a fiber */
};

/* Spins without calls: a preemption finds it inside tp_spin. */
IN_SECTION(tp_spin) static void *spin_main(void *arg)
{
	struct run *r = arg;

	atomic_store(&r->tid, gettid());
	while (!atomic_load_explicit(&r->stop, memory_order_relaxed))
		;
	return NULL;
}

/* Spins for several slices at a time with preemption disabled. */
IN_SECTION(tp_off) static void *off_main(void *arg)
{
	struct run *r = arg;
	volatile unsigned int i;
	uint64_t end;

	while (!atomic_load(&r->stop)) {
		fiber_preempt_disable();
		end = test_now_ns() + SECTION_NS;
		while (test_now_ns() < end)
			for (i = 0; i < 10000; i++)
				;
		fiber_preempt_enable();
	}
	return NULL;
}

/* The deferral reasons the module prints, and the stats that count them. */
static const struct {
	const char *name;
	size_t stat;		/* offset in struct fiber_worker_stats */
} reasons[] = {
	{ "kernel", offsetof(struct fiber_worker_stats, deferred_kernel) },
	{ "in_upcall", offsetof(struct fiber_worker_stats, deferred_upcall) },
	{ "signal", offsetof(struct fiber_worker_stats, deferred_signal) },
	{ "preempt_off", offsetof(struct fiber_worker_stats, deferred_off) },
	{ "pc", offsetof(struct fiber_worker_stats, deferred_pc) },
	{ "vector", offsetof(struct fiber_worker_stats, deferred_vector) },
	{ "rseq", offsetof(struct fiber_worker_stats, deferred_rseq) },
};
#define NR_REASONS	(sizeof(reasons) / sizeof(reasons[0]))

static uint64_t reason_stat(const struct fiber_worker_stats *st, unsigned int i)
{
	return *(const uint64_t *)((const char *)st + reasons[i].stat);
}

/* What the trace says about one worker. */
struct trace_counts {
	uint64_t expired;
	uint64_t delivered;
	uint64_t delivered_in_spin;	/* at a PC inside spin_main */
	uint64_t deferred[NR_REASONS];
	uint64_t off;			/* deferred: preempt_off */
	uint64_t off_in_section;	/* ... at a PC inside off_main */
	uint64_t other_slice;		/* events whose slice is not SLICE_NS */
	uint64_t unparsed;		/* fiber_preempt lines not understood */
	uint64_t in_buffer, written;	/* the trace's entries: fewer if it overran */
};

static bool pc_in(uintptr_t pc, const char *start, const char *stop)
{
	return pc >= (uintptr_t)start && pc < (uintptr_t)stop;
}

static void count_event(struct trace_counts *c, const char *line, pid_t tid)
{
	char event[32], reason[32] = "";
	uint64_t slice_ns;
	unsigned long pc;
	unsigned int i;
	int n, event_tid;

	n = sscanf(line, "fiber_preempt_%31[a-z_]: tid=%d pc=%lx slice_ns=%" SCNu64 " reason=%31s",
		   event, &event_tid, &pc, &slice_ns, reason);
	if (n < 4) {
		c->unparsed++;
		return;
	}
	if (event_tid != tid)
		return;
	if (slice_ns != SLICE_NS)
		c->other_slice++;
	if (!strcmp(event, "slice_expired") && n == 4) {
		c->expired++;
	} else if (!strcmp(event, "delivered") && n == 4) {
		c->delivered++;
		c->delivered_in_spin += pc_in(pc, __start_tp_spin, __stop_tp_spin);
	} else if (!strcmp(event, "deferred") && n == 5) {
		for (i = 0; i < NR_REASONS && strcmp(reason, reasons[i].name); i++)
			;
		if (i == NR_REASONS) {
			c->unparsed++;
			return;
		}
		c->deferred[i]++;
		if (!strcmp(reason, "preempt_off")) {
			c->off++;
			c->off_in_section += pc_in(pc, __start_tp_off, __stop_tp_off);
		}
	} else {
		c->unparsed++;
	}
}

/* Reads dir/trace: its header's entry counts and tid's events. */
static int read_trace(const char *dir, pid_t tid, struct trace_counts *c)
{
	char path[128], *line = NULL, *event;
	size_t size = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/trace", dir);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (getline(&line, &size, f) > 0) {
		if (line[0] == '#')
			sscanf(line, "# entries-in-buffer/entries-written: %" SCNu64 "/%" SCNu64,
			       &c->in_buffer, &c->written);
		else if ((event = strstr(line, ": fiber_preempt_")))
			count_event(c, event + 2, tid);
	}
	free(line);
	fclose(f);
	return 0;
}

/* Writes s to dir/name: 0 or -errno. */
static int tracefs_write(const char *dir, const char *name, const char *s)
{
	char path[128];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static bool tracefs_has(const char *dir, const char *name, int mode)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return !access(path, mode);
}

FIXTURE(trace) {
	const char *dir;	/* where tracefs is mounted */
	bool mounted;		/* by this test */
	bool enabled;		/* events/fiber_preempt enabled by this test */
	char tracing_on[2];	/* its value before the test */
};

FIXTURE_SETUP(trace) {}

FIXTURE_TEARDOWN(trace)
{
	if (self->enabled)
		EXPECT_EQ(0, tracefs_write(self->dir, "events/fiber_preempt/enable", "0"));
	if (self->tracing_on[0])
		EXPECT_EQ(0, tracefs_write(self->dir, "tracing_on", self->tracing_on));
	if (self->mounted)
		EXPECT_EQ(0, umount(self->dir));
}

/* Finds tracefs, mounting it if need be: 0 or -errno of the mount. */
static int tracefs_find(FIXTURE_DATA(trace) *self)
{
	int ret;

	self->dir = TRACEFS;
	if (tracefs_has(TRACEFS, "trace", F_OK))
		return 0;
	if (!mount("tracefs", TRACEFS, "tracefs", 0, NULL)) {
		self->mounted = true;
		return 0;
	}
	ret = -errno;
	self->dir = TRACEFS_OLD;
	return tracefs_has(TRACEFS_OLD, "trace", F_OK) ? 0 : ret;
}

static int tracefs_read_char(const char *dir, const char *name, char *c)
{
	char path[128];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (read(fd, c, 1) != 1)
		ret = -EIO;
	close(fd);
	return ret;
}

/*
 * Two spinners and a fiber that disables preemption for 3 slices at a time
 * share a worker preempted by the module, with the events on.
 */
TEST_F(trace, events_of_a_kmod_run)
{
	struct fiber_config cfg = { .workers = 1, .mode = FIBER_PREEMPT_KMOD,
				    .slice_ns = SLICE_NS };
	struct trace_counts c = { 0 };
	struct fiber_worker_stats before, st;
	struct run r = { 0 };
	fiber_t *spin[2], *off;
	unsigned int i;
	int ret;

	if (access("/dev/fiber_preempt", F_OK))
		SKIP(return, "/dev/fiber_preempt absent (module not loaded)");
	ret = tracefs_find(self);
	if (ret)
		SKIP(return, "no usable tracefs at %s or %s (mount: %s)",
		     TRACEFS, TRACEFS_OLD, strerror(-ret));
	if (!tracefs_has(self->dir, "events", F_OK))
		SKIP(return, "%s has no events/: a kernel without event tracing", self->dir);
	if (!tracefs_has(self->dir, "tracing_on", W_OK))
		SKIP(return, "%s/tracing_on is not writable: %s", self->dir, strerror(errno));
	/* The module is loaded and the kernel traces events: it must have its own. */
	ASSERT_TRUE(tracefs_has(self->dir, "events/fiber_preempt/enable", F_OK))
		TH_LOG("%s/events has no fiber_preempt/", self->dir);

	ASSERT_EQ(0, tracefs_read_char(self->dir, "tracing_on", self->tracing_on));
	ASSERT_EQ(0, tracefs_write(self->dir, "events/fiber_preempt/enable", "1"));
	self->enabled = true;
	ASSERT_EQ(0, tracefs_write(self->dir, "trace", ""));
	ASSERT_EQ(0, tracefs_write(self->dir, "tracing_on", "1"));

	FIBER_START(&cfg);
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, fiber_spawn(&spin[i], spin_main, &r));
	ASSERT_EQ(0, fiber_spawn(&off, off_main, &r));
	fiber_sleep(RUN_NS);
	atomic_store(&r.stop, true);
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, fiber_join(spin[i], NULL));
	ASSERT_EQ(0, fiber_join(off, NULL));
	/*
	 * The worker has nothing left to run, but may still be on its way to
	 * its idle wait, where a slice can end (in libfiber's code: deferred
	 * pc): until its counts stay put for 20 ms.
	 */
	do {
		ASSERT_EQ(0, fiber_worker_stats(0, &before));
		usleep(20000);
		ASSERT_EQ(0, fiber_worker_stats(0, &st));
	} while (memcmp(&before, &st, sizeof(st)));
	ASSERT_EQ(0, tracefs_write(self->dir, "tracing_on", "0"));
	ASSERT_EQ(0, fiber_sched_stop());

	ASSERT_EQ(0, read_trace(self->dir, atomic_load(&r.tid), &c));
	TH_LOG("tid %d: %" PRIu64 " expired, %" PRIu64 " delivered (%" PRIu64
	       " in spin_main), %" PRIu64 " deferred preempt_off (%" PRIu64
	       " in off_main); trace entries %" PRIu64 "/%" PRIu64,
	       atomic_load(&r.tid), c.expired, c.delivered, c.delivered_in_spin,
	       c.off, c.off_in_section, c.in_buffer, c.written);
	for (i = 0; i < NR_REASONS; i++)
		TH_LOG("deferred %s: %" PRIu64 " in the trace, %" PRIu64 " in the stats",
		       reasons[i].name, c.deferred[i], reason_stat(&st, i));
	TH_LOG("stats: fired %" PRIu64 ", delivered %" PRIu64,
	       st.fired, st.preemptions + st.deferred_stack);
	ASSERT_EQ(0, c.unparsed);
	ASSERT_EQ(c.written, c.in_buffer) TH_LOG("the trace buffer overran");
	ASSERT_EQ(0, c.other_slice);

	ASSERT_LT(0, c.expired);
	ASSERT_LT(0, c.delivered_in_spin);
	ASSERT_LT(0, c.off);
	ASSERT_LT(0, c.off_in_section);

	/* One event per count: the trace saw the whole run. */
	ASSERT_EQ(st.fired, c.expired);
	ASSERT_EQ(st.preemptions + st.deferred_stack, c.delivered);
	for (i = 0; i < NR_REASONS; i++) {
		const char *reason = reasons[i].name;

		EXPECT_EQ(reason_stat(&st, i), c.deferred[i]) TH_LOG("reason %s", reason);
	}
}

TEST_HARNESS_MAIN
