// SPDX-License-Identifier: GPL-2.0
/*
 * Faults a registered worker survives: its control page unmapped or made
 * read-only, a control block in a file of a disk's ext4, SIGSTOP and
 * SIGCONT, a debugger single-stepping it through a preemption, its CPU
 * taken offline, clone(CLONE_VM) and vfork(), and the OOM killer.
 */
#include "kselftest_harness.h"
#include "fp_dev.h"
#include "fiber_test.h"

#include <elf.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>

/* libfiber's trampoline: hidden, seen here because libfiber.a is linked in. */
extern char fiber_upcall_entry[], fiber_upcall_end[];

/*
 * The slice of the raw registrations: short, so the timer fires every
 * 50 us, with a preemptible range that holds none of the code, so it
 * never redirects (the upcall is a stand-in) and counts deferred_pc.
 */
#define DEFER_SLICE_NS	50000ULL
/* Firings a test waits for to know the timer runs. */
#define FIRINGS		20

static void spin_ns(uint64_t ns)
{
	uint64_t end = test_now_ns() + ns;

	while (test_now_ns() < end)
		__asm__ volatile("" ::: "memory");
}

/*
 * Spins until *count, a counter the module bumps, reaches want or limit_ns
 * pass; returns the time it took. A guest CPU under TCG on a busy host
 * may be left idle for tens of milliseconds, its timer firing a few times
 * where it would have fired hundreds: counts, not times, say that the
 * module did something.
 */
static uint64_t spin_until(const __u64 *count, uint64_t want, uint64_t limit_ns)
{
	uint64_t start = test_now_ns(), now = start;

	while (*(const volatile __u64 *)count < want && now - start < limit_ns)
		now = test_now_ns();
	return now - start;
}

static int register_deferring(int fd, void *ctl)
{
	struct fiber_preempt_register args;

	fp_fill_register(&args, ctl);
	args.slice_ns = DEFER_SLICE_NS;
	return fp_ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &args);
}

static int page_size(void)
{
	return sysconf(_SC_PAGESIZE);
}

