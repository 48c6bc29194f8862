// SPDX-License-Identifier: GPL-2.0
/*
 * Random ioctls from many threads and processes get exactly the result the
 * module documents, registrations that really preempt keep every register,
 * and nothing outlives its thread: no registration, no charge, no write.
 *
 * Each thread draws operations from a PRNG seeded from --seed: REGISTER
 * with random and boundary fields, argument pointers and control block
 * memory; VERSION and unknown ioctls; UNREGISTER; sessions that register
 * a real trampoline with small slices and spin, so the timer fires and
 * redirects; fork, vfork and exec, thread exit and SIGKILL while
 * registered; signals. A thread per process remaps memory and closes the
 * device under the others. A model of the module predicts each result
 * (exactly where nothing races, else a set), and every result must be one
 * the man page gives for that ioctl. The run ends after --ops operations
 * or --seconds (default 1,000,000 or 60 s, also FUZZ_OPS, FUZZ_SECONDS,
 * FUZZ_SEED); the seed is printed so that a failure can be replayed.
 */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define PAGE		4096UL
#define HUGE_LEN	(2UL << 20)
#define MAX_PROCS	8
#define MAX_THREADS	8
/* A page of control blocks: one slot per thread for its sessions, the rest shared. */
#define SLOTS		(PAGE / FIBER_PREEMPT_CTL_ALIGN)
#define SHARED_SLOT	16
#define REG_SIZE	sizeof(struct fiber_preempt_register)
/* The fd a process's chaos thread keeps opening and closing under the others. */
#define VOLATILE_FD	900
/* Not a uid any other test uses: its charges are this test's alone. */
#define FUZZ_UID	60401
#define FUZZ_LIMITED_PAGES 2
#define CHARGE_PAGES	3

/*
 * The trampoline and a spinning loop, in this file so that the kselftest
 * directory builds it with lib.mk's one-source rule.
 *
 * fuzz_upcall is what the module sends a thread to: it counts the upcall
 * in fuzz_tls, adds fuzz_tls.bump to switch_count (a "switch" when 1),
 * clears in_upcall and returns to ctl->upcall_pc with every register as
 * it was. fuzz_spin(n, out) runs n rounds of a loop that keeps a known
 * value in each register it can and stores them to out: a register the
 * redirect or the trampoline broke shows up there.
 *
 * x86_64: below the red zone, a slot for the PC, then rflags, rax and rcx;
 * "ret $128" pops the PC and skips the red zone. The trampoline is
 * transparent, so a registration may be preemptible anywhere.
 *
 * aarch64 has no branch that leaves every register alone: the trampoline
 * uses x16 and x17 (the intra-procedure-call scratch registers, which no
 * loop here uses), so registrations that deliver name only the spinning
 * loop as preemptible. Nothing in it changes NZCV.
 */
struct fuzz_tls {
	struct fiber_preempt_ctl *ctl;	/* 0: the block the trampoline uses */
	uint64_t upcalls;		/* 8: upcalls it ran */
	uint64_t bump;			/* 16: added to switch_count by each */
};
__thread struct fuzz_tls fuzz_tls __attribute__((visibility("hidden")));

_Static_assert(offsetof(struct fiber_preempt_ctl, switch_count) == 8, "asm offset");
_Static_assert(offsetof(struct fiber_preempt_ctl, upcall_pc) == 16, "asm offset");
_Static_assert(offsetof(struct fiber_preempt_ctl, in_upcall) == 24, "asm offset");
_Static_assert(offsetof(struct fuzz_tls, bump) == 16, "asm offset");
_Static_assert(offsetof(struct fiber_preempt_ctl, deferred_vector) ==
	       offsetof(struct fiber_preempt_ctl, deferred_off) + 6 * sizeof(__u64),
	       "the deferred_* counters follow one another");

#if defined(__x86_64__)
#define SPIN_REGS	14
__asm__(
"	.pushsection .text\n"
"	.globl	fuzz_upcall, fuzz_upcall_end\n"
"	.hidden	fuzz_upcall, fuzz_upcall_end\n"
"	.type	fuzz_upcall, @function\n"
"	.p2align 4\n"
"fuzz_upcall:\n"
"	.cfi_startproc simple\n"
"	.cfi_signal_frame\n"
"	.cfi_def_cfa rsp, 0\n"
"	.cfi_undefined rip\n"
"	endbr64\n"
"	leaq	-136(%rsp), %rsp\n"		/* red zone, then the PC slot */
"	.cfi_adjust_cfa_offset 136\n"
"	pushfq\n"				/* before anything changes flags */
"	.cfi_adjust_cfa_offset 8\n"
"	pushq	%rax\n"
"	.cfi_adjust_cfa_offset 8\n"
"	pushq	%rcx\n"
"	.cfi_adjust_cfa_offset 8\n"
"	movq	%fs:fuzz_tls@tpoff, %rax\n"	/* this thread's control block */
"	movq	16(%rax), %rcx\n"		/* upcall_pc */
"	movq	%rcx, 24(%rsp)\n"		/* to the PC slot */
"	movq	%fs:fuzz_tls@tpoff+16, %rcx\n"	/* bump */
"	addq	%rcx, 8(%rax)\n"		/* switch_count */
"	addq	$1, %fs:fuzz_tls@tpoff+8\n"	/* upcalls */
"	movl	$0, 24(%rax)\n"			/* in_upcall: the context is saved */
"	popq	%rcx\n"
"	.cfi_adjust_cfa_offset -8\n"
"	popq	%rax\n"
"	.cfi_adjust_cfa_offset -8\n"
"	popfq\n"
"	.cfi_adjust_cfa_offset -8\n"
"	ret	$128\n"				/* the PC, then over the red zone */
"	.cfi_endproc\n"
"	.size	fuzz_upcall, .-fuzz_upcall\n"
"fuzz_upcall_end:\n"
"\n"
"	.globl	fuzz_spin, fuzz_spin_loop, fuzz_spin_loop_end\n"
"	.hidden	fuzz_spin, fuzz_spin_loop, fuzz_spin_loop_end\n"
"	.type	fuzz_spin, @function\n"
"	.p2align 4\n"
"fuzz_spin:\n"					/* rdi: rounds, rsi: out */
"	.cfi_startproc\n"
"	.irp	reg, rbx, rbp, r12, r13, r14, r15, rsi\n"
"	pushq	%\\reg\n"
"	.cfi_adjust_cfa_offset 8\n"
"	.endr\n"
"	movl	$1, %eax\n"
"	movl	$2, %ebx\n"
"	movl	$3, %ecx\n"
"	movl	$4, %edx\n"
"	movl	$5, %esi\n"
"	movl	$6, %ebp\n"
"	movl	$7, %r8d\n"
"	movl	$8, %r9d\n"
"	movl	$9, %r10d\n"
"	movl	$10, %r11d\n"
"	movl	$11, %r12d\n"
"	movl	$12, %r13d\n"
"	movl	$13, %r14d\n"
"	movl	$14, %r15d\n"
"fuzz_spin_loop:\n"
"	addq	$1, %rax\n"
"	addq	$2, %rbx\n"
"	addq	$3, %rcx\n"
"	addq	$4, %rdx\n"
"	addq	$5, %rsi\n"
"	addq	$6, %rbp\n"
"	addq	$7, %r8\n"
"	addq	$8, %r9\n"
"	addq	$9, %r10\n"
"	addq	$10, %r11\n"
"	addq	$11, %r12\n"
"	addq	$12, %r13\n"
"	addq	$13, %r14\n"
"	addq	$14, %r15\n"
"	decq	%rdi\n"
"	jnz	fuzz_spin_loop\n"
"fuzz_spin_loop_end:\n"
"	popq	%rdi\n"
"	.cfi_adjust_cfa_offset -8\n"
"	movq	%rax, 0(%rdi)\n"
"	movq	%rbx, 8(%rdi)\n"
"	movq	%rcx, 16(%rdi)\n"
"	movq	%rdx, 24(%rdi)\n"
"	movq	%rsi, 32(%rdi)\n"
"	movq	%rbp, 40(%rdi)\n"
"	movq	%r8, 48(%rdi)\n"
"	movq	%r9, 56(%rdi)\n"
"	movq	%r10, 64(%rdi)\n"
"	movq	%r11, 72(%rdi)\n"
"	movq	%r12, 80(%rdi)\n"
"	movq	%r13, 88(%rdi)\n"
"	movq	%r14, 96(%rdi)\n"
"	movq	%r15, 104(%rdi)\n"
"	.irp	reg, r15, r14, r13, r12, rbp, rbx\n"
"	popq	%\\reg\n"
"	.cfi_adjust_cfa_offset -8\n"
"	.endr\n"
"	ret\n"
"	.cfi_endproc\n"
"	.size	fuzz_spin, .-fuzz_spin\n"
"	.popsection\n");
#elif defined(__aarch64__)
#define SPIN_REGS	25
__asm__(
"	.pushsection .text\n"
"	.globl	fuzz_upcall, fuzz_upcall_end\n"
"	.hidden	fuzz_upcall, fuzz_upcall_end\n"
"	.type	fuzz_upcall, %function\n"
"	.p2align 4\n"
"fuzz_upcall:\n"
"	.cfi_startproc\n"
"	.cfi_undefined x30\n"
"	hint	#34\n"				/* bti c: the redirect lands as a call */
"	mrs	x16, tpidr_el0\n"
"	add	x16, x16, #:tprel_hi12:fuzz_tls, lsl #12\n"
"	add	x16, x16, #:tprel_lo12_nc:fuzz_tls\n"
"	ldr	x17, [x16, #8]\n"		/* upcalls */
"	add	x17, x17, #1\n"			/* add, not adds: NZCV untouched */
"	str	x17, [x16, #8]\n"
"	ldr	x17, [x16, #16]\n"		/* bump */
"	ldr	x16, [x16]\n"			/* this thread's control block */
"	cbz	x17, 1f\n"
"	ldr	x17, [x16, #8]\n"		/* switch_count */
"	add	x17, x17, #1\n"
"	str	x17, [x16, #8]\n"
"1:	str	wzr, [x16, #24]\n"		/* in_upcall: the context is saved */
"	ldr	x17, [x16, #16]\n"		/* upcall_pc */
"	br	x17\n"
"	.cfi_endproc\n"
"	.size	fuzz_upcall, .-fuzz_upcall\n"
"fuzz_upcall_end:\n"
"\n"
"	.globl	fuzz_spin, fuzz_spin_loop, fuzz_spin_loop_end\n"
"	.hidden	fuzz_spin, fuzz_spin_loop, fuzz_spin_loop_end\n"
"	.type	fuzz_spin, %function\n"
"	.p2align 4\n"
"fuzz_spin:\n"					/* x0: rounds, x1: out */
"	.cfi_startproc\n"
"	hint	#34\n"
"	stp	x29, x30, [sp, #-112]!\n"
"	.cfi_def_cfa_offset 112\n"
"	.cfi_offset x29, -112\n"
"	.cfi_offset x30, -104\n"
"	stp	x19, x20, [sp, #16]\n"
"	stp	x21, x22, [sp, #32]\n"
"	stp	x23, x24, [sp, #48]\n"
"	stp	x25, x26, [sp, #64]\n"
"	stp	x27, x28, [sp, #80]\n"
"	str	x1, [sp, #96]\n"
"	.irp	n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15\n"
"	mov	x\\n, #\\n\n"
"	.endr\n"
"	.irp	n, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28\n"
"	mov	x\\n, #(\\n - 3)\n"
"	.endr\n"
"fuzz_spin_loop:\n"
"	.irp	n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15\n"
"	add	x\\n, x\\n, #\\n\n"
"	.endr\n"
"	.irp	n, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28\n"
"	add	x\\n, x\\n, #(\\n - 3)\n"
"	.endr\n"
"	subs	x0, x0, #1\n"
"	b.ne	fuzz_spin_loop\n"
"fuzz_spin_loop_end:\n"
"	ldr	x16, [sp, #96]\n"
"	stp	x1, x2, [x16, #0]\n"
"	stp	x3, x4, [x16, #16]\n"
"	stp	x5, x6, [x16, #32]\n"
"	stp	x7, x8, [x16, #48]\n"
"	stp	x9, x10, [x16, #64]\n"
"	stp	x11, x12, [x16, #80]\n"
"	stp	x13, x14, [x16, #96]\n"
"	stp	x15, x19, [x16, #112]\n"
"	stp	x20, x21, [x16, #128]\n"
"	stp	x22, x23, [x16, #144]\n"
"	stp	x24, x25, [x16, #160]\n"
"	stp	x26, x27, [x16, #176]\n"
"	str	x28, [x16, #192]\n"
"	ldp	x19, x20, [sp, #16]\n"
"	ldp	x21, x22, [sp, #32]\n"
"	ldp	x23, x24, [sp, #48]\n"
"	ldp	x25, x26, [sp, #64]\n"
"	ldp	x27, x28, [sp, #80]\n"
"	ldp	x29, x30, [sp], #112\n"
"	.cfi_def_cfa_offset 0\n"
"	ret\n"
"	.cfi_endproc\n"
"	.size	fuzz_spin, .-fuzz_spin\n"
"	.popsection\n");
#else
#error "unsupported architecture"
#endif

