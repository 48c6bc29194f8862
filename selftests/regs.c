// SPDX-License-Identifier: GPL-2.0
/* Every register a fiber holds survives thousands of asynchronous preemptions bit for bit. */
#include "kselftest_harness.h"
#include "fiber_test.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define NR_FIBERS	3
#define MAX_FIBERS	4
/*
 * Preemptions to see. The signal backend's CPU-time timer fires on the
 * scheduler tick, a preemption every second tick: 1000 take 8 s at HZ=250.
 */
#define TARGET(mode)	((mode) == FIBER_PREEMPT_SIGNAL ? 1000 : 2000)
#define TIME_LIMIT_NS	60000000000ULL
#define SPIN		200000

#if defined(__x86_64__)
#include "regs_x86_64.h"

struct regs_check {
	uint64_t gpr_in[RC_NR_GPRS];
	uint64_t flags_in;
	uint32_t mxcsr_in;
	uint16_t fcw_in;
	uint16_t pad0;
	uint64_t redzone_in[16];
	uint64_t gpr_out[RC_NR_GPRS];
	uint64_t flags_out;
	uint32_t mxcsr_out;
	uint16_t fcw_out;
	uint16_t pad1;
	uint64_t redzone_out[16];
	uint8_t vec_in[32 * 64];
	uint64_t k_in[8];
	uint8_t vec_out[32 * 64];
	uint64_t k_out[8];
} __attribute__((aligned(64)));

_Static_assert(__builtin_offsetof(struct regs_check, flags_in) == RC_FLAGS_IN, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, redzone_in) == RC_REDZONE_IN, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, gpr_out) == RC_GPR_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, fcw_out) == RC_FCW_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, redzone_out) == RC_REDZONE_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, vec_in) == RC_VEC_IN, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, k_in) == RC_K_IN, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, vec_out) == RC_VEC_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, k_out) == RC_K_OUT, "layout");
_Static_assert(sizeof(struct regs_check) == RC_SIZE, "layout");

/* CF PF AF ZF SF DF OF, and bit 1, which always reads as 1. */
#define TEST_FLAGS	0xcd7UL
#define FLAGS_MASK	0xcd7UL

static void fill(struct regs_check *rc, uint64_t *seed, int level)
{
	size_t vec_bytes = level == RC_AVX512 ? 32 * 64 : 16 * 64;
	int i;

	memset(rc, 0, sizeof(*rc));
	for (i = 0; i < RC_NR_GPRS; i++)
		rc->gpr_in[i] = test_rand(seed);
	for (i = 0; i < 16; i++)
		rc->redzone_in[i] = test_rand(seed);
	for (i = 0; i < (int)(vec_bytes / 8); i++) {
		uint64_t v = test_rand(seed);
		int lane = (i * 8) % 64;

		/* Only the lanes the level has: xmm 16 bytes, ymm 32, zmm 64. */
		if ((level == RC_SSE && lane >= 16) || (level == RC_AVX && lane >= 32))
			continue;
		memcpy(&rc->vec_in[i * 8], &v, 8);
	}
	if (level == RC_AVX512)
		for (i = 0; i < 8; i++)
			rc->k_in[i] = test_rand(seed);
	rc->flags_in = TEST_FLAGS;
	/* All exceptions masked; the rounding mode varies per fiber. */
	rc->mxcsr_in = 0x1f80 | (uint32_t)(test_rand(seed) & 3) << 13;
	rc->fcw_in = 0x037f | (uint16_t)(test_rand(seed) & 3) << 10;
}

static const char *compare(const struct regs_check *rc, int level)
{
	static __thread char msg[160];
	int i;

	for (i = 0; i < RC_NR_GPRS; i++)
		if (rc->gpr_in[i] != rc->gpr_out[i])
			return snprintf(msg, sizeof(msg), "GPR #%d: %#lx became %#lx", i,
					rc->gpr_in[i], rc->gpr_out[i]), msg;
	if ((rc->flags_out & FLAGS_MASK) != rc->flags_in)
		return snprintf(msg, sizeof(msg), "rflags %#lx became %#lx",
				rc->flags_in, rc->flags_out & FLAGS_MASK), msg;
	if (rc->mxcsr_in != rc->mxcsr_out)
		return snprintf(msg, sizeof(msg), "mxcsr %#x became %#x",
				rc->mxcsr_in, rc->mxcsr_out), msg;
	if (rc->fcw_in != rc->fcw_out)
		return snprintf(msg, sizeof(msg), "x87 cw %#x became %#x",
				rc->fcw_in, rc->fcw_out), msg;
	for (i = 0; i < 16; i++)
		if (rc->redzone_in[i] != rc->redzone_out[i])
			return snprintf(msg, sizeof(msg), "red zone word %d: %#lx became %#lx",
					i, rc->redzone_in[i], rc->redzone_out[i]), msg;
	for (i = 0; i < (level == RC_AVX512 ? 32 : 16); i++) {
		size_t lanes = level == RC_SSE ? 16 : level == RC_AVX ? 32 : 64;

		if (memcmp(&rc->vec_in[i * 64], &rc->vec_out[i * 64], lanes))
			return snprintf(msg, sizeof(msg), "vector register %d differs", i), msg;
	}
	if (level == RC_AVX512)
		for (i = 0; i < 8; i++)
			if (rc->k_in[i] != rc->k_out[i])
				return snprintf(msg, sizeof(msg), "k%d: %#lx became %#lx",
						i, rc->k_in[i], rc->k_out[i]), msg;
	return NULL;
}