/* One step of the spinners' work: the end of a chain proves each step ran right. */
static inline uint64_t work_step(uint64_t x)
{
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

static uint64_t work_chain(uint64_t x, uint64_t n)
{
	while (n--)
		x = work_step(x);
	return x;
}

/*
 * Fibers spinning in the program's own code, each publishing in memory
 * the parent may share (a child's fibers) how far it got, how often it
 * was preempted and its worker's thread id.
 */
#define MAX_SPINNERS	4

struct spinner {
	volatile int *stop;
	uint64_t seed;
	volatile uint64_t steps;
	volatile uint64_t preemptions;
	volatile pid_t tid;
	uint64_t hash;			/* where its chain ended */
	uint64_t done;			/* steps when it stopped */
	fiber_t *fiber;
} __attribute__((aligned(128)));	/* no false sharing between workers */

struct crew {
	struct spinner s[MAX_SPINNERS];
	int nr;
	volatile int stop;
};

static void *spinner_main(void *arg)
{
	struct spinner *s = arg;
	struct fiber_stats st;
	uint64_t x = s->seed, n = 0;

	s->tid = gettid();
	while (!*s->stop) {
		x = work_step(x);
		if (++n & 0x3ff)
			continue;
		s->steps = n;
		if (!fiber_stats(fiber_self(), &st))
			s->preemptions = st.preemptions;
	}
	s->hash = x;
	s->done = n;
	return NULL;
}

static int crew_spawn(struct crew *c, int nr)
{
	int i, ret;

	c->nr = nr;
	for (i = 0; i < nr; i++) {
		memset(&c->s[i], 0, sizeof(c->s[i]));
		c->s[i].stop = &c->stop;
		c->s[i].seed = 0x9e3779b97f4a7c15ULL * (i + 1);
		ret = fiber_spawn(&c->s[i].fiber, spinner_main, &c->s[i]);
		if (ret)
			return ret;
	}
	return 0;
}

/* Stops and joins the crew; returns how many chains came out wrong. */
static int crew_finish(struct crew *c)
{
	int i, wrong = 0;

	c->stop = 1;
	for (i = 0; i < c->nr; i++) {
		if (fiber_join(c->s[i].fiber, NULL) ||
		    work_chain(c->s[i].seed, c->s[i].done) != c->s[i].hash)
			wrong++;
	}
	return wrong;
}

/* The fewest preemptions a spinner of the crew has published. */
static uint64_t crew_min_preemptions(struct crew *c)
{
	uint64_t min = UINT64_MAX;
	int i;

	for (i = 0; i < c->nr; i++)
		if (c->s[i].preemptions < min)
			min = c->s[i].preemptions;
	return min;
}

static uint64_t crew_min_steps(struct crew *c)
{
	uint64_t min = UINT64_MAX;
	int i;

	for (i = 0; i < c->nr; i++)
		if (c->s[i].steps < min)
			min = c->s[i].steps;
	return min;
}

/* Waits up to limit_ns for each spinner to be preempted more than floor times. */
static bool crew_preempted_past(struct crew *c, uint64_t floor, uint64_t limit_ns)
{
	uint64_t end = test_now_ns() + limit_ns;

	while (crew_min_preemptions(c) <= floor) {
		if (test_now_ns() > end)
			return false;
		usleep(5000);
	}
	return true;
}

/*
 * A child process whose one worker (kmod, slice_ns) runs nr spinners
 * until c->stop; exits 0 if every chain came out right. c is shared.
 */
static pid_t crew_fork(struct crew *c, int nr, uint64_t slice_ns)
{
	struct fiber_config cfg = {
		.workers = 1, .mode = FIBER_PREEMPT_KMOD, .slice_ns = slice_ns,
	};
	pid_t pid;

	c->nr = nr;
	pid = fork();
	if (pid)
		return pid;
	if (fiber_sched_start(&cfg))
		_exit(10);
	if (crew_spawn(c, nr))
		_exit(11);
	while (!c->stop)
		usleep(10000);
	if (crew_finish(c))
		_exit(12);
	_exit(fiber_sched_stop() ? 13 : 0);
}

static struct crew *crew_shared(void)
{
	struct crew *c = mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return c == MAP_FAILED ? NULL : c;
}

/* Test 5 takes cpu1 offline; teardown brings it back if the test failed. */
#define CPU1_ONLINE	"/sys/devices/system/cpu/cpu1/online"

/* Writes v to a file of /proc or /sys; 0 or -errno. */
static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ret;

	if (!f)
		return -errno;
	ret = fprintf(f, "%ld\n", v) < 0 ? -EIO : 0;
	if (fclose(f) && !ret)
		ret = -errno;
	return ret;
}

/*
 * What test 7 writes to the kernel log before and after the OOM kill it
 * brings about: scripts/vm-run.sh looks for these lines.
 */
#define OOM_EXPECTED	"fiber_preempt selftest: OOM kill expected"
#define OOM_OVER	"fiber_preempt selftest: OOM kill over"

static void kmsg(const char *line)
{
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (write(fd, line, strlen(line)) < 0)
		fprintf(stderr, "# /dev/kmsg: %s\n", strerror(errno));
	close(fd);
}

FIXTURE(faults) {
	int fd;
	int base;
	pid_t child;		/* killed at teardown if a test left it */
	bool cpu1_offline;	/* brought back at teardown */
	bool oom_announced;	/* the kernel log is told it is over at teardown */
};

/*
 * The harness runs a test whose setup skipped, so setup leaves fd at -1
 * without the device and each test skips itself.
 */
FIXTURE_SETUP(faults)
{
	self->fd = fp_open();
	if (self->fd < 0 && errno == ENOENT)
		return;
	ASSERT_LE(0, self->fd) TH_LOG("open: %s", strerror(errno));
	self->base = fp_module_refcnt();
	ASSERT_LT(0, self->base);
}

#define NEED_DEVICE() do {						\
	if (self->fd < 0)						\
		SKIP(return, FIBER_PREEMPT_DEVICE " absent: module not loaded"); \
} while (0)

FIXTURE_TEARDOWN(faults)
{
	if (self->child > 0) {
		kill(self->child, SIGKILL);
		waitpid(self->child, NULL, 0);
	}
	if (self->cpu1_offline)
		write_long(CPU1_ONLINE, 1);
	if (self->oom_announced)
		kmsg(OOM_OVER);
	if (self->fd >= 0)
		close(self->fd);
}

