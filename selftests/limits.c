// SPDX-License-Identifier: GPL-2.0
/*
 * Per-user limits: every registration pins a page, charged to its user's
 * RLIMIT_MEMLOCK (not to root's, who has CAP_IPC_LOCK), so one user cannot
 * take every registration the module allows. Each test runs its users in
 * children that drop root, with a uid of their own, so no charge of
 * another test (or of a leak) counts against them. One test loads the
 * module again with a module-wide limit of three registrations.
 */
#include "kselftest_harness.h"
#include "fp_dev.h"
#include "fiber.h"

#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_THREADS 8

/* Threads that each try to register, then hold what they got until told. */
struct crowd {
	int fd;
	int nr;
	int result[MAX_THREADS];
	pthread_barrier_t registered;
	pthread_barrier_t release;
};

struct member {
	struct crowd *crowd;
	int index;
	struct fp_test_ctl tctl;
};

static void *member_main(void *arg)
{
	struct member *m = arg;
	struct fiber_preempt_register args;

	fp_fill_register(&args, &m->tctl);
	m->crowd->result[m->index] = fp_ioctl(m->crowd->fd, FIBER_PREEMPT_IOC_REGISTER, &args);
	pthread_barrier_wait(&m->crowd->registered);
	pthread_barrier_wait(&m->crowd->release);
	return NULL;
}

/*
 * nr threads register one after another (each waits for the one before,
 * so which one is refused is known); returns how many were registered.
 * They keep their registrations until crowd_release().
 */
static int crowd_register(struct crowd *c, struct member *m, pthread_t *t, int nr)
{
	int i, ok = 0;

	c->nr = nr;
	pthread_barrier_init(&c->registered, NULL, 2);
	pthread_barrier_init(&c->release, NULL, nr + 1);
	for (i = 0; i < nr; i++) {
		m[i].crowd = c;
		m[i].index = i;
		if (pthread_create(&t[i], NULL, member_main, &m[i]))
			exit(90);
		pthread_barrier_wait(&c->registered);
		ok += c->result[i] == 0;
	}
	return ok;
}

static void crowd_release(struct crowd *c, pthread_t *t)
{
	int i;

	pthread_barrier_wait(&c->release);
	for (i = 0; i < c->nr; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&c->registered);
	pthread_barrier_destroy(&c->release);
}

/* Becomes uid (and gid) with RLIMIT_MEMLOCK of pages pages; exits on failure. */
static void become(uid_t uid, long pages)
{
	struct rlimit rl;

	rl.rlim_cur = rl.rlim_max = pages * sysconf(_SC_PAGESIZE);
	if (setrlimit(RLIMIT_MEMLOCK, &rl) || setgroups(0, NULL) ||
	    setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
		exit(91);
}

/*
 * In a child as uid with a limit of pages: nr threads register; the child
 * writes how many did to the pipe, then waits for a byte on the other pipe
 * (or EOF) before its threads let go. Exits 0 if the first refusal was
 * ENOMEM (or there was none).
 */
static pid_t start_user(uid_t uid, long pages, int nr, int report[2], int hold[2])
{
	pid_t pid = fork();
	struct member m[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	struct crowd c = { 0 };
	int i, ok;
	char b;

	if (pid)
		return pid;
	/* The parent's close of its end is the signal to let go. */
	close(hold[1]);
	become(uid, pages);
	c.fd = fp_open();
	if (c.fd < 0)
		exit(92);
	ok = crowd_register(&c, m, t, nr);
	if (write(report[1], &ok, sizeof(ok)) != sizeof(ok))
		exit(93);
	if (read(hold[0], &b, 1) < 0)
		exit(94);
	for (i = 0; i < nr; i++)
		if (c.result[i] && c.result[i] != -ENOMEM)
			exit(95);
	crowd_release(&c, t);
	exit(0);
}

FIXTURE(limits) {
	int fd;
	int report[2];
	int hold[2];
	bool reloaded;		/* the module was loaded with a parameter */
};

FIXTURE_SETUP(limits)
{
	self->fd = fp_open();
	ASSERT_EQ(0, pipe(self->report));
	ASSERT_EQ(0, pipe(self->hold));
}

/* In each test: a SKIP in the fixture's setup does not skip the test everywhere. */
#define REQUIRE_DEVICE_AND_ROOT() do {					\
	FP_REQUIRE_DEVICE(self->fd);					\
	if (geteuid())							\
		SKIP(return, "needs root to become other users");	\
} while (0)

static int reload_module(const char *params);

FIXTURE_TEARDOWN(limits)
{
	if (self->fd >= 0)
		close(self->fd);
	if (self->reloaded && reload_module(""))
		fprintf(stderr, "# could not load the module again as it was\n");
}

/* How many of a started user's threads registered. */
static int registered(FIXTURE_DATA(limits) *self)
{
	int ok = -1;

	if (read(self->report[0], &ok, sizeof(ok)) != sizeof(ok))
		return -1;
	return ok;
}

/* Lets every started user go; returns 0 if each child exited 0. */
static int finish(FIXTURE_DATA(limits) *self, pid_t *pids, int n)
{
	int i, status, bad = 0;

	close(self->hold[1]);
	for (i = 0; i < n; i++) {
		if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
		    WEXITSTATUS(status)) {
			fprintf(stderr, "# user %d: status %#x\n", i, status);
			bad = 1;
		}
	}
	return bad;
}

