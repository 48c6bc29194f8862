/* SPDX-License-Identifier: MIT */
/*
 * libfiber: preemptible user-space fibers (M:N green threads).
 *
 * A process runs one scheduler: N worker threads, each running fibers
 * from a shared run queue. A fiber that keeps its worker for longer than
 * a slice is preempted asynchronously, at any instruction of the
 * program's own code, by one of three backends:
 *
 *  - FIBER_PREEMPT_KMOD: the fiber_preempt kernel module times each worker
 *    on its CPU and redirects it into the library's upcall trampoline;
 *  - FIBER_PREEMPT_SIGNAL: a monitor thread times each worker's slices on
 *    its CPU clock and sends it a signal (SIGURG) whose handler redirects
 *    to the same trampoline; slices from about 100 us on are honoured;
 *  - FIBER_PREEMPT_OFF: cooperative only (fiber_yield(), blocking calls).
 *
 * Code in shared libraries (libc, ld.so) and in libfiber itself is never
 * interrupted: a preemption that finds the fiber there, or finds any frame
 * of its stack there (program code called back by libc: a qsort
 * comparator, a dl_iterate_phdr callback, a malloc the program defines),
 * is deferred until the fiber is back in its own code alone, so a fiber is
 * never switched out while libc holds state for it. The walk reads the
 * DWARF CFI (.eh_frame) of the program, which GCC and Clang emit by
 * default; code without CFI is never preempted. The program must link
 * libc dynamically. fiber_preempt_add_library() opts libraries in.
 *
 * Locks: libfiber provides the pthread mutex, rwlock, spin lock and once
 * functions, and the C++ static-initialization guards, so a program's
 * calls reach it: a fiber holding a lock (or running an initializer) is
 * not preempted, and one waiting for a lock another fiber holds lets its
 * worker run the other fibers instead of blocking the thread. Blocking
 * system calls, pthread_cond_wait() included, still hold the worker:
 * fibers do I/O with the fiber_read() family below instead.
 *
 * A signal handler is never switched away from: while the worker's
 * signal mask differs from its usual one (as it does inside a handler,
 * unless the handler was installed with SA_NODEFER and an empty mask),
 * preemption waits.
 *
 * Thread-local state: a fiber runs on one worker thread, the first one
 * to run it, so the thread-local addresses its code computed once (the
 * compiler may keep them in registers across any call, errno's included:
 * __errno_location() is a const function) stay valid. errno itself is
 * per fiber: saved when a fiber stops and restored when it resumes. Other
 * thread-locals are the worker's, shared by the fibers that run on it.
 * The signal mask is per fiber too when set with pthread_sigmask() or
 * sigprocmask() (libfiber provides both): a fiber with a signal blocked is
 * not preempted, as inside a handler, but the others on its worker are. Programs that accept the hazard can let fibers
 * migrate (struct fiber_config's flags).
 *
 * Errors: every function that can fail returns a negative errno value
 * (-EINVAL, -ENOMEM, ...) and 0 or a positive value on success; errno is
 * not used.
 */
#ifndef LIBFIBER_FIBER_H
#define LIBFIBER_FIBER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum fiber_preempt_mode {
	/*
	 * kmod if /dev/fiber_preempt is there and takes every worker, else
	 * signal (the module refuses a worker past the user's RLIMIT_MEMLOCK
	 * or its max_registrations)
	 */
	FIBER_PREEMPT_AUTO = 0,
	FIBER_PREEMPT_KMOD,
	FIBER_PREEMPT_SIGNAL,
	FIBER_PREEMPT_OFF,
};

/*
 * Let a fiber that stopped in a libfiber call (yield, sleep, join) outside
 * any preempt-off section resume on another worker. The program then
 * promises that no function keeps a thread-local address across such a
 * call: with gcc, a function that reads errno both before and after
 * fiber_yield() reads the old worker's errno after a move.
 */
#define FIBER_MIGRATE			(1U << 0)
/*
 * FIBER_MIGRATE, and preempted fibers may move too, so that CPU-bound
 * fibers share all workers equally. The program promises that its code
 * keeps no thread-local address in a register at any instruction: in
 * practice, fibers that touch no thread-locals (errno included).
 */