/*
 * 1. The control page unmapped while registered: the module writes the
 * page it pinned, through the kernel's mapping, not whatever the address
 * maps later. A fresh page mapped at the same address (the page the
 * allocator hands out next is most likely the one just freed, had the
 * module not held it) must stay zero while the timer keeps firing; the
 * thread then exits registered and the exit ends the registration.
 */
struct unmapped {
	int fd;
	int ret;
	uint64_t fired;
	int dirty;
};

static void *unmapped_main(void *arg)
{
	struct unmapped *u = arg;
	int ps = page_size(), i;
	struct fiber_preempt_ctl *ctl;
	unsigned char *fresh;
	uint64_t took;

	ctl = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED) {
		u->ret = -errno;
		return NULL;
	}
	u->ret = register_deferring(u->fd, ctl);
	if (u->ret)
		return NULL;
	took = spin_until(&ctl->fired, FIRINGS, 10000000000ULL);
	u->fired = ctl->fired;
	munmap(ctl, ps);
	fresh = mmap(ctl, ps, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (fresh != (void *)ctl) {
		u->ret = -EADDRINUSE;
		return NULL;
	}
	memset(fresh, 0, ps);
	/* As long as a hundred firings took before, 100 ms at least. */
	spin_ns(took * 100 / FIRINGS > 100000000 ? took * 100 / FIRINGS : 100000000);
	for (i = 0; i < ps; i++)
		u->dirty += fresh[i] != 0;
	return NULL;
}

TEST_F(faults, ctl_page_unmapped)
{
	struct unmapped u = { .fd = self->fd };
	pthread_t t;

	NEED_DEVICE();
	ASSERT_EQ(0, pthread_create(&t, NULL, unmapped_main, &u));
	ASSERT_EQ(0, pthread_join(t, NULL));
	ASSERT_EQ(0, u.ret);
	/* The timer did fire while the page was mapped. */
	ASSERT_LE(FIRINGS, u.fired);
	ASSERT_EQ(0, u.dirty) TH_LOG("the new page at the old address was written");
	ASSERT_EQ(self->base, fp_settled_refcnt(self->base));
}

/*
 * The control page made read-only while registered: the module goes on
 * counting into it (through its own mapping), the user still reads it.
 */
