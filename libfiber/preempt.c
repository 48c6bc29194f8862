// SPDX-License-Identifier: MIT
/*
 * Preemption backends and the policy they share.
 *
 * Both backends end the same way: the worker, interrupted at PC, resumes
 * in fiber_upcall_entry with PC in ctl->upcall_pc, and the trampoline
 * saves everything and calls fiber_upcall_handler(). They differ in who
 * decides:
 *  - kmod: the fiber_preempt module's per-thread hrtimer, on CPU time;
 *  - signal: a monitor thread (below) sends SIGURG to a worker whose fiber
 *    has held it for a slice of CPU time, and the handler applies the
 *    module's rules to the ucontext and rewrites its PC, as Go's
 *    asynchronous preemption does.
 *
 * The rules: one fiber held the worker for a slice (ctl->switch_count did
 * not move), no upcall is under way, no signal handler is running (the
 * signal mask is the worker's usual one), preemption is not disabled, and the
 * PC is in the program's own code: the executable's text, minus libfiber
 * when it is linked in statically (its code lives in the libfiber_text
 * section for that reason), plus the libraries the program opted in.
 * Those are checked where the thread was interrupted (by the module, or
 * the signal handler). Then, in the upcall, every frame of the fiber's
 * stack must be in that code too, down to the fiber's first frame: libc
 * calls program code back while it holds locks (qsort, dl_iterate_phdr,
 * fopencookie, a malloc the program defines), and only a walk of the
 * stack (unwind.c) sees that. If a frame is elsewhere, or the stack cannot
 * be walked, the upcall returns to the interrupted instruction at once and
 * the preemption stays pending: the module tries again a slice after the
 * delivery, since the fiber's switch count did not move.
 *
 * rseq critical sections need nothing here: the module resumes an
 * interrupted one at its abort handler, and signal delivery makes the
 * kernel do the same before the handler runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <dlfcn.h>
#include <stdlib.h>

#include "internal.h"
#include "unwind.h"

#define PREEMPT_SIGNAL	SIGURG
#define RETRY_NS	20000ULL

extern const char __start_libfiber_text[] __attribute__((weak)) FIBER_HIDDEN;
extern const char __stop_libfiber_text[] __attribute__((weak)) FIBER_HIDDEN;

void fiber_upcall_handler(struct fiber_upcall_frame *frame) FIBER_HIDDEN;

_Static_assert(sizeof(struct fiber_preempt_ctl) == FIBER_PREEMPT_CTL_ALIGN,
	       "the control block must fill its alignment");
_Static_assert(sizeof(struct fiber_preempt_register) == 176, "UAPI layout changed");

/*
 * An injection point for tests: a program that defines it (and exports
 * it, -rdynamic) is called at the start of every upcall, on the preempted
 * fiber's stack, to look at that stack from inside the trampoline.
 */
extern void fiber_upcall_inject(void) __attribute__((weak));

static void add_range(uint64_t start, uint64_t end)
{
	unsigned int n = fiber_sched.nr_ranges;

	if (start >= end || n == FIBER_PREEMPT_MAX_RANGES)
		return;
	fiber_sched.ranges[n].start = start;
	fiber_sched.ranges[n].end = end;
	fiber_sched.nr_ranges = n + 1;
}

/* Adds [start, end) minus libfiber's own code. */
static void add_program_range(uint64_t start, uint64_t end)
{
	uint64_t lib_start = (uintptr_t)__start_libfiber_text;
	uint64_t lib_end = (uintptr_t)__stop_libfiber_text;

	if (!lib_start || lib_end <= start || lib_start >= end) {
		add_range(start, end);
		return;
	}
	add_range(start, lib_start);
	add_range(lib_end, end);
}