#define FIBER_MIGRATE_PREEMPTED		(1U << 1)

struct fiber_config {
	unsigned int workers;		/* worker threads; 0 means 1 */
	enum fiber_preempt_mode mode;
	uint64_t slice_ns;		/* 0 means 1 ms; at least 10 us (kmod), ~100 us (signal) */
	size_t stack_size;		/* per fiber; 0 means 256 KiB; upcalls need 12 KiB free (arm64) */
	unsigned int flags;		/* FIBER_MIGRATE* */
	unsigned int ring_entries;	/* io_uring SQ size per worker; 0 means 256; 2 to 32768 */
};

/* Statistics of one worker, since the scheduler started. */
struct fiber_worker_stats {
	uint64_t switches;		/* fibers run by this worker */
	/*
	 * Fibers preempted by the timer. Read while the worker runs, it
	 * may count an upcall under way that then declines (and moves to
	 * deferred_stack): one too many, until the next read.
	 */
	uint64_t preemptions;
	uint64_t fired;			/* slices that ran out with no switch */
	uint64_t deferred_off;		/* ... while preemption was disabled */
	uint64_t deferred_pc;		/* ... while outside the program's code */
	uint64_t deferred_signal;	/* ... while a signal handler ran */
	uint64_t deferred_kernel;	/* ... while in the kernel */
	uint64_t deferred_upcall;	/* ... while an upcall was starting */
	uint64_t deferred_rseq;		/* ... while rseq state was unreadable */
	/*
	 * ... while vector state the upcall does not save was live (arm64:
	 * SME streaming mode or ZA; SVE registers are saved)
	 */
	uint64_t deferred_vector;
	/*
	 * ... while a frame below the interrupted one was outside the
	 * program's code (a callback from libc), or the stack could not be
	 * walked: the upcall returned to the fiber at once.
	 */
	uint64_t deferred_stack;
	/*
	 * Entries of the worker's io_uring; 0 when it has none (no io_uring
	 * in this kernel or process): fiber I/O calls then block the worker.
	 */
	uint64_t ring_entries;
	uint64_t io_ops;		/* I/O operations its fibers started */
	uint64_t io_submits;		/* io_uring_enter() calls that submitted */
	uint64_t steals;		/* fibers it took from other workers' queues */
	uint64_t wakeups;		/* times another thread woke it to run work */
};

/* Statistics of one fiber. */
struct fiber_stats {
	uint64_t runs;			/* times a worker switched to it */
	uint64_t preemptions;		/* times the timer took it off its worker */
	/*
	 * Time on a worker: the caller's own includes its run under way,
	 * another fiber's counts up to its last switch.
	 */
	uint64_t run_ns;
};

typedef struct fiber fiber_t;

/*
 * Start the scheduler: cfg->workers threads, preempting in cfg->mode.
 * cfg may be NULL for the defaults. Returns 0, -EALREADY if it is already
 * running, -EINVAL for a bad configuration (unknown flags included),
 * -ENODEV when mode is KMOD and the module is not loaded (-EACCES when
 * its device may not be opened, -EPROTO when it speaks another version
 * of the interface), -ENOENT when a library FIBER_PREEMPT_LIBS names is
 * not loaded, -ENOSPC when the libraries named need more code ranges
 * than the module takes, or the error a worker met while registering
 * (in KMOD mode: -ENOMEM past the user's RLIMIT_MEMLOCK, which each
 * worker's pinned control page is charged to, -ENOSPC past the module's
 * max_registrations; AUTO then uses signals instead).
 */
int fiber_sched_start(const struct fiber_config *cfg);

/*
 * Wait until every fiber spawned so far has returned, then stop the
 * workers. Must not be called from a fiber. From the moment it begins,
 * fiber_spawn() outside a fiber fails with -EINVAL (fibers may still
 * spawn: they keep the scheduler from stopping). Returns 0, -EINVAL if
 * the scheduler is not running, -EALREADY if another thread is stopping
 * it, or -EDEADLK when called from a fiber.
 *
 * fork(): the child has only the calling thread, so its scheduler is
 * stopped: libfiber calls there behave as outside a fiber (fiber_self()
 * is NULL, fiber_spawn() fails with -EINVAL), and the child may exec,
 * exit, or call fiber_sched_start() again. If the function of the fiber
 * that forked returns in the child, the child exits with status 0.
 */