TEST_F(faults, ctl_page_read_only)
{
	int ps = page_size();
	struct fiber_preempt_ctl *ctl = mmap(NULL, ps, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t fired, deferred_pc;

	NEED_DEVICE();
	ASSERT_NE(MAP_FAILED, ctl);
	ASSERT_EQ(0, register_deferring(self->fd, ctl));
	spin_until(&ctl->fired, FIRINGS, 10000000000ULL);
	ASSERT_EQ(0, mprotect(ctl, ps, PROT_READ));
	fired = ctl->fired;
	deferred_pc = ctl->deferred_pc;
	ASSERT_LE(FIRINGS, fired);
	spin_until(&ctl->fired, fired + FIRINGS, 10000000000ULL);
	EXPECT_LE(fired + FIRINGS, ctl->fired);
	EXPECT_LT(deferred_pc, ctl->deferred_pc);
	EXPECT_EQ(0, ctl->delivered);
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
	ASSERT_EQ(self->base, fp_module_refcnt());
	munmap(ctl, ps);
}

/*
 * 2. A file on a real block device's file system (the VM mounts an ext4
 * disk there) that holds a control block, mapped and registered as it
 * is, unwritten by the process. Mapped shared it is refused: the module
 * would change page cache behind the file system's back. Mapped private
 * it is taken, the module's pin making the process its own copy, and the
 * file stays as it was, in the page cache and on the disk (O_DIRECT).
 */
#define EXT4_DIR	"/mnt/ext4"

static bool is_ext4(const char *dir)
{
	struct statfs st;

	return !statfs(dir, &st) && st.f_type == EXT4_SUPER_MAGIC;
}

/* The file's first page: a control block (its size set), the rest 0xa5. */
static void ctl_file_page(unsigned char *page, int ps)
{
	__u32 size = sizeof(struct fiber_preempt_ctl);

	memset(page, 0xa5, ps);
	memcpy(page + offsetof(struct fiber_preempt_ctl, size), &size, sizeof(size));
}

/* A file of that page, written to the disk: its fd, or -errno. */
static int ctl_file(const char *path)
{
	int ps = page_size();
	unsigned char page[ps];
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	ctl_file_page(page, ps);
	if (pwrite(fd, page, ps, 0) != ps || fsync(fd)) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/* Bytes of the file's first page that changed, read with flags; or -errno. */
static int ctl_file_changed(const char *path, int flags)
{
	int ps = page_size(), fd, i, changed = 0;
	unsigned char *buf, page[ps];

	ctl_file_page(page, ps);
	/* O_DIRECT wants an aligned buffer. */
	if (posix_memalign((void **)&buf, ps, ps))
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | flags);
	if (fd < 0 || pread(fd, buf, ps, 0) != ps) {
		changed = -EIO;
	} else {
		for (i = 0; i < ps; i++)
			changed += buf[i] != page[i];
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return changed;
}

/* Registers the block at ctl as it is, without writing it first. */
static int register_deferring_as_is(int fd, struct fiber_preempt_ctl *ctl)
{
	struct fiber_preempt_register args;
	struct fp_test_ctl scratch;

	fp_fill_register(&args, &scratch);
	args.ctl = (uintptr_t)ctl;
	args.slice_ns = DEFER_SLICE_NS;
	return fp_ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &args);
}

TEST_F(faults, ctl_in_ext4_file)
{
	const char *path = EXT4_DIR "/fp-ctl";
	int ps = page_size(), cfd;
	struct fiber_preempt_ctl *ctl;
	uint64_t fired;

	NEED_DEVICE();
	if (!is_ext4(EXT4_DIR))
		SKIP(return, "no ext4 file system mounted at " EXT4_DIR);
	cfd = ctl_file(path);
	ASSERT_LE(0, cfd) TH_LOG("%s: %s", path, strerror(-cfd));

	ctl = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	ASSERT_NE(MAP_FAILED, ctl);
	ASSERT_EQ(-EOPNOTSUPP, register_deferring_as_is(self->fd, ctl));
	ASSERT_EQ(self->base, fp_module_refcnt());
	munmap(ctl, ps);

	ctl = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE, cfd, 0);
	ASSERT_NE(MAP_FAILED, ctl);
	ASSERT_EQ(0, register_deferring_as_is(self->fd, ctl));
	/* The file's 0xa5 bytes, and then what the module counted. */
	fired = ctl->fired;
	spin_until(&ctl->fired, fired + FIRINGS, 10000000000ULL);
	EXPECT_LE(fired + FIRINGS, ctl->fired);
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
	munmap(ctl, ps);
	close(cfd);
	EXPECT_EQ(0, ctl_file_changed(path, 0));
	EXPECT_EQ(0, ctl_file_changed(path, O_DIRECT));
	unlink(path);
	ASSERT_EQ(self->base, fp_module_refcnt());
}

/*
 * 3. SIGSTOP and SIGCONT of a process whose worker is being preempted:
 * it stops whole (nothing moves while it is stopped), and once continued
 * preemptions go on, both fibers progress, and their chains come out
 * right: no delivery was lost half-way (a worker left with in_upcall set
 * would never be preempted again). Short stops follow the long one, to
 * stop it at more points of a preemption.
 */
TEST_F_TIMEOUT(faults, stop_and_continue, 60)
{
	struct crew *c = crew_shared();
	uint64_t preempted, steps;
	int status, i;
	pid_t pid;

	NEED_DEVICE();

	ASSERT_NE(NULL, c);
	pid = self->child = crew_fork(c, 2, 1000000);
	ASSERT_LT(0, pid);
	ASSERT_TRUE(crew_preempted_past(c, 2, 20000000000ULL));

	ASSERT_EQ(0, kill(pid, SIGSTOP));
	ASSERT_EQ(pid, waitpid(pid, &status, WUNTRACED));
	ASSERT_TRUE(WIFSTOPPED(status));
	steps = c->s[0].steps + c->s[1].steps;
	usleep(200000);
	ASSERT_EQ(steps, c->s[0].steps + c->s[1].steps);
	preempted = crew_min_preemptions(c);
	steps = crew_min_steps(c);
	ASSERT_EQ(0, kill(pid, SIGCONT));
	ASSERT_EQ(pid, waitpid(pid, &status, WCONTINUED));
	ASSERT_TRUE(WIFCONTINUED(status));
	ASSERT_TRUE(crew_preempted_past(c, preempted + 3, 20000000000ULL));
	ASSERT_LT(steps, crew_min_steps(c));

	for (i = 0; i < 20; i++) {
		ASSERT_EQ(0, kill(pid, SIGSTOP));
		ASSERT_EQ(pid, waitpid(pid, &status, WUNTRACED));
		usleep(2000);
		ASSERT_EQ(0, kill(pid, SIGCONT));
		usleep(3000 + 1000 * (i % 5));
	}
	preempted = crew_min_preemptions(c);
	ASSERT_TRUE(crew_preempted_past(c, preempted + 3, 20000000000ULL));

	c->stop = 1;
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	self->child = 0;
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
	ASSERT_EQ(self->base, fp_module_refcnt());
}

