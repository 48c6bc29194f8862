// SPDX-License-Identifier: GPL-2.0
/*
 * fiber_dump(), fiber_id() and fiber_set_name(): a dump lists every fiber
 * with its state and a symbolized backtrace, whether taken from a thread,
 * from a fiber, or from the FIBER_DUMP_SIGNAL handler; and dumps and
 * backtraces taken over and over while fibers are spawned, freed and
 * preempted on the workers do not crash or hang. The test is linked
 * without -rdynamic and its functions are static: their names come from
 * the program's own symbol table. One fiber waits inside a qsort()
 * callback: its frames go on through libc's.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "fiber_test.h"

#define DUMP_MAX	(1 << 20)
#define NOINLINE	__attribute__((noinline, noclone))
/* Keeps each call a call, not a jump: the caller has work after it. */
#define AFTER_CALL()	__asm__ volatile("" ::: "memory")

struct scene {
	fiber_mutex_t lock;		/* held by the test: the locker waits */
	int pipe[2];			/* the reader waits for a byte */
	fiber_t *sleeper;
	atomic_bool stop;
	atomic_int waiting;		/* fibers about to wait */
	atomic_int spinner_tid;
	atomic_ulong spins;
	int dump_fd;			/* the dumping fiber's output */
	int dump_ret;
};

/* Asleep but for a moment every 100 ms, so that the test can stop. */
static NOINLINE void dm_sleep(struct scene *s)
{
	atomic_fetch_add(&s->waiting, 1);
	while (!atomic_load(&s->stop))
		fiber_sleep(100000000);
	AFTER_CALL();
}

static NOINLINE void dm_join(struct scene *s)
{
	atomic_fetch_add(&s->waiting, 1);
	fiber_join(s->sleeper, NULL);
	AFTER_CALL();
}

static NOINLINE void dm_read(struct scene *s)
{
	char c;

	atomic_fetch_add(&s->waiting, 1);
	fiber_read(s->pipe[0], &c, 1);
	AFTER_CALL();
}

static struct scene *qsort_scene;

/* Waits for the lock inside libc's qsort(): its frames are walked through. */
static int lock_and_compare(const void *a, const void *b)
{
	fiber_mutex_lock(&qsort_scene->lock);
	fiber_mutex_unlock(&qsort_scene->lock);
	return *(const int *)a - *(const int *)b;
}

static NOINLINE void dm_lock(struct scene *s)
{
	int v[2] = { 2, 1 };

	qsort_scene = s;
	atomic_fetch_add(&s->waiting, 1);
	qsort(v, 2, sizeof(v[0]), lock_and_compare);
	AFTER_CALL();
}

static NOINLINE void dm_spin(struct scene *s)
{
	atomic_store(&s->spinner_tid, gettid());
	while (!atomic_load_explicit(&s->stop, memory_order_relaxed))
		atomic_fetch_add_explicit(&s->spins, 1, memory_order_relaxed);
}

static NOINLINE void dm_dump(struct scene *s)
{
	s->dump_ret = fiber_dump(s->dump_fd);
	AFTER_CALL();
}

static void *sleeper(void *arg) { dm_sleep(arg); return NULL; }
static void *joiner(void *arg) { dm_join(arg); return NULL; }
static void *reader(void *arg) { dm_read(arg); return NULL; }
static void *locker(void *arg) { dm_lock(arg); return NULL; }
static void *spinner(void *arg) { dm_spin(arg); return NULL; }
static void *dumper(void *arg) { dm_dump(arg); return NULL; }
static void *returns(void *arg) { return NULL; }

/* What fd holds, from its start, NUL-terminated (static: one at a time). */
static const char *contents(int fd)
{
	static char text[DUMP_MAX];
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);

	text[n > 0 ? n : 0] = 0;
	return text;
}

/* The lines a dump shows for fiber id: its own line and its frames. */
static const char *fiber_entry(const char *dump, uint64_t id, char *out, size_t size)
{
	char head[64];
	const char *p = dump, *end;
	size_t len;

	snprintf(head, sizeof(head), "fiber %llu", (unsigned long long)id);
	len = strlen(head);
	for (; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, head, len) && (p[len] == ' ' || p[len] == ':'))
			break;
	if (!p || !*p)
		return NULL;
	end = strchr(p, '\n');
	while (end && end[1] == '\t')
		end = strchr(end + 1, '\n');
	len = end ? (size_t)(end - p) : strlen(p);
	if (len >= size)
		len = size - 1;
	memcpy(out, p, len);
	out[len] = 0;
	return out;
}