int fiber_sched_stop(void);

/* The preemption mode in effect (never FIBER_PREEMPT_AUTO once started). */
enum fiber_preempt_mode fiber_sched_mode(void);

/* "auto", "kmod", "signal" or "off"; NULL for an unknown value. */
const char *fiber_preempt_mode_name(enum fiber_preempt_mode mode);

/*
 * Parse a mode name as fiber_preempt_mode_name() prints it. Returns the
 * mode, or -EINVAL.
 */
int fiber_preempt_mode_parse(const char *name);

/*
 * Create a fiber running fn(arg) and make it runnable. On success stores
 * the fiber in *fiber (which must be passed exactly once to fiber_join()
 * or fiber_detach()) and returns 0; returns -EINVAL if the scheduler is
 * not running (or is stopping and the caller is not a fiber), -ENOMEM or
 * -EAGAIN if no stack could be mapped.
 */
int fiber_spawn(fiber_t **fiber, void *(*fn)(void *), void *arg);

/*
 * Wait for fiber to return and release it; its return value goes to *ret
 * unless ret is NULL. Callable from a fiber (which then blocks without
 * holding its worker) or from any other thread. Returns 0, -EINVAL for
 * NULL, or -EDEADLK when a fiber joins itself.
 */
int fiber_join(fiber_t *fiber, void **ret);

/*
 * Let fiber be released as soon as it returns, instead of by
 * fiber_join(): for fibers nobody waits for, such as a server's one per
 * connection. fiber must not be used after this call. fiber_sched_stop()
 * still waits for it. Returns 0, or -EINVAL for NULL.
 */
int fiber_detach(fiber_t *fiber);

/*
 * Copy the statistics of fiber into *st. Valid from fiber_spawn() until
 * fiber_join() or fiber_detach() releases it. Returns 0, or -EINVAL for a NULL argument.
 */
int fiber_stats(fiber_t *fiber, struct fiber_stats *st);

/*
 * Store in pcs up to max addresses where fiber is, innermost first, as
 * backtrace(3) does: the caller's own fiber from its caller on; a fiber
 * that waits (runnable, blocked, preempted) from where it stopped: for a
 * preempted one the first address is the very instruction it was
 * interrupted at, then the return addresses of its callers, down to the
 * function the fiber was spawned with. Frames are followed through every
 * object loaded when the scheduler started (by their CFI, .eh_frame);
 * the walk stops at a frame of code loaded later. Valid on the same fibers as
 * fiber_stats(). Returns the number stored (0 for a fiber that has not
 * started or has returned), -EBUSY when fiber runs on another worker,
 * or -EINVAL for a NULL fiber, a negative max or a NULL pcs with max > 0.
 */
int fiber_backtrace(fiber_t *fiber, void **pcs, int max);

/* Bytes a fiber's name keeps, its terminating NUL included. */
#define FIBER_NAME_MAX	16

/*
 * The fiber's id: a number given at spawn, 1 for the process's first
 * fiber, never reused; shown in dumps and stall reports. 0 for NULL.
 */
uint64_t fiber_id(const fiber_t *fiber);

/*
 * Name fiber for dumps, stall reports and gdb: the first FIBER_NAME_MAX -
 * 1 bytes of name are kept; NULL or "" clears it. Valid on the same
 * fibers as fiber_stats(). Returns 0, or -EINVAL for a NULL fiber.
 */
int fiber_set_name(fiber_t *fiber, const char *name);