/*
 * 4. A debugger single-steps a worker (PTRACE_SEIZE of its thread) while
 * its slices run out, so that the module redirects it between two steps:
 * the next step lands in the trampoline, and the debugger goes on
 * stepping through it into the upcall handler. After the debugger
 * detaches, the fibers are still preempted and their chains come out
 * right.
 */
#define STEP_SLICE_NS	50000ULL
/* A step costs 2 to 20 ms under TCG: at most 40 s of them. */
#define MAX_STEPS	5000
#define MAX_STEPPING_NS	40000000000ULL

static int step_regs(pid_t tid, struct user_regs_struct *regs)
{
	struct iovec iov = { .iov_base = regs, .iov_len = sizeof(*regs) };

	return ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) ? -errno : 0;
}

#if defined(__x86_64__)
#define REGS_PC(r)	((r).rip)
#define REGS_SP(r)	((r).rsp)

/*
 * x86 leaves TF, the flag single-stepping sets, for the debugger to keep
 * out of the program ("a debugger could emulate this all in user space
 * if it _really_ cares", arch/x86/kernel/step.c), and the trampoline
 * keeps what it finds: it saves the fiber's flags with PUSHFQ and
 * restores them with POPFQ when the fiber runs again, maybe long after
 * the debugger left, which would then trap at every instruction
 * (SIGTRAP kills it). So, as a careful debugger does: clear TF in what a
 * stepped PUSHF pushed, and in the thread's flags when leaving it, since
 * once a stepped POPF has loaded the flags the kernel takes TF for the
 * program's own and no longer clears it at detach.
 */
#define X86_TF		0x100

static bool at_pushf(pid_t tid, uint64_t pc)
{
	long insn;

	errno = 0;
	insn = ptrace(PTRACE_PEEKTEXT, tid, pc, NULL);
	return !errno && (insn & 0xff) == 0x9c;
}

/* Returns 0 or -errno. */
static int after_pushf(pid_t tid, const struct user_regs_struct *regs)
{
	long flags;

	errno = 0;
	flags = ptrace(PTRACE_PEEKDATA, tid, REGS_SP(*regs), NULL);
	if (errno)
		return -errno;
	return ptrace(PTRACE_POKEDATA, tid, REGS_SP(*regs), flags & ~X86_TF) ? -errno : 0;
}

static int before_detach(pid_t tid, struct user_regs_struct *regs)
{
	struct iovec iov = { .iov_base = regs, .iov_len = sizeof(*regs) };

	if (!(regs->eflags & X86_TF))
		return 0;
	regs->eflags &= ~X86_TF;
	return ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) ? -errno : 0;
}
#elif defined(__aarch64__)
#define REGS_PC(r)	((r).pc)
#define REGS_SP(r)	((r).sp)

/* The trampoline reads NZCV alone: PSTATE.SS, the step state, stays the kernel's. */
static bool at_pushf(pid_t tid, uint64_t pc)
{
	return false;
}

static int after_pushf(pid_t tid, const struct user_regs_struct *regs)
{
	return 0;
}

static int before_detach(pid_t tid, struct user_regs_struct *regs)
{
	return 0;
}
#else
#error "unsupported architecture"
#endif

/* One step of the stopped tid; its registers after it in *regs. Returns 0 or -errno. */
static int single_step(pid_t tid, struct user_regs_struct *regs)
{
	bool pushf = at_pushf(tid, REGS_PC(*regs));
	int status;

	if (ptrace(PTRACE_SINGLESTEP, tid, NULL, NULL))
		return -errno;
	if (waitpid(tid, &status, __WALL) != tid)
		return -errno;
	if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
		return -EINTR;
	if (step_regs(tid, regs))
		return -errno;
	return pushf ? after_pushf(tid, regs) : 0;
}