extern const char fuzz_upcall[], fuzz_upcall_end[];
extern const char fuzz_spin_loop[], fuzz_spin_loop_end[];
void fuzz_spin(uint64_t rounds, uint64_t *out);

/* ---- bounds, seed, shared counters ------------------------------------ */

static struct {
	uint64_t seed;
	uint64_t max_ops;
	uint64_t seconds;
	int procs;
	int threads;
	const char *exe;	/* this program, for exec */
} opt = { .max_ops = 1000000, .seconds = 60, .procs = 2, .threads = 3 };

/* What each ioctl gave, by kind and result. */
enum { IOC_VERSION, IOC_REGISTER, IOC_UNREGISTER, IOC_UNKNOWN, NR_IOC };
static const char *const ioc_name[NR_IOC] = { "VERSION", "REGISTER", "UNREGISTER", "unknown" };

enum {
	RES_OK, RES_EFAULT, RES_EINVAL, RES_E2BIG, RES_ERANGE, RES_EBUSY, RES_ENOSPC, RES_ENOMEM,
	RES_EOPNOTSUPP, RES_ENOENT, RES_ENOTTY, RES_EBADF, RES_OTHER, NR_RESULTS
};
static const int result_errno[NR_RESULTS] = {
	0, EFAULT, EINVAL, E2BIG, ERANGE, EBUSY, ENOSPC, ENOMEM,
	EOPNOTSUPP, ENOENT, ENOTTY, EBADF, -1
};
static const char *const result_name[NR_RESULTS] = {
	"0", "EFAULT", "EINVAL", "E2BIG", "ERANGE", "EBUSY", "ENOSPC", "ENOMEM",
	"EOPNOTSUPP", "ENOENT", "ENOTTY", "EBADF", "other"
};
#define M(r)		(1U << (r))

/* What fiber_preempt(4) gives each ioctl (EBADF comes from the closed fd). */
static const unsigned int documented[NR_IOC] = {
	[IOC_VERSION] = M(RES_OK) | M(RES_EFAULT),
	[IOC_REGISTER] = M(RES_OK) | M(RES_EFAULT) | M(RES_EINVAL) | M(RES_E2BIG) | M(RES_ERANGE) |
			 M(RES_EBUSY) | M(RES_ENOSPC) | M(RES_ENOMEM) | M(RES_EOPNOTSUPP),
	[IOC_UNREGISTER] = M(RES_OK) | M(RES_ENOENT),
	[IOC_UNKNOWN] = M(RES_ENOTTY),
};

/* ctl's deferred_* counters, in its order. */
enum { D_OFF, D_PC, D_UPCALL, D_KERNEL, D_SIGNAL, D_RSEQ, D_VECTOR, NR_DEFER };
static const char *const defer_name[NR_DEFER] = {
	"off", "pc", "upcall", "kernel", "signal", "rseq", "vector"
};

#define NR_MSGS		16
struct shared {
	atomic_uint_least64_t ops;
	atomic_int stop;
	uint64_t deadline_ns;
	atomic_uint_least64_t tally[NR_IOC][NR_RESULTS];
	atomic_uint_least64_t failures;
	atomic_uint_least64_t sessions, spins, upcalls, fired, deferred;
	atomic_uint_least64_t deferred_by[NR_DEFER];
	atomic_uint_least64_t forks, execs, vforks, exits, kills, killed, signals, chaos;
	atomic_uint msgs;
	char msg[NR_MSGS][256];
};
static struct shared *sh;

/* What the module's VERSION says; TASK_SIZE as its checks see it. */
static struct fiber_preempt_version ver;
static uint64_t task_size;
static bool have_bin_true;
static cpu_set_t all_cpus;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* splitmix64: one state word per thread, seeded from --seed and its place. */
static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t seed_for(uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t s = opt.seed ^ (a << 48) ^ (b << 32) ^ c;

	return mix(&s);
}

/* ---- processes, threads and their memory --------------------------- */

/* Where a control block may be; each kind has a known result. */
enum ctl_kind {
	K_NULL, K_MISALIGNED, K_KERNEL, K_TOP, K_LOW, K_UNMAPPED, K_ANON, K_RO, K_NONE,
	K_FILE_SHARED, K_FILE_PRIVATE, K_FILE_EOF, K_SHM_ANON, K_ZERO_SHARED,
	K_HUGE_PRIVATE, K_HUGE_SHARED, K_THP, K_DATA, K_STACK, K_TEXT, K_VDSO,
	K_PAGE_END, K_RACY, NR_KINDS
};
static const char *const kind_name[NR_KINDS] = {
	"null", "misaligned", "kernel", "top", "low", "unmapped", "anon", "read-only",
	"prot-none", "file-shared", "file-private", "file-beyond-eof", "shared-anon",
	"dev-zero-shared", "huge-private", "huge-shared", "thp", "data", "stack",
	"text", "vdso", "page-end", "racy"
};

struct proc {
	int index;
	bool limited;		/* another user, RLIMIT_MEMLOCK of a few pages */
	int fd;
	int file_fd;		/* a file, unlinked: a page of blocks */
	char *region[NR_KINDS];	/* a page of blocks per kind that has one */
	char *racy;		/* remapped by the chaos thread */
	atomic_int racy_lost;	/* someone else mapped the racy page: not used */
	pthread_t tid[MAX_THREADS];
};

enum reg_state { UNREGISTERED, HELD, SESSION };

struct thread {
	struct proc *p;
	int index;
	uint64_t rng;
	uint64_t nr;		/* operations done */
	bool victim;		/* in a child that will be killed: no heavy ops */
	int fd;			/* its own open of the device */
	enum reg_state state;
	int hold;		/* operations left before a held registration ends */
	char *arena;		/* two pages for arguments, then a PROT_NONE page */
	char *zeros;		/* a page for arguments, then zeros up to ZEROS_LEN */
	char *ro_args;		/* a read-only page with valid arguments */
	char *edge;		/* a page whose last slot sits before PROT_NONE */
	struct fiber_preempt_ctl *heap;
	char desc[160];		/* what the current operation is */
};

#define ARENA_LEN	(2 * PAGE)
#define ZEROS_LEN	(16UL << 20)

static struct fiber_preempt_ctl data_blocks[SLOTS] __attribute__((aligned(PAGE)));
static struct fiber_preempt_ctl vfork_blocks[MAX_THREADS]
	__attribute__((aligned(FIBER_PREEMPT_CTL_ALIGN)));

static uint64_t rnd(struct thread *t)
{
	return mix(&t->rng);
}

static uint64_t below(struct thread *t, uint64_t n)
{
	return n ? rnd(t) % n : 0;
}

static bool one_in(struct thread *t, uint64_t n)
{
	return below(t, n) == 0;
}

static void __attribute__((format(printf, 2, 3))) fail(struct thread *t, const char *fmt, ...)
{
	unsigned int n = atomic_fetch_add(&sh->msgs, 1);
	char buf[256];
	int len;
	va_list ap;

	atomic_fetch_add(&sh->failures, 1);
	len = snprintf(buf, sizeof(buf), "proc %d thread %d op %llu (%s): ",
		       t ? t->p->index : -1, t ? t->index : -1,
		       t ? (unsigned long long)t->nr : 0ULL, t ? t->desc : "-");
	va_start(ap, fmt);
	vsnprintf(buf + len, sizeof(buf) - len, fmt, ap);
	va_end(ap);
	if (n < NR_MSGS)
		memcpy(sh->msg[n], buf, sizeof(buf));
	fprintf(stderr, "# FAIL %s\n", buf);
}

static int result_of(int ret)
{
	int r;

	for (r = 0; r < RES_OTHER; r++)
		if (result_errno[r] == -ret)
			return r;
	return RES_OTHER;
}

static void mask_names(unsigned int mask, char *buf, size_t len)
{
	int r, n = 0;

	buf[0] = 0;
	for (r = 0; r < NR_RESULTS && n < (int)len; r++)
		if (mask & M(r))
			n += snprintf(buf + n, len - n, "%s%s", n ? "|" : "", result_name[r]);
}

/*
 * One ioctl, counted and checked: its result must be in expect (a mask
 * of results), which is always within what the man page documents.
 * Returns the result (R_*).
 */
static int checked_ioctl(struct thread *t, int fd, int ioc, unsigned long cmd, void *arg,
			 unsigned int expect)
{
	int ret = ioctl(fd, cmd, arg) ? -errno : 0;
	int r = result_of(ret);

	if (fd == VOLATILE_FD)
		expect |= M(RES_EBADF);
	atomic_fetch_add(&sh->tally[ioc][r], 1);
	atomic_fetch_add(&sh->ops, 1);
	t->nr++;
	if (!(expect & M(r))) {
		char want[128];

		mask_names(expect, want, sizeof(want));
		fail(t, "%s returned %d (%s), expected %s", ioc_name[ioc], ret,
		     r == RES_OTHER ? strerror(-ret) : result_name[r], want);
	} else if (r != RES_EBADF && !((documented[ioc] | M(RES_EBADF)) & M(r))) {
		fail(t, "%s returned %s, which fiber_preempt(4) does not document",
		     ioc_name[ioc], result_name[r]);
	}
	return r;
}