/* How many entries of the dump are for fibers: each listed once. */
static int count_entries(const char *dump, uint64_t id)
{
	char head[64];
	const char *p = dump;
	int n = 0;

	snprintf(head, sizeof(head), "\nfiber %llu", (unsigned long long)id);
	while ((p = strstr(p, head))) {
		p += strlen(head);
		n += *p == ' ' || *p == ':';
	}
	return n;
}

static int memfd(void)
{
	return memfd_create("fiber-dump", MFD_CLOEXEC);
}

FIXTURE(dump) {
	struct scene s;
	fiber_t *sleeper, *joiner, *reader, *locker, *returned;
	fiber_t *spinners[3];
	int nr_spinners;
	bool ring;
};

FIXTURE_VARIANT(dump) { enum fiber_preempt_mode mode; };
FIXTURE_VARIANT_ADD(dump, kmod) { .mode = FIBER_PREEMPT_KMOD };
FIXTURE_VARIANT_ADD(dump, signal) { .mode = FIBER_PREEMPT_SIGNAL };
FIXTURE_VARIANT_ADD(dump, off) { .mode = FIBER_PREEMPT_OFF };

FIXTURE_SETUP(dump)
{
	memset(&self->s, 0, sizeof(self->s));
	fiber_mutex_init(&self->s.lock);
	ASSERT_EQ(0, pipe(self->s.pipe));
}

FIXTURE_TEARDOWN(dump)
{
	close(self->s.pipe[0]);
	close(self->s.pipe[1]);
}

/*
 * Starts the scheduler with fibers in each state, named after their
 * roles, and waits until they are there: three spinners on two workers,
 * so that one at least is preempted at any time; in mode off, one
 * spinner, which keeps one of three workers for good.
 */
static void set_scene(struct __test_metadata *_metadata, FIXTURE_DATA(dump) *self,
		      const FIXTURE_VARIANT(dump) *variant)
{
	bool off = variant->mode == FIBER_PREEMPT_OFF;
	struct fiber_config cfg = { .workers = off ? 3 : 2, .mode = variant->mode,
				    .slice_ns = 1000000 };
	struct fiber_worker_stats st;
	struct scene *s = &self->s;
	int i;

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_worker_stats(0, &st));
	self->ring = st.ring_entries;
	ASSERT_EQ(0, fiber_mutex_lock(&s->lock));
	ASSERT_EQ(0, fiber_spawn(&self->sleeper, sleeper, s));
	s->sleeper = self->sleeper;
	ASSERT_EQ(0, fiber_spawn(&self->joiner, joiner, s));
	ASSERT_EQ(0, fiber_spawn(&self->locker, locker, s));
	self->nr_spinners = off ? 1 : 3;
	for (i = 0; i < self->nr_spinners; i++) {
		ASSERT_EQ(0, fiber_spawn(&self->spinners[i], spinner, s));
		/* Longer than a name keeps: cut to FIBER_NAME_MAX - 1 bytes. */
		ASSERT_EQ(0, fiber_set_name(self->spinners[i], "spinner-with-a-long-name"));
	}
	ASSERT_EQ(0, fiber_spawn(&self->returned, returns, s));
	/* Without a ring, a fiber's read holds its worker. */
	self->reader = NULL;
	if (self->ring)
		ASSERT_EQ(0, fiber_spawn(&self->reader, reader, s));
	ASSERT_EQ(0, fiber_set_name(self->sleeper, "sleeper"));
	ASSERT_EQ(0, fiber_set_name(self->joiner, "joiner"));
	ASSERT_EQ(0, fiber_set_name(self->locker, "locker"));
	if (self->reader)
		ASSERT_EQ(0, fiber_set_name(self->reader, "reader"));
	while (atomic_load(&s->waiting) < 3 + (self->reader != NULL) ||
	       !atomic_load(&s->spinner_tid))
		usleep(1000);
	/* Until each has parked, and a spinner was preempted (not in mode off). */
	usleep(50000);
	if (!off) {
		FIBER_WAIT_FOR(FIBER_STAT_SUM(preemptions), 5000000000ULL);
		ASSERT_LT(0, FIBER_STAT_SUM(preemptions));
	}
}

/* The entry of the first spinner whose line has want, or NULL. */
static const char *spinner_entry(FIXTURE_DATA(dump) *self, const char *dump, const char *want,
				 char *e, size_t size)
{
	for (int i = 0; i < self->nr_spinners; i++)
		if (fiber_entry(dump, fiber_id(self->spinners[i]), e, size) && strstr(e, want))
			return e;
	return NULL;
}

