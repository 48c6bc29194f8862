// SPDX-License-Identifier: MIT
/*
 * What asynchronous preemption costs a CPU-bound fiber.
 *
 * Two fibers on one worker each spin a fixed number of iterations. With
 * preemption on they take turns every slice; what one preemption costs
 * (timer, delivery, trampoline, switch to the other fiber, return) is
 * measured two ways:
 *  - cost: the spinners read the CPU's counter at every iteration, and
 *    the gaps between reads are the time they lost (see cost());
 *  - slices, sve: the worker thread's CPU time (CLOCK_THREAD_CPUTIME_ID,
 *    which includes the kernel's share) from the first start to the last
 *    end, over the cooperative run's (one runs to its end, then the
 *    other), divided by the preemptions.
 *
 * The signal backend's monitor thread sends its SIGURG at the slice
 * rate, as the module's timer fires: the figures compare like with like.
 *
 *   preempt cost      kmod vs signal cost per preemption, and their ratio;
 *                     each against its interrupt alone (the same run with
 *                     preemption disabled: every firing declined)
 *   preempt slices    throughput loss of kmod preemption by slice length
 *   preempt sve       (arm64) kmod cost with live SVE state, by vector
 *                     length, against the same run without
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fiber.h"

#define RUNS 5

struct result {
	double cpu_ns;
	uint64_t lost;			/* counts in gaps of the spinners' reads */
	double preemptions;
	double fired;			/* slices that ran out: timer firings or signals */
};

#define NR_FIBERS 2

struct spin_args {
	unsigned long iterations;	/* per fiber */
	double start_ns;		/* worker CPU time when the first began */
	double end_ns;			/* ... when the last ended */
	uint64_t last;			/* the last counter read, by either fiber */
	uint64_t lost;			/* sum of the gaps between reads */
	int running;
};

static double clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double thread_cpu_ns(void)
{
	return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

/*
 * The CPU's own counter, read inline: a clock read through the vDSO would
 * keep the spinners in code that is never preempted most of the time.
 */
static inline uint64_t counter(void)
{
#ifdef __x86_64__
	uint32_t lo, hi;

	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo | (uint64_t)hi << 32;
#else
	uint64_t c;

	asm volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(c) : : "memory");
	return c;
#endif
}

/*
 * Non-zero: the spinners read the counter at every iteration, and a gap
 * between two reads (by either fiber) longer than this many counts is
 * time they lost: to an interrupt, a delivery, a switch.
 */
static uint64_t spin_gap;

/* The other fiber may run between any two iterations: volatile accesses. */
static void spin_timed(struct spin_args *a)
{
	volatile uint64_t *last = &a->last, *lost = &a->lost;
	unsigned long i;
	uint64_t t;

	for (i = 0; i < a->iterations; i++) {
		t = counter();
		if (*last && t - *last > spin_gap)
			*lost += t - *last;
		*last = t;
	}
}

#ifdef __aarch64__
/* Whether the spinners make their SVE state live first. */
static bool spin_sve;
#endif
/*
 * Whether the spinners disable preemption: the timer (or the monitor's
 * signal) still fires at every slice's end and every retry after it, but
 * nothing is delivered: the interrupt alone.
 */
static bool spin_preempt_off;

/* One worker: the fibers take turns, so plain fields are enough. */
static void *spin(void *arg)
{
	struct spin_args *a = arg;
	volatile unsigned long i;

#ifdef __aarch64__
	if (spin_sve) {
		unsigned long vl;

		/* Any SVE instruction: the kernel then keeps Z, P and FFR live. */
		asm volatile(".arch_extension sve\n\trdvl %0, #1" : "=r"(vl));
	}
#endif
	if (spin_preempt_off)
		fiber_preempt_disable();
	if (!a->running++)
		a->start_ns = thread_cpu_ns();
	if (spin_gap)
		spin_timed(a);
	else
		for (i = 0; i < a->iterations; i++)
			;
	a->end_ns = thread_cpu_ns();
	if (spin_preempt_off)
		fiber_preempt_enable();
	return NULL;
}