static int best_level(void)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
		return RC_AVX512;
	if (__builtin_cpu_supports("avx"))
		return RC_AVX;
	return RC_SSE;
}

#elif defined(__aarch64__)
#include <sys/auxv.h>
#include <asm/hwcap.h>
#include "regs_aarch64.h"

struct regs_check {
	uint64_t gpr_in[31];		/* x0-x30; x9 counts the loop */
	uint64_t nzcv_in, fpsr_in, fpcr_in;
	uint8_t vec_in[32 * 16];
	uint64_t gpr_out[31];
	uint64_t nzcv_out, fpsr_out, fpcr_out;
	uint8_t vec_out[32 * 16];
	uint64_t pstate_fields;		/* DIT, SSBS, TCO: those to load and check */
	uint64_t pstate_in, pstate_out;
	uint64_t pad;
} __attribute__((aligned(16)));

_Static_assert(__builtin_offsetof(struct regs_check, nzcv_in) == RC_NZCV_IN, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, vec_in) == RC_VEC_IN, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, gpr_out) == RC_GPR_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, nzcv_out) == RC_NZCV_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, vec_out) == RC_VEC_OUT, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, pstate_fields) == RC_PSTATE_FIELDS, "layout");
_Static_assert(__builtin_offsetof(struct regs_check, pstate_out) == RC_PSTATE_OUT, "layout");
_Static_assert(sizeof(struct regs_check) == RC_SIZE, "layout");

/* x0-x30, NZCV, FPSR, FPCR, q0-q31, and DIT, SSBS, TCO where the CPU has them */
#define RC_BASE		0

/*
 * The PSTATE fields beside NZCV that EL0 sets with MSR: a fiber that set
 * one (constant-time code DIT, an allocator TCO) must find it as it was.
 */
static uint64_t pstate_fields(void)
{
	unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);

	return (hwcap & HWCAP_DIT ? 1ULL << RC_DIT_BIT : 0) |
	       (hwcap & HWCAP_SSBS ? 1ULL << RC_SSBS_BIT : 0) |
	       (hwcap2 & HWCAP2_MTE ? 1ULL << RC_TCO_BIT : 0);
}

static void fill(struct regs_check *rc, uint64_t *seed, int level)
{
	int i;

	memset(rc, 0, sizeof(*rc));
	for (i = 0; i < 31; i++)
		rc->gpr_in[i] = test_rand(seed);
	for (i = 0; i < 32 * 16; i += 8) {
		uint64_t v = test_rand(seed);

		memcpy(&rc->vec_in[i], &v, 8);
	}
	rc->nzcv_in = test_rand(seed) & 0xf0000000ULL;
	/* Cumulative exception flags and QC. */
	rc->fpsr_in = test_rand(seed) & 0x0800009fULL;
	/* Rounding mode, flush-to-zero, default NaN. */
	rc->fpcr_in = test_rand(seed) & 0x03c00000ULL;
	rc->pstate_fields = pstate_fields();
	rc->pstate_in = test_rand(seed) & rc->pstate_fields;
}

#define PSTATE_BIT(v, bit)	((int)(((v) >> (bit)) & 1))