TEST_F(limits, memlock_bounds_a_users_registrations)
{
	pid_t pid;

	REQUIRE_DEVICE_AND_ROOT();
	pid = start_user(60101, 3, 5, self->report, self->hold);
	/* Three pages: three threads, the fourth and fifth get ENOMEM. */
	ASSERT_EQ(3, registered(self));
	ASSERT_EQ(0, finish(self, &pid, 1));
}

TEST_F(limits, other_users_are_not_affected)
{
	struct fiber_preempt_register args;
	struct fp_test_ctl tctl;
	pid_t pids[2];

	REQUIRE_DEVICE_AND_ROOT();
	pids[0] = start_user(60201, 2, 4, self->report, self->hold);
	ASSERT_EQ(2, registered(self));
	/* While the first is at its limit, a second user has its own. */
	pids[1] = start_user(60202, 3, 3, self->report, self->hold);
	ASSERT_EQ(3, registered(self));
	/* And root, with CAP_IPC_LOCK, is charged nothing. */
	fp_fill_register(&args, &tctl);
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, &args));
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
	ASSERT_EQ(0, finish(self, pids, 2));
}

TEST_F(limits, root_is_not_charged)
{
	struct fiber_preempt_register args;
	struct fp_test_ctl tctl;
	struct rlimit rl = { 0, 0 };

	REQUIRE_DEVICE_AND_ROOT();
	ASSERT_EQ(0, setrlimit(RLIMIT_MEMLOCK, &rl));
	fp_fill_register(&args, &tctl);
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, &args));
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL));
}

/* A registration ended by UNREGISTER, by exit or by SIGKILL gives its page back. */
TEST_F(limits, charges_come_back)
{
	pid_t pid;
	int status;

	REQUIRE_DEVICE_AND_ROOT();
	/* Ended by the threads' exit: the same user can register as many again. */
	pid = start_user(60301, 2, 2, self->report, self->hold);
	ASSERT_EQ(2, registered(self));
	ASSERT_EQ(0, finish(self, &pid, 1));

	ASSERT_EQ(0, pipe(self->hold));
	pid = start_user(60301, 2, 3, self->report, self->hold);
	ASSERT_EQ(2, registered(self));
	/* Killed while registered. */
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFSIGNALED(status));
	close(self->hold[1]);

	ASSERT_EQ(0, pipe(self->hold));
	pid = start_user(60301, 2, 3, self->report, self->hold);
	ASSERT_EQ(2, registered(self));
	ASSERT_EQ(0, finish(self, &pid, 1));
}

/* In a child as uid with no RLIMIT_MEMLOCK: starts libfiber in mode; exits 0 if it ran in want. */
static void start_fibers_as(uid_t uid, enum fiber_preempt_mode mode, int want_err,
			    enum fiber_preempt_mode want)
{
	struct fiber_config cfg = { .workers = 2, .mode = mode };
	int err;

	become(uid, 0);
	err = fiber_sched_start(&cfg);
	if (err != want_err)
		exit(80);
	if (!err && (fiber_sched_mode() != want || fiber_sched_stop()))
		exit(81);
	exit(0);
}