static bool in_trampoline(uint64_t pc)
{
	return pc >= (uintptr_t)fiber_upcall_entry && pc < (uintptr_t)fiber_upcall_end;
}

/*
 * A thread the module redirects stops at the trampoline's first or second
 * instruction; it comes back into the trampoline further on when the
 * upcall handler returns (the debugger may also have caught it in there).
 */
static bool at_trampoline_entry(uint64_t pc)
{
	return pc >= (uintptr_t)fiber_upcall_entry && pc < (uintptr_t)fiber_upcall_entry + 16;
}


TEST_F_TIMEOUT(faults, single_step_through_preemption, 120)
{
	struct crew *c = crew_shared();
	struct user_regs_struct regs;
	int status, steps, ret, entered = 0;
	uint64_t preempted, give_up;
	bool through = false, ok;
	pid_t tid;

	NEED_DEVICE();
	ASSERT_NE(NULL, c);
	self->child = crew_fork(c, 2, STEP_SLICE_NS);
	ASSERT_LT(0, self->child);
	ASSERT_TRUE(crew_preempted_past(c, 2, 20000000000ULL));
	/* One worker: both fibers run on its thread. */
	tid = c->s[0].tid;
	ASSERT_EQ(tid, c->s[1].tid);

	ASSERT_EQ(0, ptrace(PTRACE_SEIZE, tid, NULL, NULL)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, ptrace(PTRACE_INTERRUPT, tid, NULL, NULL));
	ASSERT_EQ(tid, waitpid(tid, &status, __WALL));
	ASSERT_TRUE(WIFSTOPPED(status));
	ASSERT_EQ(0, step_regs(tid, &regs));
	/*
	 * Until the PC steps into the trampoline (a redirect in one of 800
	 * to 2300 steps here) and on through it, the state saved, into the
	 * upcall handler (some 50 steps on), which runs on after the
	 * debugger left.
	 */
	give_up = test_now_ns() + MAX_STEPPING_NS;
	for (steps = 0; steps < MAX_STEPS && test_now_ns() < give_up; steps++) {
		bool was_inside = in_trampoline(REGS_PC(regs));

		ret = single_step(tid, &regs);
		ASSERT_EQ(0, ret) TH_LOG("step %d: %s", steps, strerror(-ret));
		if (!entered && !was_inside && at_trampoline_entry(REGS_PC(regs)))
			entered = steps + 1;
		through = entered && was_inside && !in_trampoline(REGS_PC(regs));
		if (through)
			break;
	}
	ASSERT_EQ(0, before_detach(tid, &regs));
	ASSERT_EQ(0, ptrace(PTRACE_DETACH, tid, NULL, NULL));
	TH_LOG("the trampoline entered at step %d, left for the handler at step %d",
	       entered, steps + 1);
	ASSERT_LT(0, entered);
	ASSERT_TRUE(through);

	/* A fiber that ran on with TF set would have killed it (SIGTRAP). */
	preempted = crew_min_preemptions(c);
	status = 0;
	ok = crew_preempted_past(c, preempted + 3, 20000000000ULL);
	if (!ok && waitpid(self->child, &status, WNOHANG) == self->child)
		self->child = 0;
	ASSERT_TRUE(ok) TH_LOG("the child %s, status %#x", self->child ? "runs" : "died", status);
	c->stop = 1;
	ASSERT_EQ(self->child, waitpid(self->child, &status, 0));
	self->child = 0;
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status));
	ASSERT_EQ(self->base, fp_module_refcnt());
}

/*
 * 5. CPU hotplug: the CPU a worker runs on goes offline (its threads
 * move, its timers with them) and comes back, a few times, while workers
 * are preempted; preemptions go on and the chains come out right.
 */
static uint64_t crew_sum_preemptions(struct crew *c)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < c->nr; i++)
		sum += c->s[i].preemptions;
	return sum;
}

/* Waits up to limit_ns for the crew's preemptions to pass floor. */
static bool crew_sum_past(struct crew *c, uint64_t floor, uint64_t limit_ns)
{
	uint64_t end = test_now_ns() + limit_ns;

	while (crew_sum_preemptions(c) <= floor) {
		if (test_now_ns() > end)
			return false;
		usleep(5000);
	}
	return true;
}

