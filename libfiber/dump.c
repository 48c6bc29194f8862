// SPDX-License-Identifier: MIT
/*
 * Seeing every fiber: the registry of fibers, fiber_dump() and its signal.
 *
 * The registry lists every fiber from its spawn until it is freed (joined
 * or detached and returned), newest first. Spawns and frees change it
 * under a spin lock; a dump only reads it, without the lock, since it may
 * run in a signal handler that interrupted the lock's holder. A dump
 * counts itself in fiber_registry.readers while it reads, and a fiber freed
 * meanwhile is not unmapped until no dump reads: its struct and stack
 * stay readable for a dump that still holds it, and its link leads back
 * into the list. A fiber taken from the stack cache for a new spawn keeps
 * its link for the same reason. What a dump prints of a fiber that
 * changes under it is a snapshot, as any dump of running threads is.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "unwind.h"

#define DUMP_FRAMES	32

static struct {
	uint32_t lock;
	struct fiber *head;		/* atomic: dumps read it without the lock */
	uint64_t last_id;
	unsigned int readers;		/* dumps reading fibers or workers (atomic) */
	struct fiber *unmap_later;	/* freed while a dump read, by ->next */
	/* The running scheduler's workers, for dumps (atomic; NULL: none). */
	struct fiber_worker *workers;
	unsigned int nr_workers;
} fiber_registry;

void fiber_registry_add(struct fiber *f)
{
	fiber_spin_lock(&fiber_registry.lock);
	f->id = ++fiber_registry.last_id;
	f->all_prev = NULL;
	f->all_next = fiber_registry.head;
	if (f->all_next)
		f->all_next->all_prev = f;
	__atomic_store_n(&fiber_registry.head, f, __ATOMIC_RELEASE);
	fiber_spin_unlock(&fiber_registry.lock);
}

/* f's own link stays: a dump that reads f goes on from there. */
void fiber_registry_remove(struct fiber *f)
{
	if (!f->id)
		return;			/* its spawn failed before it was listed */
	fiber_spin_lock(&fiber_registry.lock);
	if (f->all_prev)
		__atomic_store_n(&f->all_prev->all_next, f->all_next, __ATOMIC_RELEASE);
	else
		__atomic_store_n(&fiber_registry.head, f->all_next, __ATOMIC_RELEASE);
	if (f->all_next)
		f->all_next->all_prev = f->all_prev;
	fiber_spin_unlock(&fiber_registry.lock);
}

static void unmap(struct fiber *f)
{
	munmap(f->map, f->map_size);
	free(f);
}

static void dump_begins(void)
{
	__atomic_fetch_add(&fiber_registry.readers, 1, __ATOMIC_SEQ_CST);
}

static void dump_ends(void)
{
	__atomic_fetch_sub(&fiber_registry.readers, 1, __ATOMIC_SEQ_CST);
}