static const char *compare(const struct regs_check *rc, int level)
{
	static __thread char msg[160];
	int i;

	for (i = 0; i < 31; i++)
		if (i != 9 && rc->gpr_in[i] != rc->gpr_out[i])
			return snprintf(msg, sizeof(msg), "x%d: %#lx became %#lx", i,
					rc->gpr_in[i], rc->gpr_out[i]), msg;
	if (rc->nzcv_in != rc->nzcv_out)
		return snprintf(msg, sizeof(msg), "nzcv %#lx became %#lx",
				rc->nzcv_in, rc->nzcv_out), msg;
	if (rc->fpsr_in != rc->fpsr_out)
		return snprintf(msg, sizeof(msg), "fpsr %#lx became %#lx",
				rc->fpsr_in, rc->fpsr_out), msg;
	if (rc->fpcr_in != rc->fpcr_out)
		return snprintf(msg, sizeof(msg), "fpcr %#lx became %#lx",
				rc->fpcr_in, rc->fpcr_out), msg;
	for (i = 0; i < 32; i++)
		if (memcmp(&rc->vec_in[i * 16], &rc->vec_out[i * 16], 16))
			return snprintf(msg, sizeof(msg), "q%d differs", i), msg;
	if (rc->pstate_in != rc->pstate_out)
		return snprintf(msg, sizeof(msg), "PSTATE DIT %d SSBS %d TCO %d became DIT %d SSBS %d TCO %d",
				PSTATE_BIT(rc->pstate_in, RC_DIT_BIT),
				PSTATE_BIT(rc->pstate_in, RC_SSBS_BIT),
				PSTATE_BIT(rc->pstate_in, RC_TCO_BIT),
				PSTATE_BIT(rc->pstate_out, RC_DIT_BIT),
				PSTATE_BIT(rc->pstate_out, RC_SSBS_BIT),
				PSTATE_BIT(rc->pstate_out, RC_TCO_BIT)), msg;
	return NULL;
}

static int best_level(void)
{
	return RC_BASE;
}
#else
#error "unsupported architecture"
#endif

void regs_spin(struct regs_check *rc, uint64_t iterations, int level);

struct spinner {
	uint64_t seed;
	int level;
	atomic_bool *stop;
	uint64_t rounds;
	char error[256];		/* first mismatch, empty if none */
};

static void *spinner_main(void *arg)
{
	struct spinner *s = arg;
	struct regs_check *rc = aligned_alloc(64, sizeof(*rc));
	const char *err;

	if (!rc) {
		snprintf(s->error, sizeof(s->error), "out of memory");
		return NULL;
	}
	while (!atomic_load(s->stop)) {
		fill(rc, &s->seed, s->level);
		regs_spin(rc, SPIN, s->level);
		s->rounds++;
		err = compare(rc, s->level);
		if (err) {
			snprintf(s->error, sizeof(s->error), "round %lu: %s", s->rounds, err);
			break;
		}
	}
	free(rc);
	return NULL;
}

FIBER_MODE_FIXTURE(regs);

static bool failed(const struct spinner *s, int nr)
{
	int i;

	for (i = 0; i < nr; i++)
		if (__atomic_load_n(&s[i].error[0], __ATOMIC_RELAXED))
			return true;
	return false;
}

#ifdef REGS_SOAK
/*
 * A line a minute, so that a soak stopped early still says how far it got
 * and whether its rate held.
 */
static void report_progress(struct __test_metadata *_metadata, uint64_t start)
{
	static uint64_t last_ns, last_preempted;
	uint64_t now = test_now_ns(), preempted;

	if (!last_ns)
		last_ns = start;
	if (now - last_ns < 60 * 1000000000ULL)
		return;
	preempted = FIBER_STAT_SUM(preemptions);
	TH_LOG("progress: %lu preemptions after %.0f s, %.0f/s over the last minute",
	       preempted, (now - start) / 1e9,
	       (preempted - last_preempted) / ((now - last_ns) / 1e9));
	last_ns = now;
	last_preempted = preempted;
}
#else
static void report_progress(struct __test_metadata *_metadata, uint64_t start)
{
}
#endif

/* nr spinners on workers workers, until target preemptions or limit_ns. */
struct spin_plan {
	int level;
	int nr;
	unsigned int workers;
	uint64_t slice_ns;
	uint64_t target;
	uint64_t limit_ns;
};