/* Adds an object's code to the preemptible ranges and the walker's index. */
static int add_object(struct dl_phdr_info *info)
{
	unsigned int before = fiber_sched.nr_ranges;
	int i, err;

	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X))
			add_program_range(info->dlpi_addr + ph->p_vaddr,
					  info->dlpi_addr + ph->p_vaddr + ph->p_memsz);
	}
	err = fiber_unwind_add_object(info);
	/* Without CFI its code may not be interrupted: no walk could vouch. */
	if (err)
		fiber_sched.nr_ranges = before;
	return err;
}

/* The first object dl_iterate_phdr() reports is the executable. */
static int find_program_text(struct dl_phdr_info *info, size_t size, void *data)
{
	*(int *)data = add_object(info);
	return 1;
}

struct lib_lookup {
	uintptr_t addr;			/* its load address, from the loader */
	int err;
};

static int find_library(struct dl_phdr_info *info, size_t size, void *data)
{
	struct lib_lookup *l = data;

	if (info->dlpi_addr != l->addr || !info->dlpi_name || !info->dlpi_name[0])
		return 0;
	l->err = add_object(info);
	return 1;
}

/*
 * Makes the loaded object name preemptible and keeps it loaded for good
 * (RTLD_NODELETE), so the walker's index never points at unmapped CFI.
 */
static int add_library(const char *name)
{
	struct lib_lookup l = { .err = -ENOENT };
	struct link_map *map;
	void *handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);

	if (!handle)
		return -ENOENT;
	if (!dlinfo(handle, RTLD_DI_LINKMAP, &map)) {
		l.addr = map->l_addr;
		dl_iterate_phdr(find_library, &l);
	}
	dlclose(handle);
	return l.err == -ENOEXEC || l.err == -ENOSPC ? -ENOSPC : l.err;
}

int fiber_preempt_add_library(const char *name)
{
	void *handle;

	if (!name || !*name)
		return -EINVAL;
	if (fiber_sched.state != FIBER_SCHED_STOPPED)
		return -EBUSY;
	if (fiber_sched.nr_libs == FIBER_PREEMPT_MAX_LIBS)
		return -ENOSPC;
	handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
	if (!handle)
		return -ENOENT;
	dlclose(handle);
	fiber_sched.libs[fiber_sched.nr_libs++] = name;
	return 0;
}

/* FIBER_PREEMPT_LIBS=libz.so.1:libcrypto.so.3 */
static int add_env_libraries(void)
{
	const char *env = getenv("FIBER_PREEMPT_LIBS");
	char name[256];
	size_t len;
	int err;

	while (env && *env) {
		len = strcspn(env, ":");
		if (len && len < sizeof(name)) {
			memcpy(name, env, len);
			name[len] = 0;
			err = add_library(name);
			if (err)
				return err;
		} else if (len) {
			return -ENOENT;
		}
		env += len + (env[len] == ':');
	}
	return 0;
}

/*
 * The CFI of every other object loaded (libfiber, libc, ...), for
 * backtraces and dumps through their frames; not their code, which is
 * never preempted.
 */
static int index_object(struct dl_phdr_info *info, size_t size, void *data)
{
	fiber_unwind_add_object(info);
	return 0;
}

/* The executable's code and the libraries the program named. */
static int find_preemptible_code(void)
{
	unsigned int i;
	int err = -ENOENT;

	fiber_sched.nr_ranges = 0;
	fiber_unwind_reset();
	dl_iterate_phdr(find_program_text, &err);
	/* No CFI in the program: the whole-stack rule keeps it unpreempted. */
	if (err && err != -ENOEXEC)
		return err;
	for (i = 0; i < fiber_sched.nr_libs; i++) {
		err = add_library(fiber_sched.libs[i]);
		if (err)
			return err;
	}
	err = add_env_libraries();
	if (!err)
		dl_iterate_phdr(index_object, NULL);
	return err;
}

static bool pc_preemptible(uint64_t pc)
{
	unsigned int i;

	if (pc >= (uintptr_t)fiber_upcall_entry && pc < (uintptr_t)fiber_upcall_end)
		return false;
	for (i = 0; i < fiber_sched.nr_ranges; i++)
		if (pc >= fiber_sched.ranges[i].start && pc < fiber_sched.ranges[i].end)
			return true;
	return false;
}