static void end_scene(struct __test_metadata *_metadata, FIXTURE_DATA(dump) *self)
{
	struct scene *s = &self->s;

	atomic_store(&s->stop, true);
	fiber_mutex_unlock(&s->lock);
	if (self->reader)
		ASSERT_EQ(1, write(s->pipe[1], "x", 1));
	for (int i = 0; i < self->nr_spinners; i++)
		ASSERT_EQ(0, fiber_join(self->spinners[i], NULL));
	ASSERT_EQ(0, fiber_join(self->locker, NULL));
	ASSERT_EQ(0, fiber_join(self->returned, NULL));
	if (self->reader)
		ASSERT_EQ(0, fiber_join(self->reader, NULL));
	/* The joiner frees the sleeper. */
	ASSERT_EQ(0, fiber_join(self->joiner, NULL));
}

/* Asserts the entry of fiber f: its line has want, its frames fn (or ""). */
#define ASSERT_ENTRY(dump, f, want, fn) do {				\
	char __e[4096];							\
	ASSERT_EQ(1, count_entries(dump, fiber_id(f)));			\
	ASSERT_NE(NULL, fiber_entry(dump, fiber_id(f), __e, sizeof(__e)));	\
	EXPECT_NE(NULL, strstr(__e, want)) TH_LOG("want \"%s\" in:\n%s", want, __e); \
	EXPECT_NE(NULL, strstr(__e, fn)) TH_LOG("want %s in:\n%s", fn, __e); \
} while (0)

/* The entries every dump of the scene must have. */
static void check_scene(struct __test_metadata *_metadata, FIXTURE_DATA(dump) *self,
			const char *dump)
{
	char want[128];

	ASSERT_ENTRY(dump, self->sleeper, "\"sleeper\": blocked in sleep, ", " dm_sleep+0x");
	snprintf(want, sizeof(want), "\"joiner\": blocked in join of fiber %llu;",
		 (unsigned long long)fiber_id(self->sleeper));
	ASSERT_ENTRY(dump, self->joiner, want, " dm_join+0x");
	snprintf(want, sizeof(want), "\"locker\": blocked on fiber mutex %p;",
		 (void *)&self->s.lock);
	/* Below libc's frames, which name libc. */
	ASSERT_ENTRY(dump, self->locker, want, " dm_lock+0x");
	ASSERT_ENTRY(dump, self->locker, " lock_and_compare+0x", "libc.so");
	ASSERT_ENTRY(dump, self->returned, ": returned, not joined;", "");
	for (int i = 0; i < self->nr_spinners; i++)
		ASSERT_ENTRY(dump, self->spinners[i], "\"spinner-with-a-\": ", "");
	if (self->reader) {
		snprintf(want, sizeof(want), "\"reader\": blocked in read on fd %d;",
			 self->s.pipe[0]);
		ASSERT_ENTRY(dump, self->reader, want, " dm_read+0x");
	}
	/* Each frame names its object: the program's path. */
	EXPECT_NE(NULL, strstr(dump, "dm_sleep+0x")) TH_LOG("%s", dump);
	EXPECT_NE(NULL, strstr(dump, "/dump)\n")) TH_LOG("%s", dump);
	EXPECT_NE(NULL, strstr(dump, "\nworker 0 (tid ")) TH_LOG("%s", dump);
	EXPECT_NE(NULL, strstr(dump, "\nworker 1 (tid ")) TH_LOG("%s", dump);
}

TEST_F(dump, from_a_thread)
{
	int fd = memfd(), i;
	const char *text;
	char e[4096] = "";

	ASSERT_LE(0, fd);
	set_scene(_metadata, self, variant);
	if (_metadata->skip)
		return;
	ASSERT_EQ(0, fiber_dump(fd));
	text = contents(fd);
	check_scene(_metadata, self, text);
	/* Running: no frames, its stack is live. */
	ASSERT_NE(NULL, spinner_entry(self, text, ": running on worker ", e, sizeof(e)))
		TH_LOG("%s", text);
	EXPECT_EQ(NULL, strchr(e, '\n')) TH_LOG("%s", e);
	if (variant->mode != FIBER_PREEMPT_OFF) {
		/*
		 * The first frame: where it was stopped, in the spinning
		 * function. A spinner may run again between its state and
		 * its frames (no frames then): dumps until one has both.
		 */
		for (i = 0; i < 100; i++) {
			if (spinner_entry(self, text, ": preempted, runnable;", e, sizeof(e)) &&
			    strchr(e, '\n'))
				break;
			ASSERT_EQ(0, ftruncate(fd, 0));
			ASSERT_EQ(0, lseek(fd, 0, SEEK_SET));
			ASSERT_EQ(0, fiber_dump(fd));
			text = contents(fd);
		}
		ASSERT_NE(NULL, strchr(e, '\n')) TH_LOG("%s", text);
		EXPECT_EQ(0, strncmp(strchr(e, '\n'), "\n\t0x", 4)) TH_LOG("%s", e);
		EXPECT_NE(NULL, strstr(e, " dm_spin+0x")) TH_LOG("%s", e);
	}
	end_scene(_metadata, self);
	ASSERT_EQ(0, fiber_sched_stop());
	close(fd);
}