TEST_F_TIMEOUT(faults, cpu_hotplug, 120)
{
	struct fiber_config cfg = {
		.workers = 2, .mode = FIBER_PREEMPT_KMOD, .slice_ns = 1000000,
	};
	struct crew c = { 0 };
	int i, ret;

	NEED_DEVICE();
	if (access(CPU1_ONLINE, W_OK))
		SKIP(return, CPU1_ONLINE ": %s", strerror(errno));
	FIBER_START(&cfg);
	ASSERT_EQ(0, crew_spawn(&c, 4));
	ASSERT_TRUE(crew_sum_past(&c, 5, 20000000000ULL));
	for (i = 0; i < 3; i++) {
		ret = write_long(CPU1_ONLINE, 0);
		if (ret && !i) {
			crew_finish(&c);
			fiber_sched_stop();
			SKIP(return, "cpu1 cannot go offline: %s", strerror(-ret));
		}
		ASSERT_EQ(0, ret);
		self->cpu1_offline = true;
		ASSERT_TRUE(crew_sum_past(&c, crew_sum_preemptions(&c) + 5, 20000000000ULL));
		ASSERT_EQ(0, write_long(CPU1_ONLINE, 1));
		self->cpu1_offline = false;
		ASSERT_TRUE(crew_sum_past(&c, crew_sum_preemptions(&c) + 5, 20000000000ULL));
	}
	ASSERT_EQ(0, crew_finish(&c));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(self->base, fp_module_refcnt());
}

/*
 * 6. A registered worker's fiber starts a thread of its own memory with
 * clone(CLONE_VM) (a stack of its own, some code run there) and a child
 * with vfork() (which exits, or execs): neither child inherits the
 * registration (its own unregister finds none; the clone registers
 * itself and unregisters), and the worker's registration goes on.
 */
struct forks {
	int fd;
	struct fp_test_ctl tctl;
	int clone_status;
	int vfork_status;
	int exec_status;
	int err;
};

/*
 * Without CLONE_SETTLS the clone shares its parent's thread-local storage:
 * it touches none of it but errno, while the parent waits for it.
 */
static int clone_main(void *arg)
{
	struct forks *f = arg;
	struct fiber_preempt_register args;

	if (ioctl(f->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL) != -1 || errno != ENOENT)
		return 1;
	/* Code of the registered process's memory, run by a task that is not registered. */
	if (work_chain(1, 1000000) != work_chain(work_chain(1, 500000), 500000))
		return 2;
	fp_fill_register(&args, &f->tctl);
	if (ioctl(f->fd, FIBER_PREEMPT_IOC_REGISTER, &args))
		return 3;
	if (ioctl(f->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL))
		return 4;
	return 0;
}

static void *forker_main(void *arg)
{
	const size_t stack_size = 256 << 10;
	struct forks *f = arg;
	char *stack;
	pid_t pid;

	stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED) {
		f->err = -errno;
		return NULL;
	}
	pid = clone(clone_main, stack + stack_size, CLONE_VM | SIGCHLD, f);
	if (pid < 0 || waitpid(pid, &f->clone_status, 0) != pid)
		f->err = -ECHILD;
	munmap(stack, stack_size);

	pid = vfork();
	if (!pid)
		_exit(ioctl(f->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL) == -1 && errno == ENOENT ?
		      0 : 1);
	if (pid < 0 || waitpid(pid, &f->vfork_status, 0) != pid)
		f->err = -ECHILD;

	pid = vfork();
	if (!pid) {
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &f->exec_status, 0) != pid)
		f->err = -ECHILD;
	return NULL;
}