/*
 * Whether every frame of the preempted fiber's stack is in preemptible
 * code, walking from the interrupted state to the fiber's first frame.
 */
static bool stack_preemptible(const struct fiber *f, struct fiber_unwind_regs *r,
			      struct fiber_unwind_cache *cache)
{
	int depth;

	for (depth = 0; depth < FIBER_UNWIND_MAX_FRAMES; depth++) {
		if (r->caller && r->pc == (uintptr_t)fiber_entry_ret)
			return true;
		if (!pc_preemptible(r->caller ? r->pc - 1 : r->pc))
			return false;
		if (fiber_unwind_step(r, f->stack_lo, f->stack_hi, cache) != 1)
			return false;
	}
	return false;
}

/* Called by upcall.S on the preempted fiber's stack, its state saved. */
void fiber_upcall_handler(struct fiber_upcall_frame *frame)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber *f = w->current;

	/* While in_upcall is set, the hook (program code) is not preempted. */
	if (f && fiber_upcall_inject)
		fiber_upcall_inject();
	struct fiber_unwind_regs r;

	r.caller = false;
	fiber_unwind_from_upcall(&r, frame);
	if (f && !stack_preemptible(f, &r, w->unwind_cache)) {
		/* Back to the interrupted instruction; the module retries. */
		w->deferred_stack++;
		w->ctl.pending = 1;
		f = NULL;
	}
	w->ctl.in_upcall = 0;
	if (f) {
		/*
		 * Nothing else could run here: a new slice, not a switch.
		 * The ring counts: a completion there makes a fiber runnable
		 * once the worker reaps it. Racy reads: a fiber queued
		 * meanwhile waits one more slice.
		 */
		bool io = fiber_io_pending(w);

		if (fiber_runq_empty(w) && !w->nr_timers && !io) {
			fiber_preempt_slice_begins(w);
		} else {
			/* Fibers whose I/O completed go before this one. */
			w->reap_first = io;
			/* Where fiber_backtrace() starts while it waits. */
			__atomic_store_n(&f->upcall_frame, frame, __ATOMIC_RELAXED);
			fiber_preempted(w);
			__atomic_store_n(&f->upcall_frame, NULL, __ATOMIC_RELAXED);
		}
	}
	/* A preempted fiber resumes on the worker it was preempted on. */
	fiber_arch_upcall_return(frame, &w->sigmask, &w->altstack);
}

/* The kernel fills only its own sigset_t, the first 8 bytes, in a ucontext. */
static bool same_kernel_sigset(const sigset_t *a, const sigset_t *b)
{
	return !memcmp(a, b, sizeof(uint64_t));
}

/* Why the fiber uc interrupted on w is not preemptible, for a stall report. */
static const char *stall_reason(const struct fiber_worker *w, const ucontext_t *uc)
{
	struct fiber_unwind_regs r = { 0 };

	if (fiber_sched.mode == FIBER_PREEMPT_OFF)
		return "preemption is off";
	if (w->ctl.in_upcall)
		return "an upcall was starting";
	if (!same_kernel_sigset(&uc->uc_sigmask, &w->sigmask))
		return "in a signal handler, or a signal blocked";
	if (w->ctl.preempt_off)
		return "preemption disabled (fiber_preempt_disable(), or a lock held)";
	if (!pc_preemptible(fiber_arch_uc_pc(uc)))
		return "in code that is never preempted (a library, libfiber or the loader)";
	fiber_unwind_from_ucontext(&r, uc);
	if (!stack_preemptible(w->current, &r, NULL))
		return "called back by code that is never preempted (a library)";
	return "its slices did not end (its worker was off its CPU)";
}