static void run_plan(struct __test_metadata *_metadata, enum fiber_preempt_mode mode,
		     const struct spin_plan *p)
{
	struct fiber_config cfg = {
		.workers = p->workers, .mode = mode, .slice_ns = p->slice_ns,
	};
	struct spinner s[MAX_FIBERS];
	fiber_t *f[MAX_FIBERS];
	atomic_bool stop = false;
	uint64_t start, deadline, preempted, took, fired, deferred[4];
	int i;

	FIBER_START(&cfg);
	for (i = 0; i < p->nr; i++) {
		s[i] = (struct spinner){ .seed = 0x9e3779b97f4a7c15ULL * (i + 1),
					 .level = p->level, .stop = &stop };
		ASSERT_EQ(0, fiber_spawn(&f[i], spinner_main, &s[i]));
	}
	start = test_now_ns();
	deadline = start + p->limit_ns;
	while (FIBER_STAT_SUM(preemptions) < p->target && test_now_ns() < deadline &&
	       !failed(s, p->nr)) {
		fiber_sleep(10000000);
		report_progress(_metadata, start);
	}
	preempted = FIBER_STAT_SUM(preemptions);
	took = test_now_ns() - start;
	fired = FIBER_STAT_SUM(fired);
	deferred[0] = FIBER_STAT_SUM(deferred_kernel);
	deferred[1] = FIBER_STAT_SUM(deferred_upcall);
	deferred[2] = FIBER_STAT_SUM(deferred_pc);
	deferred[3] = FIBER_STAT_SUM(deferred_stack);
	atomic_store(&stop, true);
	for (i = 0; i < p->nr; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());

	TH_LOG("level %d, %d fibers on %u workers: %lu preemptions in %.1f s (%.0f/s), fiber 0 ran %lu rounds",
	       p->level, p->nr, p->workers, preempted, took / 1e9, preempted / (took / 1e9),
	       s[0].rounds);
	TH_LOG("slices run out %lu; deferred: kernel %lu, upcall %lu, pc %lu, stack %lu",
	       fired, deferred[0], deferred[1], deferred[2], deferred[3]);
#ifdef __aarch64__
	TH_LOG("PSTATE fields checked beside NZCV:%s%s%s%s",
	       pstate_fields() & (1ULL << RC_DIT_BIT) ? " DIT" : "",
	       pstate_fields() & (1ULL << RC_SSBS_BIT) ? " SSBS" : "",
	       pstate_fields() & (1ULL << RC_TCO_BIT) ? " TCO" : "",
	       pstate_fields() ? "" : " none (the CPU has no DIT, SSBS nor MTE)");
#endif
	for (i = 0; i < p->nr; i++)
		EXPECT_STREQ("", s[i].error) TH_LOG("fiber %d", i);
	ASSERT_LE(p->target, preempted);
}

#ifdef REGS_SOAK
/*
 * make soak builds this file a second time, as regs_soak, with REGS_SOAK
 * set to the preemptions to see (10^7) and REGS_SOAK_WORKERS to the
 * workers: its one test is then this soak of the module, two spinners per
 * worker, 100 us slices. It ends at the count, or after a day; a register
 * that changed fails it at once.
 */
_Static_assert(2 * REGS_SOAK_WORKERS <= MAX_FIBERS, "two spinners per soak worker");

TEST_F_TIMEOUT(regs, soak, 24 * 3600)
{
	struct spin_plan p = {
		.level = best_level(), .slice_ns = 100000,
		.workers = REGS_SOAK_WORKERS,
		.target = REGS_SOAK, .limit_ns = 24 * 3600 * 1000000000ULL,
	};

	if (variant->mode != FIBER_PREEMPT_KMOD)
		SKIP(return, "the soak is of the module");
	p.nr = 2 * p.workers;
	run_plan(_metadata, variant->mode, &p);
}
#else
static void run_spinners(struct __test_metadata *_metadata,
			 const FIXTURE_VARIANT(regs) *variant, int level, int nr)
{
	struct spin_plan p = {
		.level = level, .nr = nr, .workers = 1, .slice_ns = 50000,
		.target = TARGET(variant->mode), .limit_ns = TIME_LIMIT_NS,
	};

	run_plan(_metadata, variant->mode, &p);
}

TEST_F_TIMEOUT(regs, gprs_flags_vectors, 120)
{
	run_spinners(_metadata, variant, RC_BASE, NR_FIBERS);
}

#if defined(__x86_64__)
TEST_F_TIMEOUT(regs, avx, 120)
{
	if (best_level() < RC_AVX)
		SKIP(return, "the CPU has no AVX");
	run_spinners(_metadata, variant, RC_AVX, NR_FIBERS);
}

TEST_F_TIMEOUT(regs, avx512, 120)
{
	if (best_level() < RC_AVX512)
		SKIP(return, "the CPU has no AVX-512 (F and BW)");
	run_spinners(_metadata, variant, RC_AVX512, NR_FIBERS);
}
#endif

#if defined(__x86_64__)
struct clean_out {
	uint8_t vec[32 * 64];
	uint64_t k[8];
	uint16_t x87env[14];
	uint8_t pad[CO_SIZE - CO_X87ENV - 28];
} __attribute__((aligned(64)));