/*
 * Write every fiber to fd as text, as Go prints every goroutine on
 * SIGQUIT: its id and name; its state (running on worker N, runnable,
 * preempted, blocked in a join, a sleep, an I/O call (with the operation
 * and fd) or on a lock, or returned and not yet joined); its runs,
 * preemptions and time on a worker; and its backtrace (fiber_backtrace()),
 * each address with its function, offset and object. Then a line per
 * worker with its counters (struct fiber_worker_stats). A fiber running
 * on another worker has no backtrace: its stack is changing. Safe from
 * any thread, fibers included, and from a signal handler: it allocates
 * nothing, takes no lock, and writes with write(2). Functions are named
 * from the symbol tables of the objects loaded when the scheduler
 * started; later ones show as addresses. Returns 0, or the negative errno
 * of a failed write.
 *
 * FIBER_DUMP_SIGNAL=<signal> in the environment (a name such as QUIT or
 * SIGUSR1, or a number) makes fiber_sched_start() install a handler for
 * that signal which dumps to stderr; the process goes on running. The
 * fiber the signal interrupted is shown where it was interrupted.
 *
 * FIBER_STALL_MS=<n> makes it report on stderr each fiber that keeps its
 * worker for n ms (1 to 3600000) without reaching a point where it could
 * be preempted, once per stall: how long, why (in a library, preemption
 * disabled or a lock held, a signal handler, a callback from a library,
 * preemption off) and its backtrace. A watcher thread looks each n/4 ms
 * and has the worker write the report from a SIGURG handler, which
 * libfiber then installs in every mode.
 */
int fiber_dump(int fd);

/* Let other runnable fibers run; returns at once when called outside a fiber. */
void fiber_yield(void);

/*
 * Block the calling fiber for at least ns nanoseconds without holding its
 * worker. Outside a fiber it sleeps the thread. Returns 0, or -ENOMEM
 * when its worker's timer heap could not grow.
 */
int fiber_sleep(uint64_t ns);

/* The calling fiber, or NULL outside a fiber. */
fiber_t *fiber_self(void);

/*
 * Keep the calling fiber from being preempted until the matching
 * fiber_preempt_enable(). Calls nest. A preemption that came due in
 * between is taken (as a yield) when the outermost section ends. Cheap:
 * a counter in the worker's control block, no system call.
 */
void fiber_preempt_disable(void);

/* End a section started by fiber_preempt_disable(). */
void fiber_preempt_enable(void);

/*
 * Let fibers be preempted in the code of the loaded shared object name
 * (its soname, "libz.so.1", or the path it was loaded by), for libraries
 * whose long computations hold no locks: compression, hashing, numerics.
 * The whole-stack rule still applies, so a callback from such a library
 * into libc-held state is still not preempted. The object is kept loaded
 * for the rest of the process. Takes effect at the next
 * fiber_sched_start(); the environment variable FIBER_PREEMPT_LIBS (names
 * separated by ':') adds more there. Returns 0, -EINVAL for a NULL or
 * empty name, -ENOENT if no loaded object has that name, -EBUSY while the
 * scheduler runs, or -ENOSPC past FIBER_PREEMPT_MAX_LIBS names.
 */
#define FIBER_PREEMPT_MAX_LIBS	4
int fiber_preempt_add_library(const char *name);

/* Worker threads of the running scheduler (0 if it is not running). */
unsigned int fiber_worker_count(void);

/* Index of the calling worker thread, or -1 outside one. */
int fiber_worker_index(void);

/*
 * Copy the statistics of worker `worker` into *st. Returns 0, or -EINVAL
 * for a worker that does not exist or a NULL st.
 */
int fiber_worker_stats(unsigned int worker, struct fiber_worker_stats *st);

/*
 * Fiber I/O. Each call parks only the calling fiber until its operation
 * completes on its worker's io_uring, and returns what the system call of
 * the same name would, or -errno (-EBADF for a closed descriptor, -EFAULT
 * for a bad buffer, ...). Outside a fiber, or when the worker has no ring
 * (ring_entries 0 in fiber_worker_stats()), it is that system call,
 * blocking the thread. Reads and writes without an offset use and move
 * the file position, as read(2) and write(2) do.
 */
ssize_t fiber_read(int fd, void *buf, size_t len);
ssize_t fiber_write(int fd, const void *buf, size_t len);
ssize_t fiber_pread(int fd, void *buf, size_t len, off_t offset);
ssize_t fiber_pwrite(int fd, const void *buf, size_t len, off_t offset);
ssize_t fiber_readv(int fd, const struct iovec *iov, int iovcnt);
ssize_t fiber_writev(int fd, const struct iovec *iov, int iovcnt);
ssize_t fiber_recv(int fd, void *buf, size_t len, int flags);
ssize_t fiber_send(int fd, const void *buf, size_t len, int flags);
ssize_t fiber_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t fiber_sendmsg(int fd, const struct msghdr *msg, int flags);
/* accept4(2): flags SOCK_NONBLOCK, SOCK_CLOEXEC. */
int fiber_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags);
int fiber_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
int fiber_close(int fd);
int fiber_openat(int dirfd, const char *path, int flags, mode_t mode);
int fiber_fsync(int fd);
/*
 * Wait until fd has one of events (POLLIN, POLLOUT, ...): returns the
 * events that occurred, 0 when timeout_ms (-1: none) passed first.
 */