static void count_op(struct thread *t, atomic_uint_least64_t *what)
{
	if (what)
		atomic_fetch_add(what, 1);
	atomic_fetch_add(&sh->ops, 1);
	t->nr++;
}

static int pick_fd(struct thread *t)
{
	switch (below(t, 10)) {
	case 0: case 1: case 2: case 3: case 4:
		return t->p->fd;
	case 5: case 6: case 7: case 8:
		return t->fd;
	default:
		return VOLATILE_FD;
	}
}

/* ---- the model of REGISTER -------------------------------------------- */

/* A registration that is valid, cannot deliver, and may stay a while. */
static void no_delivery(struct fiber_preempt_register *a)
{
	memset(a->ranges, 0, sizeof(a->ranges));
	a->nr_ranges = 1;
	a->ranges[0].start = 0x1000;	/* below mmap_min_addr: no code there */
	a->ranges[0].end = 0x2000;
}

static bool is_mapped(uint64_t addr)
{
	return msync((void *)(uintptr_t)(addr & ~(PAGE - 1)), PAGE, MS_ASYNC) == 0 ||
	       errno != ENOMEM;
}

/*
 * The results the control block at ctl may give once the fields passed:
 * the mapping is looked at (EFAULT, EOPNOTSUPP), the user charged
 * (ENOMEM), the page pinned for writing (EFAULT) and ctl->size read.
 */
static unsigned int expect_ctl(struct thread *t, enum ctl_kind kind, uint64_t ctl)
{
	unsigned int charged = t->p->limited ? M(RES_ENOMEM) : 0;
	const struct fiber_preempt_ctl *c = (const void *)(uintptr_t)ctl;

	switch (kind) {
	case K_NULL: case K_MISALIGNED: case K_KERNEL: case K_TOP: case K_LOW:
	case K_UNMAPPED:
		return M(RES_EFAULT);
	case K_FILE_SHARED: case K_SHM_ANON: case K_ZERO_SHARED: case K_HUGE_SHARED:
		return M(RES_EOPNOTSUPP);
	case K_RO: case K_NONE: case K_FILE_EOF: case K_TEXT: case K_VDSO:
		return M(RES_EFAULT) | charged;
	case K_RACY:
		return M(RES_OK) | M(RES_EFAULT) | M(RES_EINVAL) | M(RES_EOPNOTSUPP) | charged;
	default:
		return (c->size < sizeof(*c) ? M(RES_EINVAL) : M(RES_OK)) | charged;
	}
}

/*
 * What REGISTER gives for the arguments at argp, whose readable bytes end
 * at readable_end (NULL: none are), in the order the module checks.
 */
static unsigned int expect_register(struct thread *t, const char *argp, const char *readable_end,
				    enum ctl_kind kind)
{
	struct fiber_preempt_register a;
	uint32_t usize;
	const char *p, *end;
	uint32_t i;

	if (!readable_end || argp + sizeof(usize) > readable_end)
		return M(RES_EFAULT);
	memcpy(&usize, argp, sizeof(usize));
	if (usize < REG_SIZE)
		return M(RES_EINVAL);
	if (usize > PAGE)
		return M(RES_E2BIG);
	/*
	 * copy_struct_from_user(): the tail must be zero up to usize. Its
	 * access_ok() of the whole tail fails first if it ends beyond
	 * TASK_SIZE_MAX: that is TASK_SIZE on x86_64 and on arm64 with
	 * 48-bit VAs, above it on a kernel built for 52 that runs on 48.
	 */
	if (usize > REG_SIZE) {
		unsigned int beyond = (uintptr_t)argp + usize > task_size ? M(RES_EFAULT) : 0;

		end = argp + usize;
		for (p = argp + REG_SIZE; p < end && p < readable_end; p++)
			if (*p)
				return M(RES_E2BIG) | beyond;
		if (end > readable_end)
			return M(RES_EFAULT);
	}
	if (argp + REG_SIZE > readable_end)
		return M(RES_EFAULT);
	memcpy(&a, argp, sizeof(a));
	if ((a.flags & ~FIBER_PREEMPT_REG_FLAGS) || a.__pad)
		return M(RES_EINVAL);
	if (!a.ctl || a.ctl % FIBER_PREEMPT_CTL_ALIGN)
		return M(RES_EINVAL);
	if (a.ctl >= task_size)
		return M(RES_EFAULT);
	if (!a.upcall || a.upcall >= a.upcall_end || a.upcall_end > task_size)
		return M(RES_EINVAL);
	if (a.slice_ns && (a.slice_ns < FIBER_PREEMPT_MIN_SLICE_NS ||
			   a.slice_ns > FIBER_PREEMPT_MAX_SLICE_NS))
		return M(RES_ERANGE);
	if (a.nr_ranges > FIBER_PREEMPT_MAX_RANGES)
		return M(RES_EINVAL);
	for (i = 0; i < FIBER_PREEMPT_MAX_RANGES; i++) {
		const struct fiber_preempt_range *r = &a.ranges[i];

		if (i >= a.nr_ranges ? r->start || r->end :
		    r->start >= r->end || r->end > task_size)
			return M(RES_EINVAL);
	}
	if (t->state != UNREGISTERED)
		return M(RES_EBUSY);
	return expect_ctl(t, kind, a.ctl);
}

/* ---- generators --------------------------------------------------------- */

static uint64_t kernel_address(struct thread *t)
{
	static const uint64_t addrs[] = {
#if defined(__x86_64__)
		0xffff888000000000ULL, 0xffffffff81000000ULL, 0x0000800000000000ULL,
#else
		0xffff000000000000ULL, 0xffff800008000000ULL, 0x0100000000001000ULL,
#endif
		0xffffffffffffff80ULL, 0x8000000000000000ULL,
	};

	return addrs[below(t, ARRAY_SIZE(addrs))];
}

/* A slot of a kind's page: the thread's own for sessions, else a shared one. */
static uint64_t slot_in(struct thread *t, char *page, bool own)
{
	uint64_t slot = own ? t->index : SHARED_SLOT + below(t, SLOTS - SHARED_SLOT);

	return (uintptr_t)page + slot * FIBER_PREEMPT_CTL_ALIGN;
}

/*
 * A control block address of a random kind (one this process has). The
 * stack kind points into *stack, which the caller keeps registered only
 * while its frame lives.
 */
static uint64_t gen_ctl(struct thread *t, enum ctl_kind *kindp, struct fp_test_ctl *stack)
{
	enum ctl_kind kind;
	uint64_t a;

	do
		kind = below(t, NR_KINDS);
	while ((kind == K_RACY && atomic_load(&t->p->racy_lost)) ||
	       (kind != K_NULL && kind != K_MISALIGNED && kind != K_KERNEL &&
		kind != K_TOP && kind != K_LOW && kind != K_UNMAPPED && kind != K_STACK &&
		kind != K_TEXT && kind != K_VDSO && kind != K_PAGE_END && kind != K_RACY &&
		!t->p->region[kind]));
	*kindp = kind;
	switch (kind) {
	case K_NULL:
		return 0;
	case K_MISALIGNED: {
		static const uint64_t off[] = { 1, 4, 8, 64, 127 };

		return slot_in(t, t->p->region[K_ANON], false) + off[below(t, 5)];
	}
	case K_KERNEL:
		return kernel_address(t) & ~(uint64_t)(FIBER_PREEMPT_CTL_ALIGN - 1);
	case K_TOP: {
		static const int64_t off[] = { -128, 0, 128, -4096 };

		a = task_size + off[below(t, 4)];
		if (a < task_size && is_mapped(a)) {
			*kindp = K_LOW;
			return 0x8000;
		}
		return a;
	}
	case K_LOW:
		return 0x8000;
	case K_UNMAPPED:
		do
			a = (rnd(t) % task_size) & ~(uint64_t)(FIBER_PREEMPT_CTL_ALIGN - 1);
		while (!a || is_mapped(a));
		return a;
	case K_STACK:
		memset(stack, 0, sizeof(*stack));
		stack->ctl.size = one_in(t, 8) ? 64 : sizeof(stack->ctl);
		return (uintptr_t)&stack->ctl;
	case K_TEXT:
		return (uintptr_t)fuzz_spin_loop & ~(uint64_t)(FIBER_PREEMPT_CTL_ALIGN - 1);
	case K_VDSO:
		a = getauxval(AT_SYSINFO_EHDR);
		if (a)
			return a + FIBER_PREEMPT_CTL_ALIGN;
		*kindp = K_LOW;
		return 0x8000;
	case K_PAGE_END:
		return (uintptr_t)t->edge + PAGE - FIBER_PREEMPT_CTL_ALIGN;
	case K_RACY:
		return slot_in(t, t->p->racy, false);
	default:
		return slot_in(t, t->p->region[kind], false);
	}
}

static uint64_t gen_slice(struct thread *t)
{
	switch (below(t, 9)) {
	case 0:
		return 0;
	case 1:
		return FIBER_PREEMPT_MIN_SLICE_NS - 1;
	case 2:
		return FIBER_PREEMPT_MIN_SLICE_NS;
	case 3:
		return FIBER_PREEMPT_MAX_SLICE_NS;
	case 4:
		return FIBER_PREEMPT_MAX_SLICE_NS + 1;
	case 5:
		return rnd(t);
	case 6:
		return rnd(t) >> below(t, 64);
	default:
		return FIBER_PREEMPT_MIN_SLICE_NS + below(t, 200000);
	}
}

static void gen_upcall(struct thread *t, struct fiber_preempt_register *a)
{
	uint64_t x = rnd(t) % task_size;

	a->upcall = (uintptr_t)fuzz_upcall;
	a->upcall_end = (uintptr_t)fuzz_upcall_end;
	switch (below(t, 12)) {
	case 0:
		a->upcall = 0;
		break;
	case 1:		/* empty */
		a->upcall_end = a->upcall;
		break;
	case 2:		/* reversed */
		a->upcall = a->upcall_end;
		a->upcall_end = (uintptr_t)fuzz_upcall;
		break;
	case 3:
		a->upcall = kernel_address(t);
		a->upcall_end = a->upcall + 64;
		break;
	case 4:		/* the last bytes below TASK_SIZE */
		a->upcall = task_size - 16;
		a->upcall_end = task_size;
		break;
	case 5:
		a->upcall = task_size - 16;
		a->upcall_end = task_size + 1;
		break;
	case 6:
		a->upcall = x;
		a->upcall_end = x + 1 + below(t, 4096);
		break;
	default:
		break;
	}
}

