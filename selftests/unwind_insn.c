// SPDX-License-Identifier: GPL-2.0
/*
 * libfiber's stack walker finds the right callers from every instruction
 * of a corpus of function shapes: a leaf using the red zone, a function
 * without frame pointer that pushes and pops, one with alloca, and one
 * with a frame over 4 KiB (two SP adjustments on arm64), stopped at each
 * of their instructions in turn; and the same through the upcall's cache. Built with libfiber.a to reach the
 * walker, which is internal.
 */
#include "kselftest_harness.h"

#include <alloca.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unwind.h"

#define NR_CHAIN	5	/* driver and the four corpus functions */
#define MAX_STOPS	4096

volatile long sink;

/*
 * The corpus, called in this order: driver, big, alloca, pushpop, leaf;
 * noipa: no clones, each symbol is the code that runs.
 */
__attribute__((noipa)) long corpus_leaf(long a, long b)
{
	volatile long local[8];		/* in the red zone on x86_64: a leaf */
	int i;

	for (i = 0; i < 8; i++)
		local[i] = a * i + b;
	return local[3] + local[7];
}

__attribute__((noipa)) long corpus_pushpop(long a, long b, long c, long d)
{
	/* Values live across the call: callee-saved registers pushed. */
	long x = a * 3, y = b * 5, z = c * 7, w = d * 11;
	long r = corpus_leaf(x + y, z - w);

	return r + x * y + z * w;
}

__attribute__((noipa)) long corpus_alloca(int n)
{
	volatile char *buf = alloca(n);

	buf[0] = (char)n;
	buf[n - 1] = 1;
	return corpus_pushpop(buf[0], buf[n - 1], n, n + 1) + buf[0];
}

__attribute__((noipa)) long corpus_big(int n)
{
	volatile char big[8192 + 64];	/* > 4 KiB: two SP adjustments on arm64 */

	big[0] = (char)n;
	big[8191] = 2;
	return corpus_alloca(n + big[0] % 8 + 16) + big[8191];
}

__attribute__((noipa)) void corpus_driver(void)
{
	sink = corpus_big(3);
	__asm__ volatile("" ::: "memory");	/* not a tail call */
}

static void *const chain[NR_CHAIN] = {
	corpus_driver, corpus_big, corpus_alloca, corpus_pushpop, corpus_leaf,
};

struct stop {
	uint64_t pc;
	int depth;		/* frames the walk produced */
	int err;		/* the step that ended it */
	uint64_t frames[NR_CHAIN + 1];
	bool cache_differs;	/* a walk through the cache found others */
};

static struct stop stops[MAX_STOPS];
static int nr_stops;
static uintptr_t stack_lo, stack_hi;
static struct fiber_unwind_cache *cache;
static uintptr_t corpus_start[NR_CHAIN], corpus_end[NR_CHAIN];

static int chain_index(uint64_t pc)
{
	int i;

	for (i = 0; i < NR_CHAIN; i++)
		if (pc >= corpus_start[i] && pc < corpus_end[i])
			return i;
	return -1;
}

/* Walks from uc into frames; returns the depth, the step that ended it in *err. */
static int walk(const ucontext_t *uc, struct fiber_unwind_cache *cache, uint64_t *frames,
		int *err)
{
	struct fiber_unwind_regs r = { .caller = false };
	int depth = 0, ret;

	fiber_unwind_from_ucontext(&r, uc);
	*err = 0;
	while (depth <= NR_CHAIN) {
		frames[depth++] = r.caller ? r.pc - 1 : r.pc;
		ret = fiber_unwind_step(&r, stack_lo, stack_hi, cache);
		if (ret != 1) {
			*err = ret;
			break;
		}
	}
	return depth;
}

/*
 * Walks from the stopped state, as the upcall would; then twice through
 * the upcall's cache of rows (filling it, then reading it, with other
 * stops' rows evicted or not), which must find the same frames.
 */
static void walk_from(const ucontext_t *uc)
{
	uint64_t frames[NR_CHAIN + 1];
	struct stop *s;
	int i, depth, err;

	if (nr_stops == MAX_STOPS)
		return;
	s = &stops[nr_stops++];
	s->pc = fiber_arch_uc_pc(uc);
	s->depth = walk(uc, NULL, s->frames, &s->err);
	s->cache_differs = false;
	for (i = 0; i < 2; i++) {
		depth = walk(uc, cache, frames, &err);
		if (depth != s->depth || err != s->err ||
		    memcmp(frames, s->frames, depth * sizeof(frames[0])))
			s->cache_differs = true;
	}
}

static int add_executable(struct dl_phdr_info *info, size_t size, void *data)
{
	*(int *)data = fiber_unwind_add_object(info);
	return 1;
}