/* One run; false when the mode is not available here. */
static bool run(enum fiber_preempt_mode mode, uint64_t slice_ns,
		unsigned long iterations, struct result *r)
{
	struct fiber_config cfg = { .workers = 1, .mode = mode, .slice_ns = slice_ns };
	struct spin_args a = { .iterations = iterations };
	struct fiber_worker_stats st;
	fiber_t *f[NR_FIBERS];
	int ret, i;

	ret = fiber_sched_start(&cfg);
	if (ret == -ENODEV)
		return false;
	for (i = 0; i < NR_FIBERS && !ret; i++)
		ret = fiber_spawn(&f[i], spin, &a);
	if (ret) {
		fprintf(stderr, "start %s: %s\n", fiber_preempt_mode_name(mode), strerror(-ret));
		exit(1);
	}
	for (i = 0; i < NR_FIBERS; i++)
		fiber_join(f[i], NULL);
	fiber_worker_stats(0, &st);
	fiber_sched_stop();
	r->cpu_ns = a.end_ns - a.start_ns;
	r->lost = a.lost;
	r->preemptions = st.preemptions;
	r->fired = st.fired;
	return true;
}

static int cmp_result(const void *a, const void *b)
{
	double x = ((const struct result *)a)->cpu_ns, y = ((const struct result *)b)->cpu_ns;

	return x < y ? -1 : x > y;
}

/* The median of RUNS runs, by CPU time (sorts them). */
static struct result median(struct result r[RUNS])
{
	qsort(r, RUNS, sizeof(r[0]), cmp_result);
	return r[RUNS / 2];
}

/* Iterations per fiber that take about target_ns of CPU in all. */
static unsigned long calibrate(double target_ns)
{
	struct result r;
	unsigned long n = 1000000;

	for (;;) {
		run(FIBER_PREEMPT_OFF, 0, n, &r);
		if (r.cpu_ns > target_ns / 8)
			return (unsigned long)(n * target_ns / r.cpu_ns);
		n *= 4;
	}
}

/*
 * The runs "preempt cost" compares. Interrupt only: the same spinners with
 * preemption disabled, so the timer fires (or the monitor signals) and
 * nothing is delivered.
 */
enum cost_run {
	COST_OFF,
	COST_SIGNAL,
	COST_SIGNAL_IRQ,
	COST_KMOD,
	COST_KMOD_IRQ,
	NR_COST_RUNS,
};

/*
 * Not shorter: under TCG a timer interrupt takes 30-40 us of the guest's
 * time, and slices of 20 us left the spinners almost no CPU between them.
 */
#define COST_SLICE_NS	100000

