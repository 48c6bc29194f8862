// SPDX-License-Identifier: GPL-2.0
/* The misc device opens, reports its version and rejects ioctls it does not know. */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <sys/stat.h>
#include <unistd.h>

TEST(open_close)
{
	struct stat st;
	int fd = fp_open();

	FP_REQUIRE_DEVICE(fd);
	ASSERT_EQ(0, fstat(fd, &st));
	ASSERT_TRUE(S_ISCHR(st.st_mode));
	/*
	 * Any thread may open it: it can only ever register itself. Where
	 * udev runs, a rule may have restricted it (README).
	 */
	if ((st.st_mode & 0777) != 0666 && access("/run/udev/control", F_OK) == 0) {
		close(fd);
		SKIP(return, "udev gave the device mode %o here", st.st_mode & 0777);
	}
	ASSERT_EQ(0666, st.st_mode & 0777);
	ASSERT_EQ(0, close(fd));
}

TEST(version)
{
	struct fiber_preempt_version v;
	int fd = fp_open();

	FP_REQUIRE_DEVICE(fd);
	memset(&v, 0xcc, sizeof(v));
	ASSERT_EQ(0, fp_ioctl(fd, FIBER_PREEMPT_IOC_VERSION, &v));
	ASSERT_EQ(FIBER_PREEMPT_API_VERSION, v.api_version);
	ASSERT_EQ(sizeof(struct fiber_preempt_ctl), v.ctl_size);
	ASSERT_EQ(sizeof(struct fiber_preempt_register), v.register_size);
	ASSERT_EQ(0, v.__pad);
	ASSERT_EQ(FIBER_PREEMPT_MIN_SLICE_NS, v.min_slice_ns);
	ASSERT_EQ(FIBER_PREEMPT_MAX_SLICE_NS, v.max_slice_ns);
	ASSERT_LE(v.min_slice_ns, v.default_slice_ns);
	ASSERT_GE(v.max_slice_ns, v.default_slice_ns);
	close(fd);
}

TEST(version_bad_pointer)
{
	int fd = fp_open();

	FP_REQUIRE_DEVICE(fd);
	ASSERT_EQ(-EFAULT, fp_ioctl(fd, FIBER_PREEMPT_IOC_VERSION, (void *)8));
	close(fd);
}

TEST(unknown_ioctl)
{
	char buf[64] = { 0 };
	int fd = fp_open();

	FP_REQUIRE_DEVICE(fd);
	ASSERT_EQ(-ENOTTY, fp_ioctl(fd, _IO(FIBER_PREEMPT_IOC_MAGIC, 0x7f), buf));
	ASSERT_EQ(-ENOTTY, fp_ioctl(fd, _IOR('T', 0x01, int), buf));
	/* The right number with the wrong size is a different command. */
	ASSERT_EQ(-ENOTTY, fp_ioctl(fd, _IOW(FIBER_PREEMPT_IOC_MAGIC, 0x01, __u64), buf));
	close(fd);
}

TEST_HARNESS_MAIN
