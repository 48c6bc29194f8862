/* SPDX-License-Identifier: MIT */
/*
 * x86_64 frame layouts shared by the assembly and C (included by both).
 *
 * Upcall frame, built by upcall.S on the interrupted fiber's stack below
 * the 128-byte red zone. Offsets from the frame base (%rbx in upcall.S,
 * the argument of fiber_upcall_handler()):
 *
 *   offset  what           saved by
 *     0     r15            push
 *     8     r14            push
 *    16     r13            push
 *    24     r12            push
 *    32     r11            push
 *    40     r10            push
 *    48     r9             push
 *    56     r8             push
 *    64     rbp            push
 *    72     rdi            push
 *    80     rsi            push
 *    88     rdx            push
 *    96     rcx            push
 *   104     rbx            push
 *   112     rax            push
 *   120     rflags         pushfq, before any flag-changing instruction
 *   128     rip            the interrupted PC, from ctl->upcall_pc
 *   136     red zone       128 bytes of the interrupted code, untouched
 *   264     -              the interrupted %rsp (the frame's CFA)
 *
 * Below the frame, 64-byte aligned: the XSAVE area (all state components
 * in use, compacted when the CPU has XSAVEC; FXSAVE without XSAVE), or in
 * BYHAND mode the vector registers in use stored one by one (below).
 *
 * Switch frame, built by fiber_switch() on the stack it leaves
 * (scripts/gdb/libfiber.py reads it too: keep the two in step):
 *
 *   offset  what
 *     0     mxcsr (4 bytes), x87 control word (2 bytes), padding
 *     8     r15
 *    16     r14
 *    24     r13
 *    32     r12
 *    40     rbx
 *    48     rbp
 *    56     return address
 */
#ifndef LIBFIBER_ARCH_X86_64_FRAME_H
#define LIBFIBER_ARCH_X86_64_FRAME_H

#define UPCALL_FRAME_RFLAGS	120
#define UPCALL_FRAME_RIP	128
#define UPCALL_FRAME_SIZE	136
#define UPCALL_REDZONE		128
#define UPCALL_CFA_OFFSET	(UPCALL_FRAME_SIZE + UPCALL_REDZONE)

#define SWITCH_FRAME_CSR	0
#define SWITCH_FRAME_R14	16
#define SWITCH_FRAME_R13	24
#define SWITCH_FRAME_R12	32
#define SWITCH_FRAME_RBP	48
#define SWITCH_FRAME_RET	56
#define SWITCH_FRAME_SIZE	64

/* Offset of upcall_pc in struct fiber_preempt_ctl. */
#define CTL_UPCALL_PC		16

/*
 * fiber_xsave_mode values. BYHAND: the vector registers in use are stored
 * with plain moves when nothing else is in use (XGETBV 1 says what is),
 * else XSAVEC; XCR0 then holds no more than x87, SSE, AVX and AVX-512.
 */
#define XSAVE_MODE_FXSAVE	0
#define XSAVE_MODE_XSAVE	1
#define XSAVE_MODE_XSAVEC	2
#define XSAVE_MODE_BYHAND	3

/* State components (XCR0 and XINUSE bits). */
#define XFEATURE_X87		0x01
#define XFEATURE_SSE		0x02
#define XFEATURE_YMM		0x04
#define XFEATURE_OPMASK		0x20
#define XFEATURE_ZMM_HI256	0x40
#define XFEATURE_HI16_ZMM	0x80
#define XFEATURES_BYHAND	(XFEATURE_SSE | XFEATURE_YMM | XFEATURE_OPMASK | \
				 XFEATURE_ZMM_HI256 | XFEATURE_HI16_ZMM)

/*
 * The area in BYHAND mode: register n of zmm0-31 (or its low ymm or xmm
 * part) at 64 * n, k0-k7 after them, then MXCSR.
 */
#define BYHAND_K		2048
#define BYHAND_MXCSR		2112
#define BYHAND_SIZE		2176

#endif /* LIBFIBER_ARCH_X86_64_FRAME_H */
