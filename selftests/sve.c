// SPDX-License-Identifier: GPL-2.0
/*
 * arm64 SVE: a fiber whose SVE registers are live is preempted like any
 * other (the module no longer waits for a system call to discard them),
 * and every bit of Z0-Z31, P0-P15 and FFR survives the preemption while
 * another fiber overwrites them, at the shortest and the longest vector
 * length.
 */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/prctl.h>

uint64_t sve_spin(const void *in, void *out, const volatile int *stop, uint64_t iterations);
void sve_clobber(const void *in);
unsigned long sve_vl(void);

/* Bytes of a register image for vector length vl (see sve_aarch64.S). */
static size_t image_size(size_t vl)
{
	return 32 * vl + 17 * (vl / 8);
}

/*
 * Random Z and P values, and an FFR whose first ffr_bits bits are set:
 * WRFFR takes only such "monotonic" values.
 */
static uint8_t *make_image(size_t vl, uint64_t seed, size_t ffr_bits)
{
	size_t size = image_size(vl), i;
	uint8_t *img = calloc(1, size);
	uint8_t *ffr = img + 32 * vl + 16 * (vl / 8);

	for (i = 0; i < 32 * vl + 16 * (vl / 8); i++)
		img[i] = test_rand(&seed);
	for (i = 0; i < ffr_bits; i++)
		ffr[i / 8] |= 1 << (i % 8);
	return img;
}

/* Stops a spinner that is never preempted, so a failure is not a hang. */
struct watchdog {
	volatile int *stop;
	atomic_bool done;
	uint64_t limit_ns;
};

static void *watchdog_main(void *arg)
{
	struct watchdog *wd = arg;
	uint64_t deadline = test_now_ns() + wd->limit_ns;

	while (!atomic_load(&wd->done) && test_now_ns() < deadline)
		usleep(10000);
	*wd->stop = 1;
	return NULL;
}

struct regs_run {
	const uint8_t *in;
	uint8_t *out;
	const uint8_t *clobber;
	volatile int stop;
	fiber_t *checker;
	uint64_t target;
	unsigned long vl_seen;
	uint64_t left;
	uint64_t clobbers;
};

static void *checker_main(void *arg)
{
	struct regs_run *r = arg;

	r->vl_seen = sve_vl();
	r->left = sve_spin(r->in, r->out, &r->stop, UINT64_MAX);
	return NULL;
}

/* Runs whenever the checker is preempted: overwrites every SVE register. */
static void *clobber_main(void *arg)
{
	struct regs_run *r = arg;
	struct fiber_stats st;

	while (!r->stop) {
		sve_clobber(r->clobber);
		r->clobbers++;
		if (!fiber_stats(r->checker, &st) && st.preemptions >= r->target)
			r->stop = 1;
	}
	return NULL;
}

FIXTURE(sve) {};
FIXTURE_SETUP(sve)
{
	if (!(getauxval(AT_HWCAP) & HWCAP_SVE))
		SKIP(return, "the CPU has no SVE");
}
FIXTURE_TEARDOWN(sve) {}
FIXTURE_VARIANT(sve) {
	enum fiber_preempt_mode mode;
	uint64_t slice_ns;
	uint64_t target;	/* preemptions of the checker */
	int vl;			/* bytes */
};
FIXTURE_VARIANT_ADD(sve, kmod_vl16) {
	.mode = FIBER_PREEMPT_KMOD, .slice_ns = 50000, .target = 2000, .vl = 16
};
FIXTURE_VARIANT_ADD(sve, kmod_vl256) {
	.mode = FIBER_PREEMPT_KMOD, .slice_ns = 50000, .target = 2000, .vl = 256
};
FIXTURE_VARIANT_ADD(sve, signal_vl16) {
	.mode = FIBER_PREEMPT_SIGNAL, .slice_ns = 500000, .target = 200, .vl = 16
};
FIXTURE_VARIANT_ADD(sve, signal_vl256) {
	.mode = FIBER_PREEMPT_SIGNAL, .slice_ns = 500000, .target = 200, .vl = 256
};

/*
 * The checker's registers, loaded once, against a clobberer that loads
 * others each time it runs. Workers inherit the vector length the main
 * thread sets.
 */