TEST_F(dump, from_a_fiber)
{
	struct scene *s = &self->s;
	const char *text;
	fiber_t *f;
	char e[4096];

	s->dump_fd = memfd();
	ASSERT_LE(0, s->dump_fd);
	set_scene(_metadata, self, variant);
	if (_metadata->skip)
		return;
	ASSERT_EQ(0, fiber_spawn(&f, dumper, s));
	ASSERT_EQ(0, fiber_join(f, NULL));
	ASSERT_EQ(0, s->dump_ret);
	text = contents(s->dump_fd);
	check_scene(_metadata, self, text);
	/* The caller, from the function that called fiber_dump() on. */
	ASSERT_NE(NULL, fiber_entry(text, fiber_id(f), e, sizeof(e)));
	EXPECT_NE(NULL, strstr(e, " (the caller);")) TH_LOG("%s", e);
	EXPECT_NE(NULL, strstr(e, " dm_dump+0x")) TH_LOG("%s", e);
	end_scene(_metadata, self);
	ASSERT_EQ(0, fiber_sched_stop());
	close(s->dump_fd);
}

/*
 * FIBER_DUMP_SIGNAL=USR1, sent to a spinner's worker: the handler dumps
 * to stderr, and shows the spinner where the signal stopped it.
 */
TEST_F(dump, on_the_signal)
{
	int fd = memfd(), saved_stderr = dup(STDERR_FILENO), tries, i;
	const char *last_worker = variant->mode == FIBER_PREEMPT_OFF ? "\nworker 2 " : "\nworker 1 ";
	const char *text = "";
	char e[4096] = "";

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, setenv("FIBER_DUMP_SIGNAL", "USR1", 1));
	set_scene(_metadata, self, variant);
	if (_metadata->skip)
		return;
	ASSERT_EQ(0, unsetenv("FIBER_DUMP_SIGNAL"));
	ASSERT_LE(0, dup2(fd, STDERR_FILENO));
	/*
	 * The worker runs a spinner but for its switches and upcalls: the
	 * signal may land in libfiber's code; then it is sent again.
	 */
	for (tries = 0; tries < 20; tries++) {
		ftruncate(fd, 0);
		lseek(fd, 0, SEEK_SET);
		tgkill(getpid(), atomic_load(&self->s.spinner_tid), SIGUSR1);
		/* Until the dump's last line, the last worker's. */
		for (i = 0; i < 5000 && !strstr(contents(fd), last_worker); i++)
			usleep(1000);
		text = contents(fd);
		if (spinner_entry(self, text, " (interrupted by the signal);", e, sizeof(e)) &&
		    strstr(e, " dm_spin+0x"))
			break;
	}
	dup2(saved_stderr, STDERR_FILENO);
	check_scene(_metadata, self, text);
	ASSERT_NE(NULL, spinner_entry(self, text, " (interrupted by the signal);", e, sizeof(e)))
		TH_LOG("%s", text);
	EXPECT_NE(NULL, strstr(e, " dm_spin+0x")) TH_LOG("%s", e);
	EXPECT_NE(NULL, strstr(e, " spinner+0x")) TH_LOG("%s", e);
	end_scene(_metadata, self);
	ASSERT_EQ(0, fiber_sched_stop());
	signal(SIGUSR1, SIG_DFL);
	close(fd);
	close(saved_stderr);
}