static void gen_ranges(struct thread *t, struct fiber_preempt_register *a)
{
	uint32_t i, n;

	memset(a->ranges, 0, sizeof(a->ranges));
	switch (below(t, 10)) {
	case 0:
		n = FIBER_PREEMPT_MAX_RANGES + 1 + below(t, 4);
		break;
	case 1:
		n = rnd(t);
		break;
	default:
		n = below(t, FIBER_PREEMPT_MAX_RANGES + 1);
	}
	a->nr_ranges = n;
	for (i = 0; i < FIBER_PREEMPT_MAX_RANGES && i < n; i++) {
		uint64_t s = rnd(t) % task_size;

		switch (below(t, 12)) {
		case 0:		/* empty */
			a->ranges[i].start = a->ranges[i].end = s;
			break;
		case 1:		/* reversed */
			a->ranges[i].start = s + 1;
			a->ranges[i].end = s;
			break;
		case 2:		/* up to TASK_SIZE, or one past it */
			a->ranges[i].start = task_size - 4096;
			a->ranges[i].end = task_size + below(t, 2);
			break;
		case 3:		/* overlapping the one before */
			a->ranges[i] = i ? a->ranges[i - 1] : a->ranges[i];
			a->ranges[i].end += 64;
			break;
		case 4:
			a->ranges[i].start = kernel_address(t);
			a->ranges[i].end = a->ranges[i].start + 4096;
			break;
		default:
			a->ranges[i].start = s;
			a->ranges[i].end = s + 1 + below(t, 1 << 20);
		}
	}
	/* Garbage in the slots past nr_ranges. */
	if (n < FIBER_PREEMPT_MAX_RANGES && one_in(t, 10)) {
		i = n + below(t, FIBER_PREEMPT_MAX_RANGES - n);
		if (one_in(t, 2))
			a->ranges[i].start = rnd(t) | 1;
		else
			a->ranges[i].end = rnd(t) | 1;
	}
}

static void gen_fields(struct thread *t, struct fiber_preempt_register *a, uint64_t ctl)
{
	memset(a, 0, sizeof(*a));
	a->size = REG_SIZE;
	a->flags = one_in(t, 10) ? (uint32_t)rnd(t) : one_in(t, 2) ? FIBER_PREEMPT_REG_SAVES_SVE : 0;
	a->__pad = one_in(t, 20) ? (uint32_t)rnd(t) | 1 : 0;
	a->ctl = ctl;
	gen_upcall(t, a);
	a->slice_ns = gen_slice(t);
	gen_ranges(t, a);
}

/* ---- argument pointers -------------------------------------------------- */

enum argp_kind { ARGP_ARENA, ARGP_STRADDLE, ARGP_RO, ARGP_ZEROS, ARGP_BAD, NR_ARGP };

/*
 * Where an argument goes: in the arena (readable up to the PROT_NONE page
 * after it), straddling into that page, the read-only page of valid
 * arguments, before megabytes of zeros (what a huge size would have the
 * module read), or an address that is none of the caller's (NULL, kernel,
 * below mmap_min_addr, the last bytes below TASK_SIZE, the PROT_NONE page).
 * Returns the pointer; *readable_end is where readable bytes end, NULL
 * when none are.
 */
static char *gen_argp(struct thread *t, size_t len, enum argp_kind *kindp, const char **readable_end)
{
	char *guard = t->arena + ARENA_LEN;
	enum argp_kind kind = below(t, 20) < 14 ? ARGP_ARENA : below(t, NR_ARGP);

	*kindp = kind;
	*readable_end = guard;
	switch (kind) {
	case ARGP_ARENA:
		if (one_in(t, 4))
			return guard - len - below(t, 64);
		return t->arena + (below(t, ARENA_LEN - len - 256) & ~(one_in(t, 8) ? 0UL : 3UL));
	case ARGP_STRADDLE:
		return guard - 1 - below(t, len);
	case ARGP_RO:
		*readable_end = t->ro_args + PAGE;
		return t->ro_args;
	case ARGP_ZEROS:
		*readable_end = t->zeros + ZEROS_LEN;
		return t->zeros + (below(t, 64) & ~3UL);
	default:
		*readable_end = NULL;
		switch (below(t, 6)) {
		case 0:
			return NULL;
		case 1:
			return (char *)(uintptr_t)kernel_address(t);
		case 2:
			return (char *)0x8000;
		case 3:
			return (char *)(uintptr_t)(task_size - 2);
		case 4:
			return (char *)(uintptr_t)(task_size + below(t, 4096));
		default:
			return guard + below(t, PAGE);
		}
	}
}

/* Zeroes what an operation left in its arguments' page: the model reads it as zeros. */
static void arena_clean(struct thread *t, enum argp_kind kind, char *p, size_t len)
{
	char *lo = t->arena, *hi = t->arena + ARENA_LEN;

	if (kind == ARGP_ZEROS) {
		memset(p, 0, len);
		return;
	}
	if ((kind != ARGP_ARENA && kind != ARGP_STRADDLE) || p + len <= lo || p >= hi)
		return;
	if (p < lo) {
		len -= lo - p;
		p = lo;
	}
	if (p + len > hi)
		len = hi - p;
	memset(p, 0, len);
}

/* ---- the operations ----------------------------------------------------- */

static void end_registration(struct thread *t)
{
	if (t->state == UNREGISTERED)
		return;
	snprintf(t->desc, sizeof(t->desc), "UNREGISTER the held registration");
	if (checked_ioctl(t, t->p->fd, IOC_UNREGISTER, FIBER_PREEMPT_IOC_UNREGISTER, NULL,
			  M(RES_OK)) == RES_OK)
		t->state = UNREGISTERED;
	checked_ioctl(t, t->fd, IOC_UNREGISTER, FIBER_PREEMPT_IOC_UNREGISTER, NULL, M(RES_ENOENT));
}

/* REGISTER with random fields, sizes, argument pointers and control blocks. */
static void op_register(struct thread *t)
{
	struct fiber_preempt_register a;
	struct fp_test_ctl stack;
	enum ctl_kind kind;
	enum argp_kind akind;
	const char *readable_end;
	unsigned int expect;
	uint32_t usize;
	size_t len;
	char *argp;
	int fd = pick_fd(t), r;

	gen_fields(t, &a, gen_ctl(t, &kind, &stack));
	static const uint32_t sizes[] = {
		0, 4, REG_SIZE - 1, REG_SIZE + 8, PAGE, PAGE + 1, UINT32_MAX,
	};

	switch (below(t, 10)) {
	case 0:
		usize = sizes[below(t, ARRAY_SIZE(sizes))];
		break;
	case 1:
		usize = REG_SIZE + 1 + below(t, 64);
		break;
	case 2:
		usize = one_in(t, 2) ? rnd(t) : UINT32_MAX >> below(t, 24);
		break;
	default:
		usize = REG_SIZE;
	}
	a.size = usize;
	len = REG_SIZE + 96;
	argp = gen_argp(t, len, &akind, &readable_end);
	if (akind == ARGP_RO) {
		memcpy(&a, argp, sizeof(a));
		kind = K_ANON;
	}
	/*
	 * A registration that may succeed must not send the thread to a
	 * trampoline that is not one, nor use a block the thread does not
	 * keep: only sessions deliver.
	 */
	if (akind != ARGP_RO && readable_end && argp + REG_SIZE <= readable_end) {
		memcpy(argp, &a, sizeof(a));
		if (usize > REG_SIZE && one_in(t, 2)) {
			/* a non-zero byte in the tail, maybe past usize */
			size_t at = REG_SIZE + below(t, 80);

			if (argp + at < readable_end)
				argp[at] = 1 + below(t, 255);
		}
		if (expect_register(t, argp, readable_end, kind) & M(RES_OK)) {
			no_delivery(&a);
			memcpy(argp, &a, sizeof(a));
		}
	} else if (akind == ARGP_STRADDLE) {
		size_t part = readable_end - argp;

		memcpy(argp, &a, part < sizeof(a) ? part : sizeof(a));
	}
	expect = expect_register(t, argp, readable_end, kind);
	snprintf(t->desc, sizeof(t->desc),
		 "REGISTER size %u at %p (%s), ctl %#llx (%s), flags %#x slice %llu upcall %#llx-%#llx nr_ranges %u",
		 usize, argp, akind == ARGP_ARENA ? "arena" : akind == ARGP_STRADDLE ? "straddle" :
		 akind == ARGP_RO ? "read-only" : akind == ARGP_ZEROS ? "zeros" : "bad",
		 (unsigned long long)a.ctl, kind_name[kind],
		 a.flags, (unsigned long long)a.slice_ns, (unsigned long long)a.upcall,
		 (unsigned long long)a.upcall_end, a.nr_ranges);
	r = checked_ioctl(t, fd, IOC_REGISTER, FIBER_PREEMPT_IOC_REGISTER, argp, expect);
	arena_clean(t, akind, argp, len);
	if (r != RES_OK)
		return;
	t->state = HELD;
	t->hold = below(t, 20);
	/* A block on this frame's stack is only good while the frame is. */
	if (kind == K_STACK)
		end_registration(t);
}

static const struct fiber_preempt_version *expected_version(void)
{
	static struct fiber_preempt_version v;

	v.api_version = FIBER_PREEMPT_API_VERSION;
	v.ctl_size = sizeof(struct fiber_preempt_ctl);
	v.register_size = REG_SIZE;
	v.default_slice_ns = ver.default_slice_ns;
	v.min_slice_ns = FIBER_PREEMPT_MIN_SLICE_NS;
	v.max_slice_ns = FIBER_PREEMPT_MAX_SLICE_NS;
	return &v;
}

/* The upper 32 bits of a command are not the kernel's: ioctl() takes an unsigned int. */
static unsigned long high_bits(struct thread *t, unsigned long cmd)
{
	return one_in(t, 16) ? cmd | (rnd(t) << 32) : cmd;
}

static void op_version(struct thread *t)
{
	struct fiber_preempt_version v;
	enum argp_kind akind;
	const char *readable_end;
	unsigned int expect;
	char *argp = gen_argp(t, sizeof(v), &akind, &readable_end);
	int r;

	/* Written by the kernel: a read-only page is as bad as none. */
	if (akind == ARGP_RO)
		readable_end = NULL;
	expect = readable_end && argp + sizeof(v) <= readable_end ? M(RES_OK) : M(RES_EFAULT);
	if (expect == M(RES_OK))
		memset(argp, 0xcc, sizeof(v));
	snprintf(t->desc, sizeof(t->desc), "VERSION to %p", argp);
	r = checked_ioctl(t, pick_fd(t), IOC_VERSION,
			  high_bits(t, FIBER_PREEMPT_IOC_VERSION), argp, expect);
	if (r == RES_OK) {
		memcpy(&v, argp, sizeof(v));
		if (memcmp(&v, expected_version(), sizeof(v)))
			fail(t, "VERSION gave api %u ctl %u register %u pad %#x slices %llu %llu %llu",
			     v.api_version, v.ctl_size, v.register_size, v.__pad,
			     (unsigned long long)v.default_slice_ns,
			     (unsigned long long)v.min_slice_ns, (unsigned long long)v.max_slice_ns);
	}
	arena_clean(t, akind, argp, sizeof(v));
}

