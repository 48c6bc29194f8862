// SPDX-License-Identifier: MIT
/*
 * What returning from an upcall through rt_sigreturn costs on aarch64
 * (the trampoline's way back to the interrupted PC with every register
 * intact), next to the cheapest system call, getppid(), in the same run.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <asm/sigcontext.h>

#define N 200000

struct sigframe {
	siginfo_t info;
	ucontext_t uc;
};

void sigreturn_loop(uint64_t n, struct sigframe *frame);

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(void)
{
	static struct sigframe frame __attribute__((aligned(16)));
	struct fpsimd_context *fp = (struct fpsimd_context *)frame.uc.uc_mcontext.__reserved;
	double t_sigreturn, t_syscall;
	int i;

	fp->head.magic = FPSIMD_MAGIC;
	fp->head.size = sizeof(*fp);
	pthread_sigmask(SIG_SETMASK, NULL, &frame.uc.uc_sigmask);
	sigaltstack(NULL, &frame.uc.uc_stack);

	t_sigreturn = now_ns();
	sigreturn_loop(N, &frame);
	t_sigreturn = (now_ns() - t_sigreturn) / N;
	t_syscall = now_ns();
	for (i = 0; i < N; i++)
		syscall(SYS_getppid);
	t_syscall = (now_ns() - t_syscall) / N;
	printf("upcall return: rt_sigreturn %.2f us, getppid %.2f us per call "
	       "(ratio %.1f; %d calls each, same run)\n",
	       t_sigreturn / 1e3, t_syscall / 1e3, t_sigreturn / t_syscall, N);
	return 0;
}