/* The module's delivery rules (kmod/fiber_preempt.c), on a ucontext. */
static void preempt_signal_handler(int sig, siginfo_t *si, void *ucv)
{
	struct fiber_worker *w = fiber_tls_worker;
	struct fiber_preempt_ctl *ctl;
	ucontext_t *uc = ucv;
	__u64 *counter;
	uint32_t sve_live = 0;
	uint64_t pc;

	/* Only the monitor's signals; it sends the switch count it saw. */
	if (!w || si->si_code != SI_QUEUE || si->si_pid != fiber_sched.pid)
		return;
	if (si->si_value.sival_ptr == FIBER_STALL_SIGNALLED) {
		if (w->current)
			fiber_stall_report(w, uc, stall_reason(w, uc));
		return;
	}
	ctl = &w->ctl;
	if (ctl->switch_count != (uintptr_t)si->si_value.sival_ptr)
		return;			/* the fiber switched meanwhile */
	ctl->fired++;
	pc = fiber_arch_uc_pc(uc);
	if (ctl->in_upcall)
		counter = &ctl->deferred_upcall;
	else if (!same_kernel_sigset(&uc->uc_sigmask, &w->sigmask))
		counter = &ctl->deferred_signal;
	else if (ctl->preempt_off)
		counter = &ctl->deferred_off;
	else if (!pc_preemptible(pc))
		counter = &ctl->deferred_pc;
	else if (!fiber_arch_uc_vector_state(uc, &sve_live))
		counter = &ctl->deferred_vector;
	else
		counter = &ctl->delivered;
	(*counter)++;
	if (counter == &ctl->delivered) {
		ctl->sve_live = sve_live;
		ctl->upcall_pc = pc;
		ctl->in_upcall = 1;
		fiber_arch_uc_set_pc(uc, (uintptr_t)fiber_upcall_entry);
		return;
	}
	ctl->pending = 1;	/* the monitor tries again */
}

static int open_device(void)
{
	struct fiber_preempt_version v;
	int fd = open(FIBER_PREEMPT_DEVICE, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, FIBER_PREEMPT_IOC_VERSION, &v) ||
	    v.api_version != FIBER_PREEMPT_API_VERSION ||
	    v.ctl_size < sizeof(struct fiber_preempt_ctl)) {
		close(fd);
		return -EPROTO;
	}
	return fd;
}

int fiber_preempt_setup(enum fiber_preempt_mode *mode)
{
	struct sigaction sa;
	int fd, err;

	err = find_preemptible_code();
	if (err)
		return err;

	if (*mode == FIBER_PREEMPT_AUTO || *mode == FIBER_PREEMPT_KMOD) {
		fd = open_device();
		if (fd >= 0) {
			fiber_sched.dev_fd = fd;
			*mode = FIBER_PREEMPT_KMOD;
		} else if (*mode == FIBER_PREEMPT_KMOD) {
			return fd == -ENOENT ? -ENODEV : fd;
		} else {
			*mode = FIBER_PREEMPT_SIGNAL;
		}
	}
	/* The stall watcher signals in every mode. */
	if (*mode == FIBER_PREEMPT_SIGNAL || fiber_sched.stall_ns) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = preempt_signal_handler;
		sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
		sigfillset(&sa.sa_mask);
		if (sigaction(PREEMPT_SIGNAL, &sa, NULL))
			return -errno;
	}
	return 0;
}

void fiber_preempt_teardown(void)
{
	if (fiber_sched.dev_fd >= 0) {
		close(fiber_sched.dev_fd);
		fiber_sched.dev_fd = -1;
	}
}

static int register_worker(struct fiber_worker *w)
{
	struct fiber_preempt_register args = {
		.size = sizeof(args),
		.flags = FIBER_PREEMPT_REG_SAVES_SVE,
		.ctl = (uintptr_t)&w->ctl,
		.upcall = (uintptr_t)fiber_upcall_entry,
		.upcall_end = (uintptr_t)fiber_upcall_end,
		.slice_ns = fiber_sched.slice_ns,
		.nr_ranges = fiber_sched.nr_ranges,
	};

	memcpy(args.ranges, fiber_sched.ranges, sizeof(args.ranges));
	if (ioctl(fiber_sched.dev_fd, FIBER_PREEMPT_IOC_REGISTER, &args))
		return -errno;
	return 0;
}