static void op_unregister(struct thread *t)
{
	int r;

	snprintf(t->desc, sizeof(t->desc), "UNREGISTER (%s)",
		 t->state == UNREGISTERED ? "not registered" : "registered");
	r = checked_ioctl(t, pick_fd(t), IOC_UNREGISTER,
			  high_bits(t, FIBER_PREEMPT_IOC_UNREGISTER),
			  (void *)(uintptr_t)rnd(t), t->state == UNREGISTERED ? M(RES_ENOENT) : M(RES_OK));
	if (r == RES_OK)
		t->state = UNREGISTERED;
}

/*
 * A command the module does not know: its type with another number, size
 * or direction, or another type that no generic ioctl of the VFS uses.
 */
static void op_unknown(struct thread *t)
{
	static const unsigned int vfs_types[] = { 0x00, 0x15, 'T', 'X', 'f', 0x94 };
	unsigned int cmd, type, i;
	enum argp_kind akind;
	const char *readable_end;
	char *argp = gen_argp(t, 256, &akind, &readable_end);

	do {
		if (one_in(t, 3)) {
			cmd = rnd(t);
		} else {
			cmd = _IOC(below(t, 4), FIBER_PREEMPT_IOC_MAGIC, below(t, 8) ? below(t, 4) :
				   below(t, 256), one_in(t, 2) ? below(t, 256) : below(t, 1 << 14));
		}
		type = _IOC_TYPE(cmd);
		for (i = 0; i < ARRAY_SIZE(vfs_types); i++)
			if (type == vfs_types[i])
				break;
	} while (i < ARRAY_SIZE(vfs_types) ||
		 cmd == FIBER_PREEMPT_IOC_VERSION || cmd == FIBER_PREEMPT_IOC_REGISTER ||
		 cmd == FIBER_PREEMPT_IOC_UNREGISTER);
	snprintf(t->desc, sizeof(t->desc), "ioctl %#x", cmd);
	checked_ioctl(t, pick_fd(t), IOC_UNKNOWN, high_bits(t, cmd), argp, M(RES_ENOTTY));
}

/* Checks fuzz_spin()'s registers: each was added its own step every round. */
static bool spin_checked(struct thread *t, uint64_t rounds)
{
	uint64_t out[SPIN_REGS];
	int i;

	fuzz_spin(rounds, out);
	for (i = 0; i < SPIN_REGS; i++) {
		uint64_t want = (uint64_t)(i + 1) * (rounds + 1);

		if (out[i] != want) {
			fail(t, "spin of %llu rounds: register %d is %#llx, not %#llx",
			     (unsigned long long)rounds, i, (unsigned long long)out[i],
			     (unsigned long long)want);
			return false;
		}
	}
	return true;
}

/*
 * Arguments that deliver to the real trampoline: on x86_64 anywhere or
 * only in the spinning loop, on aarch64 only there; decoy ranges hold no
 * code. slice 0 is the module's default.
 */
static void session_args(struct thread *t, struct fiber_preempt_register *a,
			 struct fiber_preempt_ctl *ctl)
{
	static const uint64_t slices[] = { FIBER_PREEMPT_MIN_SLICE_NS, 20000, 50000, 100000, 0 };
	uint32_t i;

	memset(a, 0, sizeof(*a));
	a->size = REG_SIZE;
	a->flags = one_in(t, 2) ? FIBER_PREEMPT_REG_SAVES_SVE : 0;
	a->ctl = (uintptr_t)ctl;
	a->upcall = (uintptr_t)fuzz_upcall;
	a->upcall_end = (uintptr_t)fuzz_upcall_end;
	a->slice_ns = slices[below(t, 5)];
#if defined(__x86_64__)
	if (one_in(t, 2))
		return;
#endif
	a->nr_ranges = 1 + below(t, FIBER_PREEMPT_MAX_RANGES);
	for (i = 0; i < a->nr_ranges; i++) {
		a->ranges[i].start = 0x10000 + i * 0x1000;
		a->ranges[i].end = a->ranges[i].start + 0x800;
	}
	i = below(t, a->nr_ranges);
	a->ranges[i].start = (uintptr_t)fuzz_spin_loop;
	a->ranges[i].end = (uintptr_t)fuzz_spin_loop_end;
}

static bool counters_add_up(struct thread *t, const struct fiber_preempt_ctl *c,
			    uint64_t upcalls, const char *who)
{
	const __u64 *by = &c->deferred_off;
	uint64_t deferred = 0;
	int i;

	for (i = 0; i < NR_DEFER; i++)
		deferred += by[i];

	if (c->fired != c->delivered + deferred || c->delivered != upcalls || c->in_upcall) {
		fail(t, "%s: fired %llu, delivered %llu, deferred %llu, upcalls run %llu, in_upcall %u",
		     who, (unsigned long long)c->fired, (unsigned long long)c->delivered,
		     (unsigned long long)deferred, (unsigned long long)upcalls, c->in_upcall);
		return false;
	}
	atomic_fetch_add(&sh->fired, c->fired);
	atomic_fetch_add(&sh->deferred, deferred);
	for (i = 0; i < NR_DEFER; i++)
		atomic_fetch_add(&sh->deferred_by[i], by[i]);
	return true;
}

static void do_op(struct thread *t, bool in_session);
static int thread_buffers(struct thread *t);

/* To another CPU (or back to all of them): the timer follows the thread. */
static void session_move(struct thread *t, const char *what)
{
	int k = below(t, CPU_COUNT(&all_cpus)), i;
	cpu_set_t one;

	snprintf(t->desc, sizeof(t->desc), "%s: move", what);
	CPU_ZERO(&one);
	for (i = 0; i < CPU_SETSIZE; i++) {
		if (CPU_ISSET(i, &all_cpus) && k-- == 0) {
			CPU_SET(i, &one);
			break;
		}
	}
	sched_setaffinity(0, sizeof(one), one_in(t, 4) ? &all_cpus : &one);
	count_op(t, NULL);
}

/*
 * A spin with every signal blocked: the mask is not the one the thread
 * registered with, so each firing defers (deferred_signal) until it is
 * restored.
 */
static void session_masked_spin(struct thread *t, const char *what)
{
	sigset_t all, old;

	snprintf(t->desc, sizeof(t->desc), "%s: spin with signals blocked", what);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	spin_checked(t, 2000 + below(t, 30000));
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	count_op(t, &sh->spins);
}

/*
 * A session: a valid registration with the real trampoline and a slice
 * the timer really runs out, spins checked for their registers, random
 * operations meanwhile; then UNREGISTER (0), again (ENOENT), and the
 * counters must add up: every firing delivered or deferred, every
 * delivery run by the trampoline.
 */
static void op_session(struct thread *t)
{
	static const enum ctl_kind kinds[] = {
		K_ANON, K_DATA, K_STACK, K_FILE_PRIVATE, K_HUGE_PRIVATE, K_THP, K_PAGE_END, NR_KINDS
	};
	struct fiber_preempt_register a;
	struct fp_test_ctl stack;
	struct fiber_preempt_ctl *ctl;
	enum ctl_kind kind;
	int fd = pick_fd(t), r, n;
	char what[64];

	end_registration(t);
	kind = kinds[below(t, ARRAY_SIZE(kinds))];
	if (kind == NR_KINDS)
		ctl = t->heap;
	else if (kind == K_STACK)
		ctl = &stack.ctl;
	else if (kind == K_PAGE_END)
		ctl = (void *)(t->edge + PAGE - FIBER_PREEMPT_CTL_ALIGN);
	else if (kind == K_DATA)
		ctl = &data_blocks[t->index];
	else if (t->p->region[kind])
		ctl = (void *)(uintptr_t)slot_in(t, t->p->region[kind], true);
	else
		ctl = t->heap;
	snprintf(what, sizeof(what), "session in %s", kind == NR_KINDS ? "heap" : kind_name[kind]);
	memset(ctl, 0, sizeof(*ctl));
	ctl->size = sizeof(*ctl);
	ctl->preempt_off = one_in(t, 8);
	fuzz_tls.ctl = ctl;
	fuzz_tls.upcalls = 0;
	fuzz_tls.bump = one_in(t, 2);
	session_args(t, &a, ctl);
	snprintf(t->desc, sizeof(t->desc), "REGISTER %s, slice %llu, nr_ranges %u",
		 what, (unsigned long long)a.slice_ns, a.nr_ranges);
	r = checked_ioctl(t, fd, IOC_REGISTER, FIBER_PREEMPT_IOC_REGISTER, &a,
			  t->p->limited ? M(RES_OK) | M(RES_ENOMEM) : M(RES_OK));
	if (r != RES_OK)
		return;
	t->state = SESSION;
	atomic_fetch_add(&sh->sessions, 1);
	for (n = 1 + below(t, 8); n > 0 && !atomic_load(&sh->stop); n--) {
		switch (below(t, 8)) {
		case 0:
			session_move(t, what);
			break;
		case 1:
			session_masked_spin(t, what);
			break;
		case 2: case 3: case 4: case 5:
			snprintf(t->desc, sizeof(t->desc), "%s: spin", what);
			spin_checked(t, 2000 + below(t, 60000));
			count_op(t, &sh->spins);
			break;
		default:
			do_op(t, true);
		}
	}
	snprintf(t->desc, sizeof(t->desc), "%s: UNREGISTER", what);
	if (checked_ioctl(t, pick_fd(t), IOC_UNREGISTER, FIBER_PREEMPT_IOC_UNREGISTER, NULL,
			  M(RES_OK)) != RES_OK) {
		/* Only a closed fd: the registration is still there. */
		checked_ioctl(t, t->fd, IOC_UNREGISTER, FIBER_PREEMPT_IOC_UNREGISTER, NULL, M(RES_OK));
	}
	t->state = UNREGISTERED;
	sched_setaffinity(0, sizeof(all_cpus), &all_cpus);
	snprintf(t->desc, sizeof(t->desc), "%s: UNREGISTER again", what);
	checked_ioctl(t, pick_fd(t), IOC_UNREGISTER, FIBER_PREEMPT_IOC_UNREGISTER, NULL, M(RES_ENOENT));
	if (counters_add_up(t, ctl, fuzz_tls.upcalls, what)) {
		atomic_fetch_add(&sh->upcalls, fuzz_tls.upcalls);
		if (ctl->preempt_off && ctl->delivered)
			fail(t, "%s: %llu deliveries with preempt_off set", what,
			     (unsigned long long)ctl->delivered);
	}
}

/*
 * In a child: registers, spins and checks, unregisters. Exit status: 0
 * fine, 2 REGISTER failed, 3 registers or counters wrong, 4 UNREGISTER
 * failed, 5 still registered after UNREGISTER.
 */
static int child_session(struct thread *t, int fd)
{
	struct fiber_preempt_register a;
	struct fp_test_ctl c;
	uint64_t out[SPIN_REGS];
	int i;

	memset(&c, 0, sizeof(c));
	c.ctl.size = sizeof(c.ctl);
	fuzz_tls.ctl = &c.ctl;
	fuzz_tls.upcalls = 0;
	fuzz_tls.bump = 1;
	session_args(t, &a, &c.ctl);
	if (ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &a))
		return errno == ENOMEM && t->p->limited ? 0 : 2;
	fuzz_spin(5000, out);
	for (i = 0; i < SPIN_REGS; i++)
		if (out[i] != (uint64_t)(i + 1) * 5001)
			return 3;
	if (ioctl(fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL))
		return 4;
	if (!ioctl(fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL) || errno != ENOENT)
		return 5;
	if (c.ctl.delivered != fuzz_tls.upcalls ||
	    c.ctl.fired != c.ctl.delivered + c.ctl.deferred_off + c.ctl.deferred_pc +
	    c.ctl.deferred_upcall + c.ctl.deferred_kernel + c.ctl.deferred_signal +
	    c.ctl.deferred_rseq + c.ctl.deferred_vector)
		return 3;
	return 0;
}

