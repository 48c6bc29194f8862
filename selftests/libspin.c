// SPDX-License-Identifier: GPL-2.0
/* A shared library with a long computation and no locks, for preempt_libs and stall. */
#include <stdint.h>

uint64_t spin_in_library(uint64_t n)
{
	volatile uint64_t x = 0;
	uint64_t i;

	for (i = 0; i < n; i++)
		x += i;
	return x;
}