/*
 * The signal backend's monitor, Go's sysmon: every slice or so it looks
 * at each worker that runs a fiber, and when the worker's CPU time has
 * grown by a slice while its switch count stayed the same, one fiber has
 * held it for a slice: it sends the worker SIGURG with that switch count,
 * so the handler can tell a signal that arrives after a switch. CPU time,
 * from the worker's thread clock, makes a worker blocked in a system call
 * no candidate, as the module's timer only runs on a CPU. The part of a
 * slice that passed before the monitor first saw it is taken from the
 * wall clock (slice_start_ns): as much CPU time at most, so a fiber runs
 * about a slice, not up to two; a worker that lost its CPU meanwhile has
 * its fiber's slice shortened once. A deferred
 * preemption is retried after RETRY_NS of the worker's CPU time, doubling
 * up to a slice while it stays deferred (a fiber in a long libc call
 * would otherwise take a signal every 20 us).
 *
 * A worker between two fibers, in its scheduler, is about to run one: the
 * monitor looks again a slice later, as a busy server's workers spend a
 * good part of their time there. When every worker waits for work, the
 * monitor stops looking: it parks on fiber_sched.monitor_parked, and the
 * first worker to wake wakes it (fiber_preempt_worker_wakes()), so a
 * program that wakes now and then costs a monitor wake-up per wake-up,
 * not one per slice, and a fiber that starts to spin on an idle program
 * is still preempted (as soon as the kernel runs the monitor).
 */
static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/*
 * SIGURG for w with value: the switch count the monitor saw, or
 * FIBER_STALL_SIGNALLED. pthread_sigqueue() without the getpid() and
 * getuid() it makes on every call.
 */
void fiber_preempt_signal(struct fiber_worker *w, void *value)
{
	siginfo_t si = {
		.si_signo = PREEMPT_SIGNAL,
		.si_code = SI_QUEUE,
	};

	si.si_pid = fiber_sched.pid;
	si.si_uid = fiber_sched.uid;
	si.si_value.sival_ptr = value;
	syscall(SYS_rt_tgsigqueueinfo, fiber_sched.pid, w->tid, PREEMPT_SIGNAL, &si);
}

/* One look at w; returns how much more of its CPU time may pass before the next. */
static uint64_t monitor_worker(struct fiber_worker *w)
{
	uint64_t sw = __atomic_load_n(&w->ctl.switch_count, __ATOMIC_ACQUIRE);
	uint64_t start = __atomic_load_n(&w->slice_start_ns, __ATOMIC_RELAXED);
	uint64_t cpu = clock_ns(w->cpu_clock);
	uint64_t ran;

	if (sw != w->mon_switch) {
		/* Wall time since it began: at least the CPU time the slice used. */
		ran = clock_ns(CLOCK_MONOTONIC) - start;
		if (ran > fiber_sched.slice_ns)
			ran = fiber_sched.slice_ns;
		w->mon_switch = sw;
		w->mon_deadline = cpu + fiber_sched.slice_ns - ran;
		w->mon_retry = RETRY_NS;
	}
	if (cpu < w->mon_deadline)
		return w->mon_deadline - cpu;
	fiber_preempt_signal(w, (void *)(uintptr_t)sw);
	w->mon_deadline = cpu + w->mon_retry;
	if (w->mon_retry < fiber_sched.slice_ns)
		w->mon_retry *= 2;
	return w->mon_deadline - cpu;
}

static bool all_workers_idle(void)
{
	return __atomic_load_n(&fiber_sched.nr_idle, __ATOMIC_SEQ_CST) ==
	       fiber_sched.nr_workers;
}