static bool dumps_reading(void)
{
	/* Orders the caller's unlinking before the look: see dump_begins(). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return __atomic_load_n(&fiber_registry.readers, __ATOMIC_SEQ_CST);
}

/*
 * Unmaps a fiber that was removed from the list, or keeps it for later
 * while a dump reads; and unmaps those kept, once none does.
 */
void fiber_registry_unmap(struct fiber *f)
{
	struct fiber *later;

	if (dumps_reading()) {
		fiber_spin_lock(&fiber_registry.lock);
		f->next = fiber_registry.unmap_later;
		fiber_registry.unmap_later = f;
		fiber_spin_unlock(&fiber_registry.lock);
		return;
	}
	unmap(f);
	if (!__atomic_load_n(&fiber_registry.unmap_later, __ATOMIC_RELAXED))
		return;
	/* A dump that starts now cannot reach them: they left the list before. */
	fiber_spin_lock(&fiber_registry.lock);
	later = fiber_registry.unmap_later;
	fiber_registry.unmap_later = NULL;
	fiber_spin_unlock(&fiber_registry.lock);
	while (later) {
		f = later;
		later = f->next;
		unmap(f);
	}
}

/* Waits until no dump reads what was unpublished before the call. */
void fiber_registry_quiesce(void)
{
	while (dumps_reading())
		sched_yield();
}

void fiber_registry_workers_ready(void)
{
	fiber_registry.nr_workers = fiber_sched.nr_workers;
	__atomic_store_n(&fiber_registry.workers, fiber_sched.workers, __ATOMIC_RELEASE);
}

/* Before the workers' memory is freed. */
void fiber_registry_workers_gone(void)
{
	__atomic_store_n(&fiber_registry.workers, NULL, __ATOMIC_RELEASE);
	fiber_registry_quiesce();
}

/* fork(): the child's only thread is the caller; no dump runs there. */
void fiber_registry_forked(void)
{
	fiber_registry.lock = 0;
	fiber_registry.readers = 0;
	fiber_registry.workers = NULL;
}

uint64_t fiber_id(const fiber_t *f)
{
	return f ? f->id : 0;
}

int fiber_set_name(fiber_t *f, const char *name)
{
	size_t len = name ? strnlen(name, FIBER_NAME_MAX - 1) : 0;

	if (!f)
		return -EINVAL;
	/* A dump reading meanwhile sees a mix at worst, never an unterminated name. */
	memcpy(f->name, name ? name : "", len);
	memset(f->name + len, 0, FIBER_NAME_MAX - len);
	return 0;
}

/* ---- text without malloc or stdio ------------------------------------------ */

void fiber_out_flush(struct fiber_out *o)
{
	size_t done = 0;
	ssize_t n;

	while (done < o->len && !o->err) {
		n = write(o->fd, o->buf + done, o->len - done);
		if (n > 0)
			done += n;
		else if (n < 0 && errno != EINTR)
			o->err = -errno;
		else if (!n)
			o->err = -EIO;
	}
	o->len = 0;
}

void fiber_out_str(struct fiber_out *o, const char *s)
{
	while (*s) {
		if (o->len == sizeof(o->buf))
			fiber_out_flush(o);
		o->buf[o->len++] = *s++;
	}
}

static void out_digits(struct fiber_out *o, uint64_t v, unsigned int base, unsigned int min)
{
	char digits[24];
	unsigned int n = sizeof(digits) - 1;

	digits[n] = 0;
	do {
		digits[--n] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v || sizeof(digits) - 1 - n < min);
	fiber_out_str(o, digits + n);
}

void fiber_out_uint(struct fiber_out *o, uint64_t v)
{
	out_digits(o, v, 10, 1);
}

void fiber_out_hex(struct fiber_out *o, uint64_t v)
{
	fiber_out_str(o, "0x");
	out_digits(o, v, 16, 1);
}

/* ns as milliseconds with three decimals. */
void fiber_out_ms(struct fiber_out *o, uint64_t ns)
{
	fiber_out_uint(o, ns / 1000000);
	fiber_out_str(o, ".");
	out_digits(o, ns / 1000 % 1000, 10, 3);
	fiber_out_str(o, " ms");
}

/*
 * One line per address: "\t0x... function+0x12 (object)", or
 * "\t0x... (object+0x1234)" outside the functions known. A return
 * address is named by the call before it (pc - 1): the call may be a
 * function's last instruction.
 */
void fiber_out_backtrace(struct fiber_out *o, void *const *pcs, int n, bool first_exact)
{
	const char *fn, *obj;
	uintptr_t pc, off;
	int i;

	for (i = 0; i < n; i++) {
		pc = (uintptr_t)pcs[i];
		fiber_out_str(o, "\t");
		fiber_out_hex(o, pc);
		if (fiber_symbolize(pc - (i || !first_exact), &fn, &off, &obj)) {
			off += i || !first_exact;
			/* Without a function: the offset in the object, for addr2line. */
			if (fn) {
				fiber_out_str(o, " ");
				fiber_out_str(o, fn);
				fiber_out_str(o, "+");
				fiber_out_hex(o, off);
			}
			fiber_out_str(o, " (");
			fiber_out_str(o, obj);
			if (!fn) {
				fiber_out_str(o, "+");
				fiber_out_hex(o, off);
			}
			fiber_out_str(o, ")");
		}
		fiber_out_str(o, "\n");
	}
}

/* ---- the dump ---------------------------------------------------------------- */

/* The CPU counter and the clock at the first start: the counter's rate. */
static uint64_t base_ticks, base_ns;
/* ns per tick, 32.32 fixed point, measured once; 0 until then. */
static uint64_t ns_per_tick;

/*
 * Time on a worker, from CPU counter ticks: a multiplication, so that
 * fiber_stats() stays cheap for programs that call it in a loop.
 */
uint64_t fiber_ticks_to_ns(uint64_t ticks)
{
	uint64_t mult = __atomic_load_n(&ns_per_tick, __ATOMIC_RELAXED), t, ns;

	if (!mult) {
		/* Over at least 1 ms, for a rate within 0.1%. */
		do {
			t = fiber_arch_ticks();
			ns = fiber_now_ns();
		} while (ns - base_ns < 1000000);
		mult = ((unsigned __int128)(ns - base_ns) << 32) /
		       (t - base_ticks ? t - base_ticks : 1);
		__atomic_store_n(&ns_per_tick, mult, __ATOMIC_RELAXED);
	}
	return (unsigned __int128)ticks * mult >> 32;
}

static const char *io_op_name(unsigned int op)
{
	switch (op) {
	case IORING_OP_READ: return "read";
	case IORING_OP_WRITE: return "write";
	case IORING_OP_READV: return "readv";
	case IORING_OP_WRITEV: return "writev";
	case IORING_OP_RECV: return "recv";
	case IORING_OP_SEND: return "send";
	case IORING_OP_RECVMSG: return "recvmsg";
	case IORING_OP_SENDMSG: return "sendmsg";
	case IORING_OP_ACCEPT: return "accept";
	case IORING_OP_CONNECT: return "connect";
	case IORING_OP_CLOSE: return "close";
	case IORING_OP_OPENAT: return "openat";
	case IORING_OP_FSYNC: return "fsync";
	case IORING_OP_POLL_ADD: return "poll";
	default: return "I/O";
	}
}

/* The worker running f, or -1. */
static int running_on(const struct fiber *f, struct fiber_worker *workers, unsigned int n)
{
	unsigned int i;

	for (i = 0; workers && i < n; i++)
		if (__atomic_load_n(&workers[i].current, __ATOMIC_RELAXED) == f)
			return i;
	return -1;
}

static void out_state(struct fiber_out *o, const struct fiber *f, int worker)
{
	const struct fiber *target;
	enum fiber_state state = __atomic_load_n(&f->state, __ATOMIC_RELAXED);
	uint64_t now;

	if (worker >= 0) {
		fiber_out_str(o, "running on worker ");
		fiber_out_uint(o, worker);
		return;
	}
	if (state == FIBER_DONE) {
		fiber_out_str(o, "returned, not joined");
		return;
	}
	if (state == FIBER_RUNNABLE && !f->stats.runs) {
		fiber_out_str(o, "runnable, not started");
		return;
	}
	if (state == FIBER_RUNNABLE && __atomic_load_n(&f->upcall_frame, __ATOMIC_RELAXED)) {
		fiber_out_str(o, "preempted, runnable");
		return;
	}
	switch (__atomic_load_n(&f->wait, __ATOMIC_ACQUIRE)) {
	case FIBER_WAIT_JOIN:
		target = f->wait_obj;
		fiber_out_str(o, "blocked in join of fiber ");
		fiber_out_uint(o, target ? target->id : 0);
		break;
	case FIBER_WAIT_SLEEP:
		now = fiber_now_ns();
		fiber_out_str(o, "blocked in sleep, ");
		fiber_out_ms(o, f->wake_ns > now ? f->wake_ns - now : 0);
		fiber_out_str(o, " left");
		break;
	case FIBER_WAIT_IO:
		fiber_out_str(o, "blocked in ");
		fiber_out_str(o, io_op_name(f->wait_op));
		fiber_out_str(o, " on fd ");
		if (f->wait_fd < 0) {
			fiber_out_str(o, "-");
			fiber_out_uint(o, -(int64_t)f->wait_fd);
		} else {
			fiber_out_uint(o, f->wait_fd);
		}
		break;
	case FIBER_WAIT_MUTEX:
		fiber_out_str(o, "blocked on fiber mutex ");
		fiber_out_hex(o, (uintptr_t)f->wait_obj);
		break;
	case FIBER_WAIT_COND:
		fiber_out_str(o, "blocked on fiber condition ");
		fiber_out_hex(o, (uintptr_t)f->wait_obj);
		break;
	case FIBER_WAIT_LOCK:
		/* It yields until the lock is free: runnable meanwhile. */
		fiber_out_str(o, "waiting for lock ");
		fiber_out_hex(o, (uintptr_t)f->wait_obj);
		break;
	default:
		fiber_out_str(o, state == FIBER_BLOCKED ? "blocked" : "runnable");
		break;
	}
}

static void out_fiber(struct fiber_out *o, struct fiber *f, struct fiber_worker *workers,
		      unsigned int nr_workers, const ucontext_t *uc)
{
	struct fiber_worker *self = fiber_tls_worker;
	void *pcs[DUMP_FRAMES];
	char name[FIBER_NAME_MAX];
	int worker = running_on(f, workers, nr_workers);
	bool exact = false;
	uint64_t ticks;
	int n = 0;

	memcpy(name, f->name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	fiber_out_str(o, "fiber ");
	fiber_out_uint(o, f->id);
	if (name[0]) {
		fiber_out_str(o, " \"");
		fiber_out_str(o, name);
		fiber_out_str(o, "\"");
	}
	fiber_out_str(o, ": ");
	out_state(o, f, worker);
	if (self && self->current == f)
		fiber_out_str(o, uc ? " (interrupted by the signal)" : " (the caller)");
	fiber_out_str(o, "; ");
	fiber_out_uint(o, f->stats.runs);
	fiber_out_str(o, " runs, ");
	fiber_out_uint(o, f->stats.preemptions);
	fiber_out_str(o, " preemptions, ");
	ticks = f->run_ticks;
	/* Its run under way, as far as its worker's clock says. */
	if (worker >= 0)
		ticks += fiber_arch_ticks() - __atomic_load_n(&workers[worker].run_start,
							      __ATOMIC_RELAXED);
	fiber_out_ms(o, fiber_ticks_to_ns(ticks));
	fiber_out_str(o, " on a worker\n");

	if (self && self->current == f && uc) {
		n = fiber_backtrace_uc(f, uc, pcs, DUMP_FRAMES);
		exact = true;
	} else if (worker < 0 || (self && self->current == f)) {
		n = fiber_backtrace(f, pcs, DUMP_FRAMES);
		exact = !(self && self->current == f) &&
			__atomic_load_n(&f->upcall_frame, __ATOMIC_RELAXED);
	}
	if (n > 0)
		fiber_out_backtrace(o, pcs, n, exact);
}

static void out_worker(struct fiber_out *o, struct fiber_worker *w)
{
	const struct fiber_preempt_ctl *ctl = &w->ctl;
	struct fiber *f = __atomic_load_n(&w->current, __ATOMIC_RELAXED);
	static const struct {
		const char *name;
		size_t offset;
	} deferred[] = {
		{ "off", offsetof(struct fiber_preempt_ctl, deferred_off) },
		{ "pc", offsetof(struct fiber_preempt_ctl, deferred_pc) },
		{ "signal", offsetof(struct fiber_preempt_ctl, deferred_signal) },
		{ "kernel", offsetof(struct fiber_preempt_ctl, deferred_kernel) },
		{ "upcall", offsetof(struct fiber_preempt_ctl, deferred_upcall) },
		{ "rseq", offsetof(struct fiber_preempt_ctl, deferred_rseq) },
		{ "vector", offsetof(struct fiber_preempt_ctl, deferred_vector) },
	};
	unsigned int i;

	fiber_out_str(o, "worker ");
	fiber_out_uint(o, w->index);
	fiber_out_str(o, " (tid ");
	fiber_out_uint(o, w->tid);
	fiber_out_str(o, "): ");
	if (f) {
		fiber_out_str(o, "running fiber ");
		fiber_out_uint(o, f->id);
	} else {
		fiber_out_str(o, "idle");
	}
	fiber_out_str(o, "; ");
	fiber_out_uint(o, w->switches);
	fiber_out_str(o, " switches, ");
	fiber_out_uint(o, ctl->delivered - w->deferred_stack);
	fiber_out_str(o, " preemptions, deferred:");
	for (i = 0; i < sizeof(deferred) / sizeof(deferred[0]); i++) {
		fiber_out_str(o, " ");
		fiber_out_str(o, deferred[i].name);
		fiber_out_str(o, " ");
		fiber_out_uint(o, *(const __u64 *)((const char *)ctl + deferred[i].offset));
	}
	fiber_out_str(o, " stack ");
	fiber_out_uint(o, w->deferred_stack);
	fiber_out_str(o, "; ");
	fiber_out_uint(o, w->io_ops);
	fiber_out_str(o, " I/O ops, ");
	fiber_out_uint(o, w->steals);
	fiber_out_str(o, " steals, ");
	fiber_out_uint(o, __atomic_load_n(&w->wakeups, __ATOMIC_RELAXED));
	fiber_out_str(o, " wake-ups\n");
}

/* The dump; uc: where a signal interrupted the calling thread, or NULL. */
static int dump(int fd, const ucontext_t *uc)
{
	struct fiber_out o = { .fd = fd };
	struct fiber_worker *workers;
	unsigned int i, nr_workers;
	struct fiber *f;
	int saved_errno = errno;

	dump_begins();
	workers = __atomic_load_n(&fiber_registry.workers, __ATOMIC_ACQUIRE);
	nr_workers = workers ? fiber_registry.nr_workers : 0;
	fiber_out_str(&o, "libfiber: ");
	fiber_out_uint(&o, nr_workers);
	fiber_out_str(&o, " workers, preemption ");
	fiber_out_str(&o, workers ? fiber_preempt_mode_name(fiber_sched.mode) : "stopped");
	fiber_out_str(&o, "\n");
	for (f = __atomic_load_n(&fiber_registry.head, __ATOMIC_ACQUIRE); f;
	     f = __atomic_load_n(&f->all_next, __ATOMIC_ACQUIRE))
		out_fiber(&o, f, workers, nr_workers, uc);
	for (i = 0; i < nr_workers; i++)
		out_worker(&o, &workers[i]);
	dump_ends();
	fiber_out_flush(&o);
	errno = saved_errno;
	return o.err;
}

int fiber_dump(int fd)
{
	return dump(fd, NULL);
}

static void dump_signal_handler(int sig, siginfo_t *si, void *uc)
{
	dump(STDERR_FILENO, uc);
}

/* FIBER_DUMP_SIGNAL=QUIT, SIGQUIT or 3: the signal number, or -EINVAL. */
static int parse_signal(const char *name)
{
	char *end;
	long n;
	int sig;

	if (!strncmp(name, "SIG", 3))
		name += 3;
	n = strtol(name, &end, 10);
	if (*name && !*end)
		return n > 0 && n < NSIG ? (int)n : -EINVAL;
	for (sig = 1; sig < NSIG; sig++)
		if (sigabbrev_np(sig) && !strcmp(sigabbrev_np(sig), name))
			return sig;
	return -EINVAL;
}

/* At each start: the symbol tables, and FIBER_DUMP_SIGNAL's handler. */
int fiber_dump_setup(void)
{
	const char *env = getenv("FIBER_DUMP_SIGNAL");
	struct sigaction sa;
	int sig, err;

	if (!base_ns) {
		base_ticks = fiber_arch_ticks();
		base_ns = fiber_now_ns();
	}
	err = fiber_symbols_load();
	if (err || !env || !*env)
		return err;
	sig = parse_signal(env);
	/* SIGURG preempts in signal mode. */
	if (sig == SIGKILL || sig == SIGSTOP ||
	    (sig == SIGURG && fiber_sched.mode == FIBER_PREEMPT_SIGNAL))
		sig = -EINVAL;
	if (sig < 0) {
		struct fiber_out o = { .fd = STDERR_FILENO };

		fiber_out_str(&o, "libfiber: FIBER_DUMP_SIGNAL=");
		fiber_out_str(&o, env);
		fiber_out_str(&o, ": not a signal libfiber can take\n");
		fiber_out_flush(&o);
		return sig;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = dump_signal_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigfillset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL))
		return -errno;
	return 0;
}