static const char *const child_status[] = {
	"ok", "UNREGISTER in the child did not give ENOENT", "REGISTER in the child failed",
	"registers or counters wrong in the child", "UNREGISTER in the child failed",
	"still registered after UNREGISTER in the child", "no device in the exec'd program",
	"exec'd program still registered",
};

static void check_child(struct thread *t, pid_t pid, const char *what, bool may_be_killed)
{
	int status;

	if (waitpid(pid, &status, 0) != pid) {
		fail(t, "%s: waitpid: %s", what, strerror(errno));
		return;
	}
	if (WIFEXITED(status) && !WEXITSTATUS(status))
		return;
	if (may_be_killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
		atomic_fetch_add(&sh->killed, 1);
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) < ARRAY_SIZE(child_status))
		fail(t, "%s: %s", what, child_status[WEXITSTATUS(status)]);
	else
		fail(t, "%s: status %#x", what, status);
}

/*
 * fork() for an operation: -1 when it failed, a failure of the test unless
 * for want of memory (a pinned huge page is copied at fork: none may be
 * free) or of processes.
 */
static pid_t fork_op(struct thread *t)
{
	pid_t pid = fork();

	if (pid < 0 && errno != ENOMEM && errno != EAGAIN)
		fail(t, "fork: %s", strerror(errno));
	return pid;
}

/* fork(): the child is not registered, whatever its parent is, and may register. */
static void op_fork(struct thread *t)
{
	pid_t pid;

	snprintf(t->desc, sizeof(t->desc), "fork while %s",
		 t->state == UNREGISTERED ? "unregistered" : "registered");
	pid = fork_op(t);
	if (pid < 0)
		return;
	if (!pid) {
		if (!ioctl(t->p->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL) || errno != ENOENT)
			_exit(1);
		_exit(one_in(t, 2) ? child_session(t, t->p->fd) : 0);
	}
	count_op(t, &sh->forks);
	check_child(t, pid, t->desc, false);
}

/* A child that registers, spins and execs this program (which must find no registration) or true. */
static void op_exec(struct thread *t)
{
	bool self = !have_bin_true || one_in(t, 2);
	pid_t pid;

	snprintf(t->desc, sizeof(t->desc), "exec %s while registered", self ? "self" : "true");
	pid = fork_op(t);
	if (pid < 0)
		return;
	if (!pid) {
		struct fiber_preempt_register a;
		struct fp_test_ctl c;
		uint64_t out[SPIN_REGS];

		memset(&c, 0, sizeof(c));
		c.ctl.size = sizeof(c.ctl);
		fuzz_tls.ctl = &c.ctl;
		session_args(t, &a, &c.ctl);
		if (ioctl(t->p->fd, FIBER_PREEMPT_IOC_REGISTER, &a))
			_exit(errno == ENOMEM && t->p->limited ? 0 : 2);
		fuzz_spin(1 + below(t, 10000), out);
		if (self)
			execl(opt.exe, opt.exe, "--exec-child", (char *)NULL);
		else
			execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	count_op(t, &sh->execs);
	check_child(t, pid, t->desc, false);
}

/* The time it takes to wait for a task to be reaped (its exit tracepoint has run). */
static void wait_gone(pid_t tgid, pid_t tid)
{
	int i;

	for (i = 0; i < 20000 && !syscall(SYS_tgkill, tgid, tid, 0); i++)
		usleep(100);
}

/*
 * vfork(): the child registers a block in the parent's memory, spins past
 * its slice with preemption off (so the timer fires and defers, bumping
 * counters) and execs. Once vfork() returns the memory is the parent's
 * again: nothing may write it, though the exec tracepoint that ends the
 * registration comes later.
 */
static void op_vfork(struct thread *t)
{
	struct fiber_preempt_ctl *ctl = &vfork_blocks[t->index];
	struct fiber_preempt_register a;
	struct fiber_preempt_ctl seen;
	int fd = t->p->fd, status;
	uint64_t out[SPIN_REGS];
	pid_t pid;

	snprintf(t->desc, sizeof(t->desc), "vfork, register, exec");
	memset(ctl, 0, sizeof(*ctl));
	ctl->size = sizeof(*ctl);
	ctl->preempt_off = 1;
	memset(&a, 0, sizeof(a));
	a.size = REG_SIZE;
	a.ctl = (uintptr_t)ctl;
	a.upcall = (uintptr_t)fuzz_upcall;
	a.upcall_end = (uintptr_t)fuzz_upcall_end;
	a.slice_ns = FIBER_PREEMPT_MIN_SLICE_NS;
	pid = vfork();
	if (pid < 0) {
		fail(t, "vfork: %s", strerror(errno));
		return;
	}
	if (!pid) {
		if (ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &a))
			_exit(errno == ENOMEM && t->p->limited ? 0 : 2);
		fuzz_spin(20000, out);
		execl(opt.exe, opt.exe, "--exec-child", (char *)NULL);
		_exit(127);
	}
	seen = *ctl;
	count_op(t, &sh->vforks);
	if (waitpid(pid, &status, 0) != pid) {
		fail(t, "waitpid: %s", strerror(errno));
		return;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fail(t, "vfork child: status %#x", status);
		return;
	}
	if (ctl->size == sizeof(*ctl) && memcmp(&seen, ctl, sizeof(seen)))
		fail(t, "the control block of a vfork child was written after its exec gave the parent its memory back: fired %llu -> %llu, deferred_kernel %llu -> %llu",
		     (unsigned long long)seen.fired, (unsigned long long)ctl->fired,
		     (unsigned long long)seen.deferred_kernel,
		     (unsigned long long)ctl->deferred_kernel);
}

struct exiter {
	struct thread *t;
	struct fiber_preempt_ctl *ctl;
	uint64_t rounds;
	int result;
	pid_t tid;
};

static void *exiter_main(void *arg)
{
	struct exiter *e = arg;
	struct fiber_preempt_register a;
	uint64_t out[SPIN_REGS];

	e->tid = gettid();
	fuzz_tls.ctl = e->ctl;
	fuzz_tls.bump = 0;
	session_args(e->t, &a, e->ctl);
	a.slice_ns = FIBER_PREEMPT_MIN_SLICE_NS;
	e->result = ioctl(e->t->p->fd, FIBER_PREEMPT_IOC_REGISTER, &a) ? -errno : 0;
	if (!e->result)
		fuzz_spin(e->rounds, out);
	return NULL;	/* still registered */
}

/*
 * A thread that exits while registered (its slice run out, deliveries
 * on or deferred): once pthread_join() has returned, its control block
 * is the program's to reuse, and nothing may write it any more.
 */
static void op_exit_thread(struct thread *t)
{
	struct fiber_preempt_ctl *ctl = aligned_alloc(FIBER_PREEMPT_CTL_ALIGN, sizeof(*ctl));
	struct fiber_preempt_ctl seen;
	struct exiter e = { .t = t, .ctl = ctl };
	pthread_t tid;

	snprintf(t->desc, sizeof(t->desc), "thread exit while registered");
	if (!ctl) {
		fail(t, "aligned_alloc failed");
		return;
	}
	memset(ctl, 0, sizeof(*ctl));
	ctl->size = sizeof(*ctl);
	/* Delivering, or deferring (the timer still fires and counts). */
	ctl->preempt_off = one_in(t, 2);
	e.rounds = 2000 + below(t, 10000);
	if (pthread_create(&tid, NULL, exiter_main, &e)) {
		fail(t, "pthread_create failed");
		free(ctl);
		return;
	}
	pthread_join(tid, NULL);
	seen = *ctl;
	count_op(t, &sh->exits);
	if (e.result && !(e.result == -ENOMEM && t->p->limited))
		fail(t, "REGISTER in the exiting thread: %s", strerror(-e.result));
	wait_gone(getpid(), e.tid);
	if (!e.result && memcmp(&seen, ctl, sizeof(seen)))
		fail(t, "the control block of a joined thread was written after pthread_join(): fired %llu -> %llu, deferred_kernel %llu -> %llu",
		     (unsigned long long)seen.fired, (unsigned long long)ctl->fired,
		     (unsigned long long)seen.deferred_kernel,
		     (unsigned long long)ctl->deferred_kernel);
	free(ctl);
}

static void *victim_thread(void *arg)
{
	struct thread *t = arg;
	int i;

	for (i = 0; i < 200 && !atomic_load(&sh->stop); i++)
		do_op(t, false);
	return NULL;
}

/*
 * A child process whose two threads run sessions and random ioctls,
 * SIGKILLed at a random moment: registered, mid-ioctl or spinning. It
 * must die of that signal (or have finished first).
 */
static void op_kill(struct thread *t)
{
	uint64_t delay = below(t, 5000);
	uint64_t seed = rnd(t);
	pid_t pid;

	snprintf(t->desc, sizeof(t->desc), "SIGKILL after %llu us", (unsigned long long)delay);
	pid = fork_op(t);
	if (pid < 0)
		return;
	if (!pid) {
		struct thread v[2];
		pthread_t tid;
		int i;

		for (i = 0; i < 2; i++) {
			v[i] = *t;
			v[i].rng = seed + i;
			v[i].victim = true;
			v[i].state = UNREGISTERED;
		}
		/* The second one is new: a block and an arena of its own. */
		v[1].index = MAX_THREADS - 1;
		if (thread_buffers(&v[1]) || pthread_create(&tid, NULL, victim_thread, &v[1]))
			_exit(0);
		victim_thread(&v[0]);
		pthread_join(tid, NULL);
		_exit(0);
	}
	usleep(delay);
	kill(pid, SIGKILL);
	count_op(t, &sh->kills);
	check_child(t, pid, t->desc, true);
}

static void op_signal(struct thread *t)
{
	int i = below(t, opt.threads);

	snprintf(t->desc, sizeof(t->desc), "SIGUSR1 to thread %d", i);
	if (!t->victim && t->p->tid[i])
		pthread_kill(t->p->tid[i], SIGUSR1);
	count_op(t, &sh->signals);
}

/*
 * One operation. Ordinary ones are frequent, the heavy ones (processes,
 * threads) rare; victims do no heavy ones, and a session none that would
 * end its registration.
 */