/* Waits for fiber_preempt_worker_wakes() or the scheduler's stop. */
static void monitor_park(void)
{
	__atomic_store_n(&fiber_sched.monitor_parked, 1, __ATOMIC_SEQ_CST);
	/* Store, then load: a waking worker does the converse. */
	if (all_workers_idle() &&
	    !__atomic_load_n(&fiber_sched.monitor_stop, __ATOMIC_SEQ_CST))
		syscall(SYS_futex, &fiber_sched.monitor_parked,
			FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
	__atomic_store_n(&fiber_sched.monitor_parked, 0, __ATOMIC_RELAXED);
}

static void monitor_unpark(void)
{
	if (__atomic_exchange_n(&fiber_sched.monitor_parked, 0, __ATOMIC_SEQ_CST))
		syscall(SYS_futex, &fiber_sched.monitor_parked,
			FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void fiber_preempt_worker_wakes(void)
{
	/* Only the signal backend's monitor ever parks. */
	if (__atomic_load_n(&fiber_sched.monitor_parked, __ATOMIC_SEQ_CST))
		monitor_unpark();
}

static void *monitor_main(void *arg)
{
	uint64_t sleep_ns, next;
	struct timespec ts;
	unsigned int i;

	/* The default 50 us of timer slack would stretch short slices. */
	prctl(PR_SET_TIMERSLACK, 1000UL);
	while (!__atomic_load_n(&fiber_sched.monitor_stop, __ATOMIC_ACQUIRE)) {
		sleep_ns = fiber_sched.slice_ns;
		for (i = 0; i < fiber_sched.nr_workers; i++) {
			struct fiber_worker *w = &fiber_sched.workers[i];

			/* Racy: a fiber that starts now is looked at next time. */
			if (!__atomic_load_n(&w->current, __ATOMIC_RELAXED)) {
				w->mon_switch = UINT64_MAX;
				continue;
			}
			next = monitor_worker(w);
			/* CPU time passes no faster than wall time on one CPU. */
			if (next < sleep_ns)
				sleep_ns = next;
		}
		if (all_workers_idle()) {
			monitor_park();
			continue;
		}
		if (sleep_ns < RETRY_NS)
			sleep_ns = RETRY_NS;
		ts.tv_sec = sleep_ns / 1000000000ULL;
		ts.tv_nsec = sleep_ns % 1000000000ULL;
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
	}
	return NULL;
}

int fiber_preempt_sched_started(void)
{
	fiber_sched.pid = getpid();
	fiber_sched.uid = getuid();
	if (fiber_sched.mode != FIBER_PREEMPT_SIGNAL)
		return 0;
	fiber_sched.monitor_stop = false;
	if (pthread_create(&fiber_sched.monitor, NULL, monitor_main, NULL))
		return -EAGAIN;
	fiber_sched.monitor_running = true;
	return 0;
}

void fiber_preempt_sched_stopping(void)
{
	if (!fiber_sched.monitor_running)
		return;
	__atomic_store_n(&fiber_sched.monitor_stop, true, __ATOMIC_SEQ_CST);
	monitor_unpark();
	pthread_join(fiber_sched.monitor, NULL);
	fiber_sched.monitor_running = false;
}

int fiber_preempt_worker_start(struct fiber_worker *w)
{
	/* Without it the upcall walks uncached: slower, still right. */
	w->unwind_cache = fiber_unwind_cache_new();
	pthread_sigmask(SIG_SETMASK, NULL, &w->sigmask);
	sigaltstack(NULL, &w->altstack);
	switch (fiber_sched.mode) {
	case FIBER_PREEMPT_KMOD:
		return register_worker(w);
	case FIBER_PREEMPT_SIGNAL:
		w->mon_switch = UINT64_MAX;
		return -pthread_getcpuclockid(pthread_self(), &w->cpu_clock);
	default:
		return 0;
	}
}

void fiber_preempt_worker_stop(struct fiber_worker *w)
{
	if (fiber_sched.mode == FIBER_PREEMPT_KMOD)
		ioctl(fiber_sched.dev_fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL);
	free(w->unwind_cache);
	w->unwind_cache = NULL;
}