static bool cost_run(enum cost_run c, unsigned long n, struct result *r)
{
	static const enum fiber_preempt_mode modes[NR_COST_RUNS] = {
		FIBER_PREEMPT_OFF, FIBER_PREEMPT_SIGNAL, FIBER_PREEMPT_SIGNAL,
		FIBER_PREEMPT_KMOD, FIBER_PREEMPT_KMOD,
	};
	bool ok;

	spin_preempt_off = c == COST_SIGNAL_IRQ || c == COST_KMOD_IRQ;
	ok = run(modes[c], c == COST_OFF ? 0 : COST_SLICE_NS, n, r);
	spin_preempt_off = false;
	return ok;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

#define COST_ROUNDS 7

/* The median of a round's figures (sorts them). */
static double median_of(double v[COST_ROUNDS])
{
	qsort(v, COST_ROUNDS, sizeof(v[0]), cmp_double);
	return v[COST_ROUNDS / 2];
}

/*
 * What a preemption (or a firing alone) costs the fibers, measured inside
 * each run: the spinners read the clock at every iteration, and the time
 * between two reads that a gap took (a read-to-read time over 20 times the
 * usual one) is time they lost. The lost time of the round's cooperative
 * run, for the same work, is taken off; what remains, over the events of
 * the run, is one event's cost, and the figure is the median over the
 * rounds. Unlike the worker's CPU time, this does not depend on how fast
 * the spinners' own loop runs, which under TCG varies by 20% and more from
 * one run to the next.
 */
static int cost(void)
{
	static const char *const names[NR_COST_RUNS] = {
		NULL, "signal", "signal declined", "kmod", "kmod interrupt only",
	};
	double per[NR_COST_RUNS][COST_ROUNDS], sorted[COST_ROUNDS];
	double m[NR_COST_RUNS], events[NR_COST_RUNS] = { 0 };
	bool have_kmod = true;
	double t0, ns_per_count;
	struct result off, r;
	unsigned long n;
	uint64_t c0;
	int c, i;

	/* The usual read-to-read time, from a cooperative run of the timed loop. */
	spin_gap = UINT64_MAX;
	n = calibrate(1000e6);
	t0 = clock_ns(CLOCK_MONOTONIC);
	c0 = counter();
	run(FIBER_PREEMPT_OFF, 0, n, &off);
	ns_per_count = (clock_ns(CLOCK_MONOTONIC) - t0) / (counter() - c0);
	spin_gap = 20 * off.cpu_ns / ns_per_count / (NR_FIBERS * n) + 1;
	for (i = 0; i < COST_ROUNDS; i++) {
		cost_run(COST_OFF, n, &off);
		for (c = COST_SIGNAL; c < NR_COST_RUNS; c++) {
			per[c][i] = 0;
			if (c >= COST_KMOD && !have_kmod)
				continue;
			if (!cost_run(c, n, &r)) {
				have_kmod = false;
				continue;
			}
			/* Delivered runs per preemption, interrupt-only runs per firing. */
			r.preemptions = c == COST_SIGNAL || c == COST_KMOD ? r.preemptions : r.fired;
			if (r.preemptions)
				per[c][i] = ((double)r.lost - off.lost) * ns_per_count / r.preemptions;
			events[c] += r.preemptions / COST_ROUNDS;
		}
	}
	for (c = COST_SIGNAL; c < NR_COST_RUNS; c++) {
		memcpy(sorted, per[c], sizeof(sorted));
		m[c] = median_of(sorted);
	}
	printf("cost: signal %.2f us per preemption (%.0f per run), signal declined %.2f us per "
	       "signal (%.0f per run)", m[COST_SIGNAL] / 1e3, events[COST_SIGNAL],
	       m[COST_SIGNAL_IRQ] / 1e3, events[COST_SIGNAL_IRQ]);
	if (!have_kmod) {
		printf("; kmod not available (module not loaded)\n");
		return 0;
	}
	printf("; kmod %.2f us per preemption (%.0f per run), kmod interrupt only %.2f us per "
	       "firing (%.0f per run)\n", m[COST_KMOD] / 1e3, events[COST_KMOD],
	       m[COST_KMOD_IRQ] / 1e3, events[COST_KMOD_IRQ]);
	for (c = COST_SIGNAL; c < NR_COST_RUNS; c++) {
		printf("cost: %s, us per event by round:", names[c]);
		for (i = 0; i < COST_ROUNDS; i++)
			printf(" %.1f", per[c][i] / 1e3);
		printf("\n");
	}
	printf("preemption cost: signal/kmod = %.1f (kmod %.2f us, signal %.2f us per preemption; "
	       "time the spinners lost per preemption, median of %d rounds, slice %d us)\n",
	       m[COST_SIGNAL] / m[COST_KMOD], m[COST_KMOD] / 1e3, m[COST_SIGNAL] / 1e3,
	       COST_ROUNDS, COST_SLICE_NS / 1000);
	printf("preempt: mode=kmod delivered_vs_interrupt_only=%.2f signal_vs_kmod=%.2f\n",
	       m[COST_KMOD] / m[COST_KMOD_IRQ], m[COST_SIGNAL] / m[COST_KMOD]);
	printf("preempt: mode=signal delivered_vs_interrupt_only=%.2f\n",
	       m[COST_SIGNAL] / m[COST_SIGNAL_IRQ]);
	printf("preempt: method: two spinners on one worker read the CPU's counter at every "
	       "iteration; the gaps between reads over 20x the usual read-to-read time (%.0f ns) "
	       "are the time they lost; less the same round's cooperative run, over the "
	       "preemptions (delivered) or the firings (interrupt only: the same spinners with "
	       "preemption disabled, so the timer fires or the monitor signals and the module or "
	       "the handler declines); median of %d rounds\n", spin_gap * ns_per_count, COST_ROUNDS);
	printf("preempt goal (a kmod preemption at most 1.5x an interrupt-only firing, signal "
	       "at least 3x kmod): %s, %s\n",
	       m[COST_KMOD] <= 1.5 * m[COST_KMOD_IRQ] ? "met" : "NOT met",
	       m[COST_SIGNAL] >= 3 * m[COST_KMOD] ? "met" : "NOT met");
	return 0;
}

#define NR_SLICES 7

static int slices(void)
{
	static const unsigned int slice_us[NR_SLICES] = { 10, 20, 50, 100, 200, 500, 1000 };
	unsigned long n = calibrate(300e6);
	struct result off[RUNS], r[NR_SLICES][RUNS], base;
	unsigned int i, s, best = 0;

	/*
	 * Interleaved: each round runs the cooperative baseline and then every
	 * slice, so that a slow phase of the machine hits all of them alike.
	 */
	for (i = 0; i < RUNS; i++) {
		run(FIBER_PREEMPT_OFF, 0, n, &off[i]);
		for (s = 0; s < NR_SLICES; s++) {
			if (!run(FIBER_PREEMPT_KMOD, slice_us[s] * 1000ULL, n, &r[s][i])) {
				printf("slices: kmod not available (module not loaded)\n");
				return 0;
			}
		}
	}
	base = median(off);
	for (s = 0; s < NR_SLICES; s++) {
		struct result m = median(r[s]);
		double loss = 100.0 * (m.cpu_ns - base.cpu_ns) / m.cpu_ns;

		printf("slice %4u us: %6.0f preemptions, throughput loss %5.1f%%\n",
		       slice_us[s], m.preemptions, loss);
		if (!best && loss < 5.0)
			best = slice_us[s];
	}
	if (best)
		printf("smallest slice under 5%% loss: %u us (kmod; loss = extra worker CPU time "
		       "of two CPU-bound fibers over a cooperative run, medians of %d interleaved "
		       "runs)\n", best, RUNS);
	else
		printf("smallest slice under 5%% loss: none up to 1000 us\n");
	return 0;
}

#ifdef __aarch64__
#define NR_VLS 3

/* Extra CPU time over the cooperative run per event (preemption or firing). */
static double per_event(const struct result *r, const struct result *off, double events)
{
	return events ? (r->cpu_ns - off->cpu_ns) / events : 0;
}

/* Sets the SVE vector length; false when the CPU does not offer it. */
static bool set_vl(int vl)
{
	int ret = prctl(PR_SVE_SET_VL, vl);

	return ret >= 0 && (ret & PR_SVE_VL_LEN_MASK) == vl;
}

static int sve(void)
{
	static const int vls[NR_VLS] = { 16, 64, 256 };
	unsigned long n = calibrate(1000e6);
	struct result off[RUNS], kmod[RUNS], off_sve[NR_VLS][RUNS], kmod_sve[NR_VLS][RUNS];
	struct result base, plain;
	double plain_cost, sve_cost;
	bool have_vl[NR_VLS];
	unsigned int i, v;
	int vl;

	if (!(getauxval(AT_HWCAP) & HWCAP_SVE)) {
		printf("sve: the CPU has no SVE\n");
		return 0;
	}
	vl = prctl(PR_SVE_GET_VL) & PR_SVE_VL_LEN_MASK;
	for (v = 0; v < NR_VLS; v++)
		have_vl[v] = set_vl(vls[v]);
	set_vl(vl);
	/* Interleaved, as in cost(): each round runs every kind once. */
	for (i = 0; i < RUNS; i++) {
		run(FIBER_PREEMPT_OFF, 0, n, &off[i]);
		if (!run(FIBER_PREEMPT_KMOD, 100000, n, &kmod[i])) {
			printf("sve: kmod not available (module not loaded)\n");
			return 0;
		}
		for (v = 0; v < NR_VLS; v++) {
			if (!have_vl[v])
				continue;
			set_vl(vls[v]);
			spin_sve = true;
			run(FIBER_PREEMPT_OFF, 0, n, &off_sve[v][i]);
			run(FIBER_PREEMPT_KMOD, 100000, n, &kmod_sve[v][i]);
			spin_sve = false;
			set_vl(vl);
		}
	}
	base = median(off);
	plain = median(kmod);
	plain_cost = per_event(&plain, &base, plain.preemptions);
	for (v = 0; v < NR_VLS; v++) {
		struct result b, k;

		if (!have_vl[v])
			continue;
		b = median(off_sve[v]);
		k = median(kmod_sve[v]);
		sve_cost = per_event(&k, &b, k.preemptions);
		printf("sve: VL %3d bytes: kmod %.2f us per preemption with live SVE state, "
		       "%.2f us without: ratio %.2f (%.0f and %.0f preemptions; extra thread CPU "
		       "time over a cooperative run / preemptions, median of %d interleaved runs, "
		       "slice 100 us)\n",
		       vls[v], sve_cost / 1e3, plain_cost / 1e3, sve_cost / plain_cost,
		       k.preemptions, plain.preemptions, RUNS);
	}
	return 0;
}
#endif

int main(int argc, char **argv)
{
#ifdef __aarch64__
	if (argc == 2 && !strcmp(argv[1], "sve"))
		return sve();
#endif
	if (argc == 2 && !strcmp(argv[1], "cost"))
		return cost();
	if (argc == 2 && !strcmp(argv[1], "slices"))
		return slices();
	fprintf(stderr, "usage: %s cost|slices%s\n", argv[0],
#ifdef __aarch64__
		"|sve"
#else
		""
#endif
		);
	return 2;
}