/* A name that is not a signal's stops the start, with a message. */
TEST(bad_dump_signal)
{
	struct fiber_config cfg = { .mode = FIBER_PREEMPT_OFF };

	ASSERT_EQ(0, setenv("FIBER_DUMP_SIGNAL", "NOSUCH", 1));
	EXPECT_EQ(-EINVAL, fiber_sched_start(&cfg));
	ASSERT_EQ(0, setenv("FIBER_DUMP_SIGNAL", "KILL", 1));
	EXPECT_EQ(-EINVAL, fiber_sched_start(&cfg));
	ASSERT_EQ(0, unsetenv("FIBER_DUMP_SIGNAL"));
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST(ids_and_names)
{
	struct fiber_config cfg = { .mode = FIBER_PREEMPT_OFF };
	fiber_t *a, *b;

	EXPECT_EQ(0, fiber_id(NULL));
	EXPECT_EQ(-EINVAL, fiber_set_name(NULL, "x"));
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_spawn(&a, returns, NULL));
	ASSERT_EQ(0, fiber_spawn(&b, returns, NULL));
	EXPECT_LT(0, fiber_id(a));
	EXPECT_EQ(fiber_id(a) + 1, fiber_id(b));
	ASSERT_EQ(0, fiber_join(a, NULL));
	/* b reuses a's stack and struct, not its id. */
	ASSERT_EQ(0, fiber_spawn(&a, returns, NULL));
	EXPECT_EQ(fiber_id(b) + 1, fiber_id(a));
	EXPECT_EQ(0, fiber_set_name(a, NULL));
	ASSERT_EQ(0, fiber_join(a, NULL));
	ASSERT_EQ(0, fiber_join(b, NULL));
	ASSERT_EQ(0, fiber_sched_stop());
}

/* ---- dumps while everything moves ------------------------------------------ */

/* Long enough for many preemptions under emulation too. */
#define CHURN_SECONDS	10

struct churn {
	atomic_bool stop;
	atomic_ulong spawned;
	bool yields;			/* mode off: spinners let the others run */
};

static void *short_lived(void *arg)
{
	fiber_yield();
	return NULL;
}

/* Spawns and joins or detaches fibers: the registry changes all the time. */
static void *churner(void *arg)
{
	struct churn *c = arg;
	fiber_t *f;

	while (!atomic_load(&c->stop)) {
		if (fiber_spawn(&f, short_lived, NULL))
			continue;
		atomic_fetch_add(&c->spawned, 1);
		if (atomic_load(&c->spawned) & 1)
			fiber_join(f, NULL);
		else
			fiber_detach(f);
	}
	return NULL;
}

static void *churn_spinner(void *arg)
{
	struct churn *c = arg;
	volatile unsigned long n = 0;

	while (!atomic_load_explicit(&c->stop, memory_order_relaxed))
		if (!(++n & 0xffff) && c->yields)
			fiber_yield();
	return NULL;
}

TEST_F(dump, while_fibers_come_and_go)
{
	struct fiber_config cfg = { .workers = 2, .mode = variant->mode, .slice_ns = 200000 };
	struct churn c = { .yields = variant->mode == FIBER_PREEMPT_OFF };
	struct fiber_stats st;
	fiber_t *fibers[6];
	void *pcs[64];
	unsigned long dumps = 0, backtraces = 0;
	uint64_t end;
	int fd = memfd(), i;

	ASSERT_LE(0, fd);
	FIBER_START(&cfg);
	for (i = 0; i < 6; i++)
		ASSERT_EQ(0, fiber_spawn(&fibers[i], i < 2 ? churner : churn_spinner, &c));
	/* Mode off has no preemptions to race with: a short run. */
	end = test_now_ns() + (c.yields ? 2 : CHURN_SECONDS) * 1000000000ULL;
	while (test_now_ns() < end) {
		ASSERT_EQ(0, ftruncate(fd, 0));
		ASSERT_EQ(0, lseek(fd, 0, SEEK_SET));
		ASSERT_EQ(0, fiber_dump(fd));
		/* Whole: ends with the last worker's line. */
		ASSERT_NE(NULL, strstr(contents(fd), "\nworker 1 (tid ")) TH_LOG("%s", contents(fd));
		dumps++;
		for (i = 2; i < 6; i++) {
			int n = fiber_backtrace(fibers[i], pcs, 64);

			ASSERT_TRUE(n >= 0 || n == -EBUSY) TH_LOG("%d", n);
			backtraces++;
		}
	}
	ASSERT_EQ(0, fiber_stats(fibers[2], &st));
	atomic_store(&c.stop, true);
	for (i = 0; i < 6; i++)
		ASSERT_EQ(0, fiber_join(fibers[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("%lu dumps and %lu backtraces beside %lu spawns and %llu preemptions",
	       dumps, backtraces, atomic_load(&c.spawned), (unsigned long long)st.preemptions);
	EXPECT_LT(100, atomic_load(&c.spawned));
	close(fd);
}

TEST_HARNESS_MAIN
