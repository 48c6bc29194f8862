// SPDX-License-Identifier: GPL-2.0
/* Run after rmmod: the device node is gone and nothing answers on it. */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <stdio.h>

TEST(device_gone)
{
	FILE *f;
	char line[256];
	bool listed = false;

	ASSERT_EQ(-1, fp_open());
	ASSERT_EQ(ENOENT, errno);

	f = fopen("/proc/modules", "r");
	ASSERT_NE(NULL, f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "fiber_preempt ", 14))
			listed = true;
	fclose(f);
	ASSERT_FALSE(listed);
}

TEST_HARNESS_MAIN
