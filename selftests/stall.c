// SPDX-License-Identifier: GPL-2.0
/*
 * The stall report (FIBER_STALL_MS): a fiber that keeps its worker past
 * the limit without a preemption point is reported once, with the reason
 * and its backtrace; a fiber that spins in the program's own code, where
 * it is preempted, is not, even when nothing else waits for its worker.
 * The reports go to stderr, which the tests point at a memfd.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "fiber_test.h"

#define STALL_MS	50
/* Each stall lasts this long: several times the limit, under emulation too. */
#define SPIN_MS		300
#define NOINLINE	__attribute__((noinline, noclone))
#define AFTER_CALL()	__asm__ volatile("" ::: "memory")

/* libfiber_test_spin.so: code libfiber never preempts. */
uint64_t spin_in_library(uint64_t n);

static uint64_t library_spins;		/* spin_in_library()'s count for SPIN_MS */

/*
 * Spins in program code, where the fiber is preempted, for ms. It reads
 * the clock only now and then: a loop around clock_gettime() is in the
 * vDSO and libc most of the time, and a stall.
 */
static NOINLINE void st_spin_here(unsigned int ms)
{
	uint64_t end = test_now_ns() + ms * 1000000ULL;
	volatile unsigned long n = 0;

	while ((++n & 0xfffff) || test_now_ns() < end)
		;
}

static NOINLINE void st_spin_in_library(void)
{
	spin_in_library(library_spins);
	AFTER_CALL();
}

static NOINLINE void st_spin_preempt_off(void)
{
	fiber_preempt_disable();
	st_spin_here(SPIN_MS);
	fiber_preempt_enable();
	AFTER_CALL();
}

static void *in_library(void *arg) { st_spin_in_library(); return NULL; }
static void *preempt_off(void *arg) { st_spin_preempt_off(); return NULL; }
static void *preemptible(void *arg) { st_spin_here(SPIN_MS); return NULL; }

/* Times spin_in_library() from the test's thread: the fastest of three. */
static void calibrate(void)
{
	uint64_t start, ns, fastest = UINT64_MAX, n = 4000000;
	int i;

	for (i = 0; i < 3; i++) {
		start = test_now_ns();
		spin_in_library(n);
		ns = test_now_ns() - start + 1;
		if (ns < fastest)
			fastest = ns;
	}
	library_spins = n * SPIN_MS * 1000000ULL / fastest;
}

/* Points stderr at a new memfd; returns the saved stderr. */
static int capture_stderr(int *memfd)
{
	int saved = dup(STDERR_FILENO);

	*memfd = memfd_create("stall-report", MFD_CLOEXEC);
	dup2(*memfd, STDERR_FILENO);
	return saved;
}

static const char *restore_stderr(int saved, int memfd)
{
	static char text[1 << 16];
	ssize_t n;

	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(memfd, text, sizeof(text) - 1, 0);
	text[n > 0 ? n : 0] = 0;
	close(memfd);
	return text;
}

/* Reports about fiber f in text. */
static int reports_of(const char *text, fiber_t *f)
{
	char head[64];
	const char *p = text;
	int n = 0;

	snprintf(head, sizeof(head), "libfiber: stall: fiber %llu ",
		 (unsigned long long)fiber_id(f));
	while ((p = strstr(p, head))) {
		n++;
		p += strlen(head);
	}
	return n;
}

/* Runs fn in a fiber named name on one worker, FIBER_STALL_MS set; returns stderr. */
static const char *run_watched(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
			       void *(*fn)(void *), const char *name, fiber_t **f)
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = 1000000 };
	int memfd, saved;

	ASSERT_EQ(0, setenv("FIBER_STALL_MS", "50", 1)) { return NULL; }
	saved = capture_stderr(&memfd);
	{
		int ret = fiber_sched_start(&cfg);

		unsetenv("FIBER_STALL_MS");
		if (ret == -ENODEV) {
			restore_stderr(saved, memfd);
			SKIP(return NULL, "kmod mode: /dev/fiber_preempt absent (module not loaded)");
		}
		ASSERT_EQ(0, ret) { restore_stderr(saved, memfd); return NULL; }
	}
	ASSERT_EQ(0, fiber_spawn(f, fn, NULL)) { return NULL; }
	fiber_set_name(*f, name);
	ASSERT_EQ(0, fiber_join(*f, NULL)) { return NULL; }
	ASSERT_EQ(0, fiber_sched_stop()) { return NULL; }
	return restore_stderr(saved, memfd);
}