int fiber_poll(int fd, short events, int timeout_ms);

/*
 * Bound every later I/O call of the calling fiber by deadline_ns
 * (CLOCK_MONOTONIC, nanoseconds; 0 removes the bound): a call still
 * waiting then is cancelled and returns -ETIMEDOUT, one made after it
 * returns -ETIMEDOUT at once. An operation cancelled may have partly
 * happened, as with a signal. Without a ring the calls block past it.
 * Returns 0, or -EPERM outside a fiber.
 */
int fiber_set_deadline(uint64_t deadline_ns);

/*
 * Fiber locks. A fiber_mutex_t belongs to the fiber that took it, not to
 * its thread: the holder may be preempted, and may resume on another
 * worker if the program allows migration. A fiber that waits for one
 * parks, and its worker runs other fibers; a thread that is not a fiber
 * may use them too, and then blocks. The fields are libfiber's; use the
 * initializers or the init functions. Neither needs destroying.
 *
 * Waiting is fair enough that no waiter is passed over more than once in
 * a row: the oldest waiter is woken at each release and, if another fiber
 * took the mutex first, is handed it at the next release.
 */
typedef struct fiber_mutex {
	uint32_t state;
	uint32_t guard;
	void *owner;
	void *head, *tail;
} fiber_mutex_t;

#define FIBER_MUTEX_INITIALIZER	{ 0, 0, NULL, NULL, NULL }

typedef struct fiber_cond {
	uint32_t guard;
	void *head, *tail;
} fiber_cond_t;

#define FIBER_COND_INITIALIZER	{ 0, NULL, NULL }

/* Make m a free mutex. Returns 0, or -EINVAL for NULL. */
int fiber_mutex_init(fiber_mutex_t *m);

/*
 * Take m, waiting as long as another fiber or thread holds it. Returns 0,
 * -EDEADLK when the caller holds it already, or -EINVAL for NULL.
 */
int fiber_mutex_lock(fiber_mutex_t *m);

/* Take m if it is free. Returns 0, -EBUSY if it is held, or -EINVAL. */
int fiber_mutex_trylock(fiber_mutex_t *m);

/*
 * Release m, waking its oldest waiter. Returns 0, -EPERM when the caller
 * (the fiber, or the thread outside fibers) does not hold it, or -EINVAL.
 */
int fiber_mutex_unlock(fiber_mutex_t *m);

/* Make c a condition nobody waits on. Returns 0, or -EINVAL for NULL. */
int fiber_cond_init(fiber_cond_t *c);

/*
 * Release m, which the caller holds, wait until c is signalled, then
 * take m again. Spurious wake-ups do not happen, but a signal may have
 * been consumed by the time m is taken: check the predicate in a loop.
 * Returns 0, -EPERM when the caller does not hold m, or -EINVAL.
 */
int fiber_cond_wait(fiber_cond_t *c, fiber_mutex_t *m);

/*
 * fiber_cond_wait() that gives up at deadline_ns (CLOCK_MONOTONIC,
 * nanoseconds, as fiber_set_deadline() takes it; 0: none) and returns
 * -ETIMEDOUT, with m held again. -ENOMEM: a fiber's timer could not be
 * set (m is held again).
 */
int fiber_cond_timedwait(fiber_cond_t *c, fiber_mutex_t *m, uint64_t deadline_ns);

/* Wake the oldest waiter of c, if any. Returns 0, or -EINVAL for NULL. */
int fiber_cond_signal(fiber_cond_t *c);

/* Wake every waiter of c. Returns 0, or -EINVAL for NULL. */
int fiber_cond_broadcast(fiber_cond_t *c);

#ifdef __cplusplus
}
#endif

#endif /* LIBFIBER_FIBER_H */