TEST_F(faults, clone_vm_and_vfork)
{
	struct fiber_config cfg = {
		.workers = 1, .mode = FIBER_PREEMPT_KMOD, .slice_ns = 1000000,
	};
	struct forks *f = aligned_alloc(FIBER_PREEMPT_CTL_ALIGN, sizeof(*f));
	struct crew c = { 0 };
	uint64_t preempted;
	fiber_t *forker;

	NEED_DEVICE();
	ASSERT_NE(NULL, f);
	memset(f, 0, sizeof(*f));
	f->fd = self->fd;
	FIBER_START(&cfg);
	/* Two: a fiber alone on its worker is given a new slice, not preempted. */
	ASSERT_EQ(0, crew_spawn(&c, 2));
	ASSERT_TRUE(crew_preempted_past(&c, 1, 20000000000ULL));
	ASSERT_EQ(0, fiber_spawn(&forker, forker_main, f));
	ASSERT_EQ(0, fiber_join(forker, NULL));
	ASSERT_EQ(0, f->err);
	EXPECT_EQ(0, f->clone_status) TH_LOG("clone(CLONE_VM) child: %#x", f->clone_status);
	EXPECT_EQ(0, f->vfork_status) TH_LOG("vfork() child: %#x", f->vfork_status);
	EXPECT_EQ(0, f->exec_status) TH_LOG("vfork() and exec: %#x", f->exec_status);
	preempted = crew_min_preemptions(&c);
	ASSERT_TRUE(crew_preempted_past(&c, preempted + 3, 20000000000ULL));
	ASSERT_EQ(0, crew_finish(&c));
	ASSERT_EQ(0, fiber_sched_stop());
	ASSERT_EQ(self->base, fp_module_refcnt());
	free(f);
}

/*
 * 7. The OOM killer kills a process whose workers are registered and
 * being preempted (it asks to be the one, oom_score_adj 1000). Its
 * registrations end with it, and the module takes new ones. The test
 * exhausts the machine's memory, so it runs only on a small one (the
 * VM's 1 GiB), and it tells the kernel log (scripts/vm-run.sh leaves
 * the OOM report's stack trace out of its check between the two lines).
 */
#define OOM_MAX_KIB	(2L << 20)

/* A line of /proc/meminfo, in KiB; -1 if absent. */
static long meminfo_kib(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long kib = -1;

	if (!f)
		return -1;
	while (kib < 0 && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
			kib = strtol(line + strlen(key) + 1, NULL, 10);
	fclose(f);
	return kib;
}

/* Registers a worker, has it preempted, then takes memory until killed. */
static void oom_child(struct crew *c, long total_kib)
{
	struct fiber_config cfg = {
		.workers = 1, .mode = FIBER_PREEMPT_KMOD, .slice_ns = 1000000,
	};
	const size_t chunk = 64 << 20;
	size_t taken = 0;

	if (write_long("/proc/self/oom_score_adj", 1000))
		_exit(20);
	if (fiber_sched_start(&cfg) || crew_spawn(c, 2))
		_exit(21);
	while (crew_min_preemptions(c) < 2)
		usleep(5000);
	/* Past twice the memory there is, something is wrong: stop. */
	while (taken < 2 * (size_t)total_kib << 10) {
		if (mmap(NULL, chunk, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0) != MAP_FAILED)
			taken += chunk;
	}
	_exit(22);
}

TEST_F_TIMEOUT(faults, oom_killed, 120)
{
	struct crew *c = crew_shared();
	long total = meminfo_kib("MemTotal");
	struct fp_test_ctl tctl;
	int status;

	NEED_DEVICE();
	ASSERT_NE(NULL, c);
	ASSERT_LT(0, total);
	if (total > OOM_MAX_KIB)
		SKIP(return, "it would exhaust %ld MiB of memory: only for a VM of 2 GiB or less",
		     total >> 10);
	c->nr = 2;
	kmsg(OOM_EXPECTED);
	self->oom_announced = true;
	self->child = fork();
	ASSERT_LE(0, self->child);
	if (!self->child)
		oom_child(c, total);
	ASSERT_EQ(self->child, waitpid(self->child, &status, 0));
	self->child = 0;
	kmsg(OOM_OVER);
	self->oom_announced = false;
	ASSERT_TRUE(WIFSIGNALED(status)) TH_LOG("exit status %d", WEXITSTATUS(status));
	ASSERT_EQ(SIGKILL, WTERMSIG(status));
	/* It was killed with its worker registered and preempted. */
	ASSERT_LE(2, crew_min_preemptions(c));
	ASSERT_EQ(self->base, fp_settled_refcnt(self->base));

	/* A new registration: its timer runs. */
	ASSERT_EQ(0, register_deferring(self->fd, &tctl));
	spin_until(&tctl.ctl.fired, FIRINGS, 10000000000ULL);
	EXPECT_LE(FIRINGS, tctl.ctl.fired);
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
	ASSERT_EQ(self->base, fp_module_refcnt());
}

TEST_HARNESS_MAIN