static int setup(struct __test_metadata *_metadata)
{
	pthread_attr_t attr;
	size_t size;
	void *addr;
	int err = -1, i;

	fiber_unwind_reset();
	dl_iterate_phdr(add_executable, &err);
	if (err)
		return err;
	pthread_getattr_np(pthread_self(), &attr);
	pthread_attr_getstack(&attr, &addr, &size);
	pthread_attr_destroy(&attr);
	stack_lo = (uintptr_t)addr;
	stack_hi = (uintptr_t)addr + size;
	for (i = 0; i < NR_CHAIN; i++) {
		const ElfW(Sym) *sym;
		Dl_info di;

		if (!dladdr1(chain[i], &di, (void **)&sym, RTLD_DL_SYMENT) || !sym)
			return -1;
		corpus_start[i] = (uintptr_t)chain[i];
		corpus_end[i] = corpus_start[i] + sym->st_size;
	}
	nr_stops = 0;
	cache = fiber_unwind_cache_new();
	return cache ? 0 : -1;
}

#if defined(__x86_64__)
/* Single-stepping: the trap flag raises SIGTRAP after every instruction. */
#define TRAP_FLAG	0x100UL

static void on_trap(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	int idx = chain_index(uc->uc_mcontext.gregs[REG_RIP]);

	/* The driver's own instructions have no caller in the corpus. */
	if (idx > 0)
		walk_from(uc);
}

static void stop_everywhere(void)
{
	__asm__ volatile("pushfq; orq %0, (%%rsp); popfq" :: "i"(TRAP_FLAG) : "memory", "cc");
	corpus_driver();
	__asm__ volatile("pushfq; andq %0, (%%rsp); popfq" :: "i"(~TRAP_FLAG) : "memory", "cc");
}
#elif defined(__aarch64__)
/*
 * No user-mode single step: a BRK planted on each instruction in turn
 * (fixed 4-byte instructions), the original put back once it has trapped.
 */
#define BRK_INSN	0xd4200ee0U	/* brk #0x77 */

static uint32_t *planted;
static uint32_t original;

static void on_trap(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;

	if ((uint32_t *)uc->uc_mcontext.pc != planted)
		abort();
	walk_from(uc);
	*planted = original;
	__builtin___clear_cache((char *)planted, (char *)(planted + 1));
}

static void stop_everywhere(void)
{
	long page = sysconf(_SC_PAGESIZE);
	uintptr_t lo = UINTPTR_MAX, hi = 0, a;
	int i;

	for (i = 1; i < NR_CHAIN; i++) {
		lo = corpus_start[i] < lo ? corpus_start[i] : lo;
		hi = corpus_end[i] > hi ? corpus_end[i] : hi;
	}
	lo &= ~(uintptr_t)(page - 1);
	if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE | PROT_EXEC))
		abort();
	for (i = 1; i < NR_CHAIN; i++) {
		for (a = corpus_start[i]; a < corpus_end[i]; a += 4) {
			planted = (uint32_t *)a;
			original = *planted;
			*planted = BRK_INSN;
			__builtin___clear_cache((char *)planted, (char *)(planted + 1));
			corpus_driver();
			if (*planted != original) {	/* not executed on this path */
				*planted = original;
				__builtin___clear_cache((char *)planted, (char *)(planted + 1));
			}
		}
	}
	mprotect((void *)lo, hi - lo, PROT_READ | PROT_EXEC);
}
#else
#error "unsupported architecture"
#endif

TEST(every_instruction)
{
	struct sigaction sa = { .sa_sigaction = on_trap, .sa_flags = SA_SIGINFO };
	int per_function[NR_CHAIN] = { 0 }, bad = 0, cached_bad = 0, i, j, idx;

	ASSERT_EQ(0, setup(_metadata)) TH_LOG("the executable's CFI could not be indexed");
	ASSERT_EQ(0, sigaction(SIGTRAP, &sa, NULL));
	stop_everywhere();
	signal(SIGTRAP, SIG_DFL);

	for (i = 0; i < nr_stops; i++) {
		struct stop *s = &stops[i];

		idx = chain_index(s->pc);
		if (idx <= 0)
			continue;
		per_function[idx]++;
		cached_bad += s->cache_differs;
		/* Frame k must be in chain[idx - k], down to the driver. */
		for (j = 0; j <= idx; j++) {
			if (j >= s->depth || chain_index(s->frames[j]) != idx - j) {
				if (bad++ < 10) {
					Dl_info di = { 0 };

					dladdr((void *)s->pc, &di);
					TH_LOG("stop at %s+%#lx: frame %d is %#lx (walk ended %d)",
					       di.dli_sname ? di.dli_sname : "?",
					       (unsigned long)(s->pc - (uintptr_t)di.dli_saddr), j,
					       j < s->depth ? (unsigned long)s->frames[j] : 0UL,
					       s->err);
				}
				break;
			}
		}
	}
	TH_LOG("%d stops: big %d, alloca %d, pushpop %d, leaf %d; %d wrong walks",
	       nr_stops, per_function[1], per_function[2], per_function[3], per_function[4], bad);
	/* Every function of the corpus was stopped in, at many instructions. */
	for (i = 1; i < NR_CHAIN; i++)
		ASSERT_LT(5, per_function[i]);
	ASSERT_EQ(0, bad);
	ASSERT_EQ(0, cached_bad) TH_LOG("%d walks through the cache went elsewhere", cached_bad);
}

TEST_HARNESS_MAIN
