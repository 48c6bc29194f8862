/* SPDX-License-Identifier: MIT */
/* Picks the per-architecture part of libfiber. */
#ifndef LIBFIBER_ARCH_H
#define LIBFIBER_ARCH_H

#if defined(__x86_64__)
#include "arch/x86_64/arch.h"
#elif defined(__aarch64__)
#include "arch/aarch64/arch.h"
#else
#error "unsupported architecture"
#endif

#endif /* LIBFIBER_ARCH_H */