/* The report of fiber f in text, its first line holding why, its frames fns. */
#define ASSERT_REPORT(text, f, name, why, fn1, fn2) do {			\
	char __head[128];							\
	const char *__r;							\
	snprintf(__head, sizeof(__head),					\
		 "libfiber: stall: fiber %llu \"%s\" has kept worker 0 for ",	\
		 (unsigned long long)fiber_id(f), name);			\
	__r = strstr(text, __head);						\
	ASSERT_NE(NULL, __r) TH_LOG("no report of %s in:\n%s", name, text);	\
	EXPECT_EQ(1, reports_of(text, f)) TH_LOG("once per stall:\n%s", text);	\
	EXPECT_NE(NULL, strstr(__r, " ms without a preemption point: " why "\n")) \
		TH_LOG("%s", __r);						\
	EXPECT_NE(NULL, strstr(__r, fn1)) TH_LOG("%s", __r);			\
	EXPECT_NE(NULL, strstr(__r, fn2)) TH_LOG("%s", __r);			\
} while (0)

FIBER_MODE_FIXTURE(stall);

TEST_F(stall, in_a_library)
{
	const char *text;
	fiber_t *f;

	calibrate();
	text = run_watched(_metadata, variant->mode, in_library, "lib", &f);
	if (!text)
		return;
	/* Its frames from the library's on down. */
	ASSERT_REPORT(text, f, "lib",
		      "in code that is never preempted (a library, libfiber or the loader)",
		      " spin_in_library+0x", " st_spin_in_library+0x");
}

TEST_F(stall, preemption_disabled)
{
	const char *text;
	fiber_t *f;

	text = run_watched(_metadata, variant->mode, preempt_off, "off", &f);
	if (!text)
		return;
	ASSERT_REPORT(text, f, "off",
		      "preemption disabled (fiber_preempt_disable(), or a lock held)",
		      " st_spin_here+0x", " st_spin_preempt_off+0x");
}

/* Alone on its worker, it starts a new slice each slice: no stall. */
TEST_F(stall, not_for_a_preemptible_fiber)
{
	const char *text;
	fiber_t *f;

	text = run_watched(_metadata, variant->mode, preemptible, "spinner", &f);
	if (!text)
		return;
	EXPECT_EQ(0, reports_of(text, f)) TH_LOG("%s", text);
	EXPECT_EQ(NULL, strstr(text, "libfiber: stall:")) TH_LOG("%s", text);
}

/* Cooperative mode: any fiber that keeps its worker is a stall. */
TEST(off_mode)
{
	const char *text;
	fiber_t *f;

	text = run_watched(_metadata, FIBER_PREEMPT_OFF, preemptible, "spinner", &f);
	ASSERT_NE(NULL, text);
	ASSERT_REPORT(text, f, "spinner", "preemption is off", " st_spin_here+0x", " preemptible+0x");
}

TEST(bad_values)
{
	struct fiber_config cfg = { .mode = FIBER_PREEMPT_OFF };
	static const char *const bad[] = { "0", "-5", "abc", "10ms", "3600001" };
	unsigned int i;
	int memfd, saved;

	saved = capture_stderr(&memfd);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("FIBER_STALL_MS", bad[i], 1);
		EXPECT_EQ(-EINVAL, fiber_sched_start(&cfg)) TH_LOG("%s", bad[i]);
	}
	unsetenv("FIBER_STALL_MS");
	EXPECT_NE(NULL, strstr(restore_stderr(saved, memfd),
			       "libfiber: FIBER_STALL_MS=abc: not a number of milliseconds"));
	ASSERT_EQ(0, fiber_sched_start(&cfg));
	ASSERT_EQ(0, fiber_sched_stop());
}

TEST_HARNESS_MAIN