static void do_op(struct thread *t, bool in_session)
{
	uint64_t w = below(t, 1000);
	bool heavy = !t->victim;

	if (t->state == HELD && t->hold-- <= 0 && !in_session)
		end_registration(t);
	if (w < 450)
		op_register(t);
	else if (w < 570)
		op_version(t);
	else if (w < 670)
		op_unknown(t);
	else if (w < 740)
		in_session ? op_version(t) : op_unregister(t);
	else if (w < 800)
		in_session ? op_unknown(t) : op_session(t);
	else if (w < 830)
		op_signal(t);
	else if (heavy && w < 833)
		op_fork(t);
	else if (heavy && w < 836)
		op_exit_thread(t);
	else if (heavy && w < 838)
		op_exec(t);
	else if (heavy && w < 840)
		op_vfork(t);
	else if (heavy && !in_session && w < 842)
		op_kill(t);
	else
		op_register(t);
}

static void on_usr1(int sig)
{
	struct fiber_preempt_version v;
	int saved = errno;

	ioctl(VOLATILE_FD, FIBER_PREEMPT_IOC_VERSION, &v);
	errno = saved;
}

/* ---- the chaos thread and the process ----------------------------------- */

static void *map_at(char *at, int prot, int flags, int fd)
{
	return mmap(at, PAGE, prot, flags | (at ? MAP_FIXED : 0), fd, 0);
}

/* Fills a page with blocks: the shared slots some good, some too small. */
static void fill_blocks(void *page)
{
	int i;

	for (i = 0; i < (int)SLOTS; i++) {
		struct fiber_preempt_ctl *c = (struct fiber_preempt_ctl *)page + i;

		memset(c, 0, sizeof(*c));
		c->size = i < 24 ? sizeof(*c) : i < 28 ? 64 : 0;
		c->preempt_off = 1;
	}
}

/*
 * Remaps the racy page (private, read-only, no access, shared, a file's,
 * zeroed, unmapped) and reopens or closes the volatile fd, while the
 * other threads register blocks in that page and use that fd.
 */
static void *chaos_main(void *arg)
{
	struct proc *p = arg;
	struct thread c = { .p = p, .index = -1, .rng = seed_for(p->index, 99, 1) };
	char *racy = p->racy;
	bool unmapped = false;
	int fd;

	while (!atomic_load(&sh->stop)) {
		if (unmapped) {
			/*
			 * Back, unless something else took the hole meanwhile
			 * (then the page is someone else's: left alone).
			 */
			if (one_in(&c, 4)) {
				if (mmap(racy, PAGE, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
					 -1, 0) == racy) {
					fill_blocks(racy);
					unmapped = false;
				} else {
					atomic_store(&p->racy_lost, 1);
				}
			}
		} else if (!atomic_load(&p->racy_lost)) {
			switch (below(&c, 10)) {
			case 0:
				if (map_at(racy, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1) != MAP_FAILED)
					fill_blocks(racy);
				break;
			case 1:
				mprotect(racy, PAGE, PROT_READ);
				break;
			case 2:
				mprotect(racy, PAGE, PROT_NONE);
				break;
			case 3:
				map_at(racy, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
				break;
			case 4:
				map_at(racy, PROT_READ | PROT_WRITE,
				       one_in(&c, 2) ? MAP_SHARED : MAP_PRIVATE, p->file_fd);
				break;
			case 5:
				madvise(racy, PAGE, MADV_DONTNEED);
				break;
			case 6:
				unmapped = !munmap(racy, PAGE);
				break;
			default:
				mprotect(racy, PAGE, PROT_READ | PROT_WRITE);
			}
		}
		switch (below(&c, 8)) {
		case 0: case 1:
			fd = fp_open();
			if (fd >= 0) {
				dup2(fd, VOLATILE_FD);
				close(fd);
			}
			break;
		case 2:
			close(VOLATILE_FD);
			break;
		}
		atomic_fetch_add(&sh->chaos, 1);
		usleep(below(&c, 200));
	}
	return NULL;
}

static void *thread_main(void *arg)
{
	struct thread *t = arg;
	uint64_t deadline = sh->deadline_ns;

	while (!atomic_load(&sh->stop)) {
		do_op(t, false);
		if ((t->nr & 15) == 0 &&
		    (atomic_load(&sh->ops) >= opt.max_ops || now_ns() >= deadline))
			atomic_store(&sh->stop, 1);
	}
	end_registration(t);
	return NULL;
}

static char *map_kind(struct proc *p, enum ctl_kind kind)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS, prot = PROT_READ | PROT_WRITE, fd = -1;
	size_t len = PAGE;
	char *m;

	switch (kind) {
	case K_FILE_SHARED:
		flags = MAP_SHARED;
		fd = p->file_fd;
		break;
	case K_FILE_PRIVATE:
		flags = MAP_PRIVATE;
		fd = p->file_fd;
		break;
	case K_SHM_ANON:
		flags = MAP_SHARED | MAP_ANONYMOUS;
		break;
	case K_ZERO_SHARED:
		flags = MAP_SHARED;
		fd = open("/dev/zero", O_RDWR | O_CLOEXEC);
		break;
	case K_HUGE_PRIVATE:
		flags |= MAP_HUGETLB;
		len = HUGE_LEN;
		break;
	case K_HUGE_SHARED:
		flags = MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB;
		len = HUGE_LEN;
		break;
	case K_THP:
		len = 2 * HUGE_LEN;
		break;
	default:
		break;
	}
	m = mmap(NULL, len, prot, flags, fd, 0);
	if (kind == K_ZERO_SHARED && fd >= 0)
		close(fd);
	if (m == MAP_FAILED)
		return NULL;
	if (kind == K_THP) {
		m = (char *)(((uintptr_t)m + HUGE_LEN - 1) & ~(HUGE_LEN - 1));
		madvise(m, HUGE_LEN, MADV_HUGEPAGE);
	}
	/* The private file mapping keeps the file's blocks until written. */
	if (kind != K_FILE_PRIVATE)
		fill_blocks(m);
	if (kind == K_RO)
		mprotect(m, PAGE, PROT_READ);
	if (kind == K_NONE)
		mprotect(m, PAGE, PROT_NONE);
	return m;
}

/*
 * The file-backed kinds use a file in /tmp (tmpfs in the VM) or, in every
 * other process, on the VM's ext4 disk where there is one: page cache
 * with writeback behind it.
 */
static const char *file_dir(struct proc *p)
{
	return p->index % 2 && !access("/mnt/ext4", W_OK) ? "/mnt/ext4" : "/tmp";
}

/* Two pages of a private file mapping, the second beyond the end of its file. */
static char *map_beyond_eof(struct proc *p)
{
	char path[64];
	char *m;
	int fd;

	snprintf(path, sizeof(path), "%s/fp-fuzz-eof-%d", file_dir(p), getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	unlink(path);
	if (ftruncate(fd, PAGE)) {
		close(fd);
		return NULL;
	}
	m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	return m == MAP_FAILED ? NULL : m + PAGE;
}

static int proc_setup(struct proc *p)
{
	static uint64_t page[PAGE / sizeof(uint64_t)];
	char path[64];
	enum ctl_kind k;

	p->fd = fp_open();
	if (p->fd < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/fp-fuzz-%d", file_dir(p), getpid());
	p->file_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (p->file_fd < 0)
		return -1;
	unlink(path);
	fill_blocks(page);
	if (pwrite(p->file_fd, page, PAGE, 0) != PAGE)
		return -1;
	for (k = K_ANON; k < NR_KINDS; k++) {
		switch (k) {
		case K_ANON: case K_RO: case K_NONE: case K_FILE_SHARED: case K_FILE_PRIVATE:
		case K_SHM_ANON: case K_ZERO_SHARED: case K_HUGE_PRIVATE: case K_HUGE_SHARED:
		case K_THP:
			p->region[k] = map_kind(p, k);
			break;
		case K_FILE_EOF:
			p->region[k] = map_beyond_eof(p);
			break;
		case K_DATA:
			fill_blocks(data_blocks);
			p->region[k] = (char *)data_blocks;
			break;
		default:
			break;
		}
	}
	p->racy = map_kind(p, K_ANON);
	if (!p->region[K_ANON] || !p->region[K_RO] || !p->racy)
		return -1;
	return 0;
}

/* The memory a thread puts its arguments and its own blocks in. */
static int thread_buffers(struct thread *t)
{
	struct fiber_preempt_register *a;

	t->arena = mmap(NULL, ARENA_LEN + PAGE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->ro_args = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->edge = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->heap = aligned_alloc(FIBER_PREEMPT_CTL_ALIGN, sizeof(*t->heap));
	t->zeros = mmap(NULL, ZEROS_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			-1, 0);
	if (t->zeros == MAP_FAILED || mprotect(t->zeros, PAGE, PROT_READ | PROT_WRITE) ||
	    t->arena == MAP_FAILED || t->ro_args == MAP_FAILED ||
	    t->edge == MAP_FAILED || !t->heap)
		return -1;
	mprotect(t->arena + ARENA_LEN, PAGE, PROT_NONE);
	mprotect(t->edge + PAGE, PAGE, PROT_NONE);
	fill_blocks(t->edge);
	/* Valid arguments that cannot deliver, in a page the module may only read. */
	a = (void *)t->ro_args;
	a->size = REG_SIZE;
	a->ctl = slot_in(t, t->p->region[K_ANON], false);
	a->upcall = (uintptr_t)fuzz_upcall;
	a->upcall_end = (uintptr_t)fuzz_upcall_end;
	no_delivery(a);
	mprotect(t->ro_args, PAGE, PROT_READ);
	return 0;
}

static int thread_setup(struct thread *t, struct proc *p, int index)
{
	t->p = p;
	t->index = index;
	t->rng = seed_for(p->index, index, 0);
	t->fd = fp_open();
	return t->fd < 0 ? -1 : thread_buffers(t);
}

/* Becomes uid, with an RLIMIT_MEMLOCK of that many pages and no CAP_IPC_LOCK. */
static int become(uid_t uid, long pages)
{
	struct rlimit rl = { .rlim_cur = pages * PAGE, .rlim_max = pages * PAGE };

	if (setrlimit(RLIMIT_MEMLOCK, &rl) || setgroups(0, NULL) ||
	    setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
		return -1;
	return 0;
}

/* A fuzzing process: its threads and its chaos thread until the bounds are met. */
static int proc_main(int index, bool limited)
{
	struct thread threads[MAX_THREADS];
	struct proc p = { .index = index, .limited = limited };
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_RESTART };
	pthread_t chaos;
	int i;

	if (proc_setup(&p) || (limited && become(FUZZ_UID, FUZZ_LIMITED_PAGES)))
		return 10;
	sigaction(SIGUSR1, &sa, NULL);
	memset(threads, 0, sizeof(threads));
	for (i = 0; i < opt.threads; i++)
		if (thread_setup(&threads[i], &p, i))
			return 11;
	i = fp_open();
	if (i < 0 || dup2(i, VOLATILE_FD) != VOLATILE_FD)
		return 12;
	close(i);
	if (pthread_create(&chaos, NULL, chaos_main, &p))
		return 12;
	for (i = 0; i < opt.threads; i++)
		if (pthread_create(&p.tid[i], NULL, thread_main, &threads[i]))
			return 13;
	for (i = 0; i < opt.threads; i++)
		pthread_join(p.tid[i], NULL);
	pthread_join(chaos, NULL);
	return 0;
}

/* ---- the test ------------------------------------------------------------ */

/* The TASK_SIZE the module checks against: upcall_end beyond it is EINVAL, within it ERANGE (slice 1). */
static uint64_t probe_task_size(int fd)
{
	struct fiber_preempt_register a = {
		.size = REG_SIZE, .ctl = 0x10000, .upcall = 0x10000, .slice_ns = 1,
	};
	uint64_t lo = 1ULL << 32, hi = ~0ULL;

	while (hi - lo > 1) {
		a.upcall_end = lo + (hi - lo) / 2;
		if (fp_ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &a) == -ERANGE)
			lo = a.upcall_end;
		else
			hi = a.upcall_end;
	}
	return lo;
}

struct charge_member {
	struct fp_test_ctl c;
	int ret;
};

static void *charge_member(void *arg)
{
	struct charge_member *m = arg;
	struct fiber_preempt_register a;
	int fd = fp_open();

	fp_fill_register(&a, &m->c);
	m->ret = fp_ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &a);
	/* Hold it until the process exits. */
	for (;;)
		pause();
	return NULL;
}

/*
 * As FUZZ_UID with a limit of CHARGE_PAGES: that many registrations fit,
 * one more is ENOMEM. A charge the fuzzing left behind would make room
 * for fewer. Returns how many registered, or -1 if the extra one did too.
 */
static int charges_left(void)
{
	int i, status, ok = 0;
	pid_t pid = fork();

	if (!pid) {
		struct charge_member m[CHARGE_PAGES + 1];
		pthread_t t;

		if (become(FUZZ_UID, CHARGE_PAGES))
			_exit(100);
		for (i = 0; i <= CHARGE_PAGES; i++) {
			m[i].ret = 1;
			if (pthread_create(&t, NULL, charge_member, &m[i]))
				_exit(101);
			while (*(volatile int *)&m[i].ret == 1)
				usleep(1000);
			if (i < CHARGE_PAGES && !m[i].ret)
				ok++;
			if (i == CHARGE_PAGES && m[i].ret != -ENOMEM)
				_exit(99);
		}
		_exit(ok);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -2;
	return WEXITSTATUS(status) == 99 ? -1 : WEXITSTATUS(status);
}

static long hugepages_before = -1;

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long n = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &n) != 1)
		n = -1;
	fclose(f);
	return n;
}

