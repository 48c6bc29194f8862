/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What differs between the kernels the module builds for (Debian's 6.1
 * and 6.12), in one place: each entry names the kernel change, and
 * Kbuild probes the headers for it (kmod/Kbuild).
 */
#ifndef _FIBER_PREEMPT_FP_COMPAT_H
#define _FIBER_PREEMPT_FP_COMPAT_H

#include <linux/fs.h>

/*
 * 6.12, "finally take no_llseek out": a file without ->llseek cannot
 * seek, and no_llseek is gone. Kbuild defines FP_HAVE_NO_LLSEEK when the
 * headers still declare it.
 */
#ifdef FP_HAVE_NO_LLSEEK
#define fp_no_llseek	no_llseek
#else
#define fp_no_llseek	NULL
#endif

#endif /* _FIBER_PREEMPT_FP_COMPAT_H */
