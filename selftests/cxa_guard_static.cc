// SPDX-License-Identifier: GPL-2.0
/* The C++ half of cxa_guard: a function-local static with a slow constructor. */
#include <atomic>

#include "fiber.h"

static std::atomic<int> constructions;

struct slow {
	int value;

	slow()
	{
		constructions++;
		for (volatile unsigned long i = 0; i < 3000000; i++)
			;
		fiber_sleep(5000000);		/* stops, holding the guard */
		for (volatile unsigned long i = 0; i < 3000000; i++)
			;
		value = 42;
	}
};

/* The static's value as its user sees it: 42 once constructed. */
extern "C" int cxa_guard_use_static(void)
{
	static slow instance;

	return instance.value;
}

extern "C" int cxa_guard_constructions(void)
{
	return constructions.load();
}