static void write_long(const char *path, long n)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fprintf(f, "%ld\n", n);
		fclose(f);
	}
}

FIXTURE(fuzz) {
	int fd;
	int base;
	int keeper[2];
	pid_t keeper_pid;
};

FIXTURE_SETUP(fuzz)
{
	self->fd = fp_open();
	self->keeper_pid = 0;
	FP_REQUIRE_DEVICE(self->fd);
	self->base = fp_module_refcnt();
	ASSERT_LT(0, self->base);
	/* A few huge pages for the huge page kinds (as root), if none are reserved. */
	hugepages_before = read_long("/proc/sys/vm/nr_hugepages");
	if (!geteuid() && hugepages_before >= 0 && hugepages_before < 16)
		write_long("/proc/sys/vm/nr_hugepages", 16);
}

FIXTURE_TEARDOWN(fuzz)
{
	if (self->keeper_pid > 0) {
		close(self->keeper[1]);
		waitpid(self->keeper_pid, NULL, 0);
	}
	if (self->fd >= 0)
		close(self->fd);
	if (!geteuid() && hugepages_before >= 0 && hugepages_before < 16)
		write_long("/proc/sys/vm/nr_hugepages", hugepages_before);
}

static void print_summary(double secs)
{
	uint64_t ops = atomic_load(&sh->ops);
	int i, r;

	printf("# seed %llu: %llu operations in %.1f s, %.0f ops/s\n",
	       (unsigned long long)opt.seed, (unsigned long long)ops, secs, ops / secs);
	for (i = 0; i < NR_IOC; i++) {
		char line[512];
		int n = snprintf(line, sizeof(line), "# %s:", ioc_name[i]);

		for (r = 0; r < NR_RESULTS; r++)
			if (atomic_load(&sh->tally[i][r]))
				n += snprintf(line + n, sizeof(line) - n, " %s %llu", result_name[r],
					      (unsigned long long)atomic_load(&sh->tally[i][r]));
		printf("%s\n", line);
	}
	{
		char line[512];
		int n = snprintf(line, sizeof(line),
				 "# sessions %llu, spins %llu: slices run out %llu, upcalls %llu, deferred %llu:",
				 (unsigned long long)atomic_load(&sh->sessions),
				 (unsigned long long)atomic_load(&sh->spins),
				 (unsigned long long)atomic_load(&sh->fired),
				 (unsigned long long)atomic_load(&sh->upcalls),
				 (unsigned long long)atomic_load(&sh->deferred));

		for (i = 0; i < NR_DEFER; i++)
			n += snprintf(line + n, sizeof(line) - n, " %s %llu", defer_name[i],
				      (unsigned long long)atomic_load(&sh->deferred_by[i]));
		printf("%s\n", line);
	}
	printf("# forks %llu, execs %llu, vforks %llu, thread exits %llu, kills %llu (%llu died of it), signals %llu, chaos %llu\n",
	       (unsigned long long)atomic_load(&sh->forks),
	       (unsigned long long)atomic_load(&sh->execs),
	       (unsigned long long)atomic_load(&sh->vforks),
	       (unsigned long long)atomic_load(&sh->exits),
	       (unsigned long long)atomic_load(&sh->kills),
	       (unsigned long long)atomic_load(&sh->killed),
	       (unsigned long long)atomic_load(&sh->signals),
	       (unsigned long long)atomic_load(&sh->chaos));
	fflush(stdout);
}

TEST_F_TIMEOUT(fuzz, run, 300)
{
	pid_t pids[MAX_PROCS + 1];
	int nprocs = opt.procs, i, status, bad = 0;
	uint64_t start;
	bool root = !geteuid();
	char b;

	/* This harness runs the body after a SKIP in the setup. */
	if (self->fd < 0)
		SKIP(return, FIBER_PREEMPT_DEVICE " absent: module not loaded");
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, sh);
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_VERSION, &ver));
	task_size = probe_task_size(self->fd);
	have_bin_true = !access("/bin/true", X_OK);
	sched_getaffinity(0, sizeof(all_cpus), &all_cpus);
	TH_LOG("seed %llu, at most %llu operations or %llu s, %d+%d processes of %d threads; TASK_SIZE %#llx",
	       (unsigned long long)opt.seed, (unsigned long long)opt.max_ops,
	       (unsigned long long)opt.seconds, nprocs, root, opt.threads,
	       (unsigned long long)task_size);
	/* Keeps FUZZ_UID's user (and its charges) alive until the end. */
	if (root) {
		ASSERT_EQ(0, pipe2(self->keeper, O_CLOEXEC));
		self->keeper_pid = fork();
		ASSERT_LE(0, self->keeper_pid);
		if (!self->keeper_pid) {
			/* Its copy of the fd would keep the file open past our close. */
			close(self->fd);
			close(self->keeper[1]);
			if (become(FUZZ_UID, 0))
				_exit(1);
			_exit(read(self->keeper[0], &b, 1) < 0);
		}
		close(self->keeper[0]);
		/* The limited process is one more. */
		nprocs++;
	}
	start = now_ns();
	sh->deadline_ns = start + opt.seconds * 1000000000ULL;
	for (i = 0; i < nprocs; i++) {
		pids[i] = fork();
		ASSERT_LE(0, pids[i]);
		if (!pids[i])
			_exit(proc_main(i, root && i == nprocs - 1));
	}
	for (i = 0; i < nprocs; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &status, 0));
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			TH_LOG("process %d: status %#x", i, status);
			bad++;
		}
	}
	print_summary((now_ns() - start) / 1e9);
	for (i = 0; i < NR_MSGS && i < (int)atomic_load(&sh->msgs); i++)
		TH_LOG("%s", sh->msg[i]);
	EXPECT_EQ(0, bad);
	EXPECT_EQ(0, atomic_load(&sh->failures)) TH_LOG("replay: fuzz --seed %llu",
							(unsigned long long)opt.seed);
	/* The timer ran out slices and the trampoline ran. */
	if (atomic_load(&sh->spins) >= 20)
		EXPECT_LT(0, atomic_load(&sh->upcalls));
	/* No registration outlived its thread, process or exec. */
	ASSERT_EQ(self->base, fp_settled_refcnt(self->base));
	if (root)
		EXPECT_EQ(CHARGE_PAGES, charges_left()) TH_LOG("a charge was not given back");
	ASSERT_EQ(self->base, fp_settled_refcnt(self->base));
	close(self->fd);
	self->fd = -1;
	ASSERT_EQ(self->base - 1, fp_settled_refcnt(self->base - 1));
}

/* Run by exec from a registered process: the registration must have ended. */
static int exec_child(void)
{
	int fd = fp_open();

	if (fd < 0)
		return 6;
	if (!ioctl(fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL) || errno != ENOENT)
		return 7;
	return 0;
}

static uint64_t number(const char *s)
{
	return strtoull(s, NULL, 0);
}

/*
 * fuzz [--seed N] [--ops N] [--seconds N] [--procs N] [--threads N]; the
 * first three also from FUZZ_SEED, FUZZ_OPS, FUZZ_SECONDS. The harness
 * gets no arguments.
 */
int main(int argc, char **argv)
{
	static char exe[4096];
	const char *env;
	ssize_t n;
	int i;

	if (argc > 1 && !strcmp(argv[1], "--exec-child"))
		return exec_child();
	opt.seed = now_ns() ^ ((uint64_t)getpid() << 32);
	env = getenv("FUZZ_SEED");
	if (env)
		opt.seed = number(env);
	env = getenv("FUZZ_OPS");
	if (env)
		opt.max_ops = number(env);
	env = getenv("FUZZ_SECONDS");
	if (env)
		opt.seconds = number(env);
	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--seed"))
			opt.seed = number(argv[i + 1]);
		else if (!strcmp(argv[i], "--ops"))
			opt.max_ops = number(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			opt.seconds = number(argv[i + 1]);
		else if (!strcmp(argv[i], "--procs"))
			opt.procs = number(argv[i + 1]);
		else if (!strcmp(argv[i], "--threads"))
			opt.threads = number(argv[i + 1]);
		else
			break;
	}
	if (i < argc || opt.procs < 1 || opt.procs > MAX_PROCS || opt.threads < 1 ||
	    opt.threads > MAX_THREADS - 1) {
		fprintf(stderr, "usage: %s [--seed N] [--ops N] [--seconds N] [--procs 1-%d] [--threads 1-%d]\n",
			argv[0], MAX_PROCS, MAX_THREADS - 1);
		return 2;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	opt.exe = n > 0 ? exe : argv[0];
	printf("# fuzz: seed %llu (replay with --seed %llu)\n",
	       (unsigned long long)opt.seed, (unsigned long long)opt.seed);
	/* The harness's own limit, past the run's: a hang still ends it. */
	_fuzz_run_object.timeout = opt.seconds + 240;
	return test_harness_run(1, argv);
}