_Static_assert(__builtin_offsetof(struct clean_out, k) == CO_K, "layout");
_Static_assert(__builtin_offsetof(struct clean_out, x87env) == CO_X87ENV, "layout");
_Static_assert(sizeof(struct clean_out) == CO_SIZE, "layout");

void regs_clean_spin(const void *init, uint64_t rfbm, uint64_t iterations,
		     struct clean_out *out, int level);
void regs_dirty_spin(uint64_t iterations, int level);

struct cleaner {
	int level;
	atomic_bool *stop;
	uint64_t rounds;
	char error[128];
};

static uint64_t xcr0(void)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return lo | (uint64_t)hi << 32;
}

/* What is not in its initial state, or NULL. */
static const char *unclean(const struct clean_out *o, int level)
{
	static __thread char msg[96];
	int i, j;

	for (i = 0; i < (level == RC_AVX512 ? 32 : 16); i++)
		for (j = i < 16 ? 16 : 0; j < (level == RC_AVX512 ? 64 : 32); j++)
			if (o->vec[i * 64 + j])
				return snprintf(msg, sizeof(msg), "vector register %d byte %d is %#x",
						i, j, o->vec[i * 64 + j]), msg;
	for (i = 0; level == RC_AVX512 && i < 8; i++)
		if (o->k[i])
			return snprintf(msg, sizeof(msg), "k%d is %#lx", i, o->k[i]), msg;
	if (o->x87env[0] != 0x37f || o->x87env[2] || o->x87env[4] != 0xffff)
		return snprintf(msg, sizeof(msg), "x87 control %#x status %#x tags %#x",
				o->x87env[0], o->x87env[2], o->x87env[4]), msg;
	return NULL;
}

static void *cleaner_main(void *arg)
{
	static uint8_t init[4096] __attribute__((aligned(64)));
	struct cleaner *c = arg;
	struct clean_out *o = aligned_alloc(64, sizeof(*o));
	/* x87, AVX and AVX-512: their initial state; SSE stays as it is. */
	uint64_t rfbm = xcr0() & (0x1 | 0xe4);
	const char *err;

	*(uint32_t *)&init[24] = 0x1f80;	/* MXCSR, loaded with AVX */
	while (o && !atomic_load(c->stop)) {
		regs_clean_spin(init, rfbm, SPIN, o, c->level);
		c->rounds++;
		err = unclean(o, c->level);
		if (err) {
			snprintf(c->error, sizeof(c->error), "round %lu: %s", c->rounds, err);
			break;
		}
	}
	free(o);
	return NULL;
}

static void *dirtier_main(void *arg)
{
	struct cleaner *c = arg;

	while (!atomic_load(c->stop))
		regs_dirty_spin(SPIN, c->level);
	return NULL;
}

/*
 * State a fiber does not use (x87, YMM and ZMM upper parts, ZMM16-31,
 * opmasks) is in its initial state, zero, when it is preempted, and must
 * be so again when it resumes, although the fibers that ran meanwhile
 * left those registers dirty: the upcall saves only what is in use.
 */
TEST_F_TIMEOUT(regs, unused_state_stays_initial, 120)
{
	struct fiber_config cfg = { .workers = 1, .mode = variant->mode, .slice_ns = 50000 };
	int level = best_level();
	atomic_bool stop = false;
	struct cleaner c[3];
	uint64_t deadline, preempted;
	fiber_t *f[3];
	int i;

	if (level < RC_AVX)
		SKIP(return, "the CPU has no AVX");
	FIBER_START(&cfg);
	for (i = 0; i < 3; i++) {
		c[i] = (struct cleaner){ .level = level, .stop = &stop };
		ASSERT_EQ(0, fiber_spawn(&f[i], i ? dirtier_main : cleaner_main, &c[i]));
	}
	deadline = test_now_ns() + TIME_LIMIT_NS;
	while (FIBER_STAT_SUM(preemptions) < TARGET(variant->mode) && test_now_ns() < deadline &&
	       !c[0].error[0])
		fiber_sleep(10000000);
	preempted = FIBER_STAT_SUM(preemptions);
	atomic_store(&stop, true);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, fiber_join(f[i], NULL));
	ASSERT_EQ(0, fiber_sched_stop());
	TH_LOG("level %d: %lu preemptions, %lu clean rounds", level, preempted, c[0].rounds);
	ASSERT_STREQ("", c[0].error);
	ASSERT_LE(TARGET(variant->mode), preempted);
}
#endif

/* A fiber alone is given a new slice in the upcall, without a switch. */
TEST_F_TIMEOUT(regs, alone, 120)
{
	run_spinners(_metadata, variant, best_level(), 1);
}
#endif /* REGS_SOAK */

TEST_HARNESS_MAIN