TEST_F(limits, auto_mode_falls_back_to_signals)
{
	int status;
	pid_t pid;

	REQUIRE_DEVICE_AND_ROOT();
	pid = fork();
	if (!pid)
		start_fibers_as(60401, FIBER_PREEMPT_KMOD, -ENOMEM, FIBER_PREEMPT_KMOD);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, status) TH_LOG("kmod mode without RLIMIT_MEMLOCK did not fail with ENOMEM");

	pid = fork();
	if (!pid)
		start_fibers_as(60401, FIBER_PREEMPT_AUTO, 0, FIBER_PREEMPT_SIGNAL);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, status) TH_LOG("auto mode did not fall back to signals");
}

/* Where the VM puts the module: the tests' working directory. */
#define FP_KO	"fiber_preempt.ko"

/*
 * Unloads the module, waiting up to 5 s for registrations that are ending
 * (the threads of a child that just exited), and loads FP_KO again with
 * params. 0 or -errno.
 */
static int reload_module(const char *params)
{
	int ko, i, ret = 0;

	ko = open(FP_KO, O_RDONLY | O_CLOEXEC);
	if (ko < 0)
		return -errno;
	for (i = 0; syscall(SYS_delete_module, "fiber_preempt", O_NONBLOCK); i++) {
		if ((errno != EWOULDBLOCK && errno != EBUSY) || i == 500) {
			ret = -errno;
			break;
		}
		usleep(10000);
	}
	if (!ret && syscall(SYS_finit_module, ko, params, 0))
		ret = -errno;
	close(ko);
	return ret;
}

/* In a child as uid with a limit of pages: one registration; 0 or -errno. */
static int register_as(uid_t uid, long pages)
{
	struct fiber_preempt_register args;
	struct fp_test_ctl tctl;
	int status, fd;
	pid_t pid = fork();

	if (!pid) {
		become(uid, pages);
		fd = fp_open();
		if (fd < 0)
			exit(100);
		fp_fill_register(&args, &tctl);
		exit(-fp_ioctl(fd, FIBER_PREEMPT_IOC_REGISTER, &args));
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1000;
	return -WEXITSTATUS(status);
}

/*
 * With max_registrations=3: the failing step's number, or 0. Every
 * refusal must give back what it took: a slot (ENOMEM) or a charge
 * (ENOSPC).
 */
static int module_wide_limit_steps(int report[2], int hold[2])
{
	struct member m[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	struct crowd c = { 0 };
	int ok, status;
	pid_t user;

	/* A user with a limit of one page: one registration, then ENOMEM. */
	user = start_user(60501, 1, 2, report, hold);
	if (read(report[0], &ok, sizeof(ok)) != sizeof(ok) || ok != 1)
		return 1;
	/* Root takes the two slots left, the refused one's included; the third is ENOSPC. */
	c.fd = fp_open();
	if (crowd_register(&c, m, t, 3) != 2 || c.result[2] != -ENOSPC)
		return 2;
	/* Another user is refused with ENOSPC, not ENOMEM, while all are taken... */
	if (register_as(60502, 1) != -ENOSPC)
		return 3;
	/* ...and was charged nothing: once a slot is free, its one page is enough. */
	close(hold[1]);
	if (waitpid(user, &status, 0) != user || status)
		return 4;
	if (register_as(60502, 1))
		return 5;
	crowd_release(&c, t);
	return 0;
}

/*
 * The module-wide limit (max_registrations, an insmod parameter) refuses
 * with ENOSPC whoever comes when it is reached, root included. The module
 * is loaded again with a limit of 3 for the test, and as it was after.
 */
TEST_F(limits, module_wide_limit)
{
	int status;
	pid_t pid;

	REQUIRE_DEVICE_AND_ROOT();
	if (access(FP_KO, R_OK))
		SKIP(return, "needs %s in the working directory to load the module again", FP_KO);
	close(self->fd);
	self->fd = -1;
	self->reloaded = true;
	ASSERT_EQ(0, reload_module("max_registrations=3"));
	/* In a child, whose exit ends every registration of the test. */
	pid = fork();
	if (!pid)
		exit(module_wide_limit_steps(self->report, self->hold));
	/* Its users' children see EOF on hold when it exits, however it does. */
	close(self->hold[1]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, reload_module(""));
	self->reloaded = false;
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status)) TH_LOG("step %d failed", WEXITSTATUS(status));
}

TEST_HARNESS_MAIN