TEST_F_TIMEOUT(sve, registers_survive, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode,
				    .slice_ns = variant->slice_ns };
	struct regs_run r = { .target = variant->target };
	struct watchdog wd = { .stop = &r.stop, .limit_ns = 60000000000ULL };
	size_t vl = variant->vl, size = image_size(vl), i;
	struct fiber_stats st;
	fiber_t *clobberer;
	pthread_t wd_thread;
	int ret;

	ret = prctl(PR_SVE_SET_VL, vl);
	if (ret < 0 || (size_t)(ret & PR_SVE_VL_LEN_MASK) != vl)
		SKIP(return, "vector length %zu not supported (prctl: %d)", vl, ret);
	r.in = make_image(vl, 0x5eed0000 + vl, vl - 3);
	r.clobber = make_image(vl, 0xc10b0000 + vl, 5);
	r.out = calloc(1, size);
	ASSERT_EQ(0, pthread_create(&wd_thread, NULL, watchdog_main, &wd));

	FIBER_START(&cfg);
	ASSERT_EQ(0, fiber_spawn(&r.checker, checker_main, &r));
	ASSERT_EQ(0, fiber_spawn(&clobberer, clobber_main, &r));
	ASSERT_EQ(0, fiber_join(clobberer, NULL));
	ASSERT_EQ(0, fiber_stats(r.checker, &st));
	ASSERT_EQ(0, fiber_join(r.checker, NULL));
	TH_LOG("VL %zu: %lu preemptions of the checker, %lu clobbers, %lu deferred_vector",
	       vl, st.preemptions, r.clobbers, FIBER_STAT_SUM(deferred_vector));
	ASSERT_EQ(0, fiber_sched_stop());
	atomic_store(&wd.done, true);
	pthread_join(wd_thread, NULL);

	ASSERT_EQ(vl, r.vl_seen);
	ASSERT_LE(variant->target, st.preemptions);
	for (i = 0; i < size; i++)
		if (r.in[i] != r.out[i])
			break;
	ASSERT_EQ(size, i) TH_LOG("first wrong byte %zu of %zu: %s", i, size,
				  i < 32 * vl ? "a Z register" :
				  i < 32 * vl + 16 * (vl / 8) ? "a P register" : "FFR");
}

#define NR_SPINNERS	4

struct spinner {
	atomic_bool *stop;
	bool use_sve;
	volatile uint64_t count;
} __attribute__((aligned(128)));

/* A call-free loop, after an SVE instruction when use_sve is set. */
static void *spinner_main(void *arg)
{
	struct spinner *s = arg;

	if (s->use_sve)
		sve_vl();
	while (!atomic_load_explicit(s->stop, memory_order_relaxed))
		s->count++;
	return NULL;
}

struct liveness {
	double delivered_ratio;		/* preemptions / fired */
	double share_ratio;		/* min/max of the spinners' counts */
	uint64_t preemptions, fired, deferred_vector;
};

static void run_spinners(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
			 uint64_t slice_ns, bool use_sve, struct liveness *out)
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = slice_ns };
	struct spinner s[NR_SPINNERS];
	fiber_t *f[NR_SPINNERS];
	atomic_bool stop = false;
	uint64_t min = UINT64_MAX, max = 0;
	int i;

	ASSERT_EQ(0, fiber_sched_start(&cfg));
	for (i = 0; i < NR_SPINNERS; i++) {
		memset(&s[i], 0, sizeof(s[i]));
		s[i].stop = &stop;
		s[i].use_sve = use_sve;
		ASSERT_EQ(0, fiber_spawn(&f[i], spinner_main, &s[i]));
	}
	fiber_sleep(500000000);
	atomic_store(&stop, true);
	for (i = 0; i < NR_SPINNERS; i++) {
		ASSERT_EQ(0, fiber_join(f[i], NULL));
		min = s[i].count < min ? s[i].count : min;
		max = s[i].count > max ? s[i].count : max;
	}
	out->preemptions = FIBER_STAT_SUM(preemptions);
	out->fired = FIBER_STAT_SUM(fired);
	out->deferred_vector = FIBER_STAT_SUM(deferred_vector);
	ASSERT_EQ(0, fiber_sched_stop());
	out->delivered_ratio = out->fired ? (double)out->preemptions / out->fired : 0;
	out->share_ratio = max ? (double)min / max : 0;
	TH_LOG("%s: %lu fired, %lu preemptions (%.2f), %lu deferred_vector, min/max %.3f",
	       use_sve ? "SVE live" : "no SVE  ", out->fired, out->preemptions,
	       out->delivered_ratio, out->deferred_vector, out->share_ratio);
}

/*
 * Spinners that ran one SVE instruction are preempted as often as those
 * that did not, in the same run, and share the worker as evenly.
 */
TEST_F_TIMEOUT(sve, live_state_is_preempted, 60)
{
	struct fiber_config probe = { .mode = variant->mode };
	/*
	 * Slices of 200 us at least: a delivery starts the next slice, and
	 * under TCG an arm64 upcall (its rt_sigreturn included) takes a good
	 * part of 50 us, where most firings then found the thread still in it.
	 */
	uint64_t slice_ns = variant->slice_ns < 200000 ? 200000 : variant->slice_ns;
	struct liveness plain, sve;

	if (variant->vl != 16)
		SKIP(return, "the vector length does not matter here: run once per mode");
	FIBER_START(&probe);
	ASSERT_EQ(0, fiber_sched_stop());
	run_spinners(_metadata, variant->mode, slice_ns, false, &plain);
	run_spinners(_metadata, variant->mode, slice_ns, true, &sve);
	ASSERT_LT(0, plain.preemptions);
	ASSERT_EQ(0, sve.deferred_vector);
	ASSERT_LT(0.5 * plain.delivered_ratio, sve.delivered_ratio);
	ASSERT_LT(0.5, sve.share_ratio);
}

TEST_HARNESS_MAIN
