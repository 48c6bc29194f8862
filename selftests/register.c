// SPDX-License-Identifier: GPL-2.0
/* REGISTER validates every field with a specific errno; UNREGISTER undoes it. */
#include "kselftest_harness.h"
#include "fp_dev.h"

#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>

FIXTURE(reg) {
	int fd;
	struct fp_test_ctl tctl;
	struct fiber_preempt_register args;
};

FIXTURE_SETUP(reg)
{
	self->fd = fp_open();
	FP_REQUIRE_DEVICE(self->fd);
	fp_fill_register(&self->args, &self->tctl);
}

FIXTURE_TEARDOWN(reg)
{
	if (self->fd >= 0)
		close(self->fd);
}

static int do_register(FIXTURE_DATA(reg) *self)
{
	return fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, &self->args);
}

static int do_unregister(FIXTURE_DATA(reg) *self)
{
	return fp_ioctl(self->fd, FIBER_PREEMPT_IOC_UNREGISTER, NULL);
}

TEST_F(reg, register_unregister)
{
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
	/* The same thread may register again afterwards. */
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, default_slice)
{
	self->args.slice_ns = 0;
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, twice_is_busy)
{
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(-EBUSY, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, unregister_unregistered)
{
	ASSERT_EQ(-ENOENT, do_unregister(self));
}

TEST_F(reg, bad_args_pointer)
{
	ASSERT_EQ(-EFAULT, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, NULL));
	ASSERT_EQ(-EFAULT, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER,
				    (void *)-4096L));
}

TEST_F(reg, bad_size)
{
	self->args.size = 0;
	ASSERT_EQ(-EINVAL, do_register(self));
	self->args.size = sizeof(self->args) - 8;
	ASSERT_EQ(-EINVAL, do_register(self));
}

TEST_F(reg, larger_size_needs_zero_tail)
{
	struct {
		struct fiber_preempt_register args;
		__u64 tail;
	} big;

	big.args = self->args;
	big.args.size = sizeof(big);
	big.tail = 1;
	ASSERT_EQ(-E2BIG, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, &big));
	big.tail = 0;
	ASSERT_EQ(0, fp_ioctl(self->fd, FIBER_PREEMPT_IOC_REGISTER, &big));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, unknown_flags)
{
	self->args.flags = FIBER_PREEMPT_REG_FLAGS << 1;
	ASSERT_EQ(-EINVAL, do_register(self));
	self->args.flags = 0x80000000u;
	ASSERT_EQ(-EINVAL, do_register(self));
}

/* Known on every architecture; it only changes what arm64 delivers. */
TEST_F(reg, saves_sve_flag)
{
	self->args.flags = FIBER_PREEMPT_REG_SAVES_SVE;
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, nonzero_padding)
{
	self->args.__pad = 1;
	ASSERT_EQ(-EINVAL, do_register(self));
}

TEST_F(reg, ctl_unaligned)
{
	self->args.ctl += 8;
	ASSERT_EQ(-EINVAL, do_register(self));
	self->args.ctl = 0;
	ASSERT_EQ(-EINVAL, do_register(self));
}

TEST_F(reg, ctl_unmapped)
{
	void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, p);
	self->args.ctl = (uintptr_t)p;
	ASSERT_EQ(-EFAULT, do_register(self));
	ASSERT_EQ(0, munmap(p, 4096));
	ASSERT_EQ(-EFAULT, do_register(self));
}

TEST_F(reg, ctl_read_only)
{
	struct fiber_preempt_ctl *ctl = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, ctl);
	ctl->size = sizeof(*ctl);
	ASSERT_EQ(0, mprotect(ctl, 4096, PROT_READ));
	self->args.ctl = (uintptr_t)ctl;
	ASSERT_EQ(-EFAULT, do_register(self));
	munmap(ctl, 4096);
}

/* A control block at the start of a fresh mapping: NULL if none could be made. */
static struct fiber_preempt_ctl *map_ctl(size_t len, int flags, int fd)
{
	struct fiber_preempt_ctl *ctl = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);

	if (ctl == MAP_FAILED)
		return NULL;
	ctl->size = sizeof(*ctl);
	return ctl;
}

/* The module writes the block behind the owner's back: only private memory. */
TEST_F(reg, ctl_in_shared_anonymous_memory)
{
	struct fiber_preempt_ctl *ctl = map_ctl(4096, MAP_SHARED | MAP_ANONYMOUS, -1);

	ASSERT_NE(NULL, ctl);
	self->args.ctl = (uintptr_t)ctl;
	ASSERT_EQ(-EOPNOTSUPP, do_register(self));
	munmap(ctl, 4096);
}

TEST_F(reg, ctl_in_shared_file_mapping)
{
	int mfd = memfd_create("fp-ctl", MFD_CLOEXEC);
	struct fiber_preempt_ctl *ctl;

	ASSERT_LE(0, mfd);
	ASSERT_EQ(0, ftruncate(mfd, 4096));
	ctl = map_ctl(4096, MAP_SHARED, mfd);
	ASSERT_NE(NULL, ctl);
	self->args.ctl = (uintptr_t)ctl;
	ASSERT_EQ(-EOPNOTSUPP, do_register(self));
	munmap(ctl, 4096);
	close(mfd);
}

/* A private mapping of a file: the pin breaks copy-on-write, the file stays as it was. */
TEST_F(reg, ctl_in_private_file_mapping)
{
	int mfd = memfd_create("fp-ctl", MFD_CLOEXEC);
	struct fiber_preempt_ctl *ctl, in_file;

	ASSERT_LE(0, mfd);
	ASSERT_EQ(0, ftruncate(mfd, 4096));
	ctl = map_ctl(4096, MAP_PRIVATE, mfd);
	ASSERT_NE(NULL, ctl);
	self->args.ctl = (uintptr_t)ctl;
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
	ASSERT_EQ(sizeof(in_file), pread(mfd, &in_file, sizeof(in_file), 0));
	EXPECT_EQ(0, in_file.size);
	munmap(ctl, 4096);
	close(mfd);
}

/* Reserves huge pages if none are (as root); false if there are none to map. */
static bool have_huge_pages(void)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r+");
	long n = 0;

	if (!f)
		return false;
	if (fscanf(f, "%ld", &n) == 1 && n == 0) {
		rewind(f);
		fprintf(f, "4\n");
	}
	fclose(f);
	return true;
}

TEST_F(reg, ctl_in_huge_pages)
{
	const size_t len = 2 << 20;
	struct fiber_preempt_ctl *ctl;

	if (!have_huge_pages())
		SKIP(return, "no hugetlbfs");
	ctl = map_ctl(len, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1);
	if (!ctl)
		SKIP(return, "no huge page free: %s", strerror(errno));
	/* Not at the start of the huge page: the pin is of one small page of it. */
	self->args.ctl = (uintptr_t)ctl + len / 2;
	((struct fiber_preempt_ctl *)(uintptr_t)self->args.ctl)->size = sizeof(*ctl);
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
	munmap(ctl, len);

	ctl = map_ctl(len, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1);
	if (!ctl)
		SKIP(return, "no shared huge page free: %s", strerror(errno));
	self->args.ctl = (uintptr_t)ctl;
	ASSERT_EQ(-EOPNOTSUPP, do_register(self));
	munmap(ctl, len);
}

TEST_F(reg, ctl_kernel_address)
{
	self->args.ctl = 0xffff888000000000ull;
	ASSERT_EQ(-EFAULT, do_register(self));
}

TEST_F(reg, ctl_size_too_small)
{
	self->tctl.ctl.size = sizeof(self->tctl.ctl) - 8;
	ASSERT_EQ(-EINVAL, do_register(self));
}

TEST_F(reg, bad_upcall)
{
	self->args.upcall = 0;
	ASSERT_EQ(-EINVAL, do_register(self));
	fp_fill_register(&self->args, &self->tctl);
	self->args.upcall_end = self->args.upcall;
	ASSERT_EQ(-EINVAL, do_register(self));
	self->args.upcall = 0xffffffff81000000ull;
	self->args.upcall_end = self->args.upcall + 16;
	ASSERT_EQ(-EINVAL, do_register(self));
}

TEST_F(reg, slice_bounds)
{
	self->args.slice_ns = FIBER_PREEMPT_MIN_SLICE_NS - 1;
	ASSERT_EQ(-ERANGE, do_register(self));
	self->args.slice_ns = FIBER_PREEMPT_MAX_SLICE_NS + 1;
	ASSERT_EQ(-ERANGE, do_register(self));
	self->args.slice_ns = FIBER_PREEMPT_MIN_SLICE_NS;
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, bad_ranges)
{
	self->args.nr_ranges = FIBER_PREEMPT_MAX_RANGES + 1;
	ASSERT_EQ(-EINVAL, do_register(self));

	self->args.nr_ranges = 1;
	self->args.ranges[0].start = 0x2000;
	self->args.ranges[0].end = 0x2000;
	ASSERT_EQ(-EINVAL, do_register(self));

	self->args.ranges[0].end = 0xffff800000000000ull;
	ASSERT_EQ(-EINVAL, do_register(self));

	/* An entry past nr_ranges must be zero. */
	self->args.ranges[0].end = 0x3000;
	self->args.ranges[1].start = 0x1000;
	ASSERT_EQ(-EINVAL, do_register(self));

	self->args.ranges[1].start = 0;
	ASSERT_EQ(0, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

TEST_F(reg, registration_outlives_close)
{
	int fd2 = fp_open();

	ASSERT_LE(0, fd2);
	ASSERT_EQ(0, fp_ioctl(fd2, FIBER_PREEMPT_IOC_REGISTER, &self->args));
	ASSERT_EQ(0, close(fd2));
	/* The registration belongs to the thread, not to the file. */
	ASSERT_EQ(-EBUSY, do_register(self));
	ASSERT_EQ(0, do_unregister(self));
}

/*
 * Garbage in every field, including sizes and pointers: each call fails
 * with one of the documented errors, or succeeds and can be undone.
 */
TEST_F(reg, random_garbage)
{
	uint64_t seed = 0x2545f4914f6cdd1dULL;
	union {
		struct fiber_preempt_register args;
		uint64_t words[32];
	} u;
	int i, j, ret;

	for (i = 0; i < 20000; i++) {
		for (j = 0; j < 32; j++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			u.words[j] = seed;
		}
		/* Keep some calls past the first checks. */
		if (i & 1) {
			u.args.size = sizeof(u.args);
			u.args.flags = 0;
			u.args.__pad = 0;
		}
		if (i & 2)
			u.args.ctl = (uintptr_t)&self->tctl.ctl;
		ret = do_register(self);
		if (!ret) {
			ASSERT_EQ(0, do_unregister(self));
			continue;
		}
		ASSERT_TRUE(ret == -EINVAL || ret == -EFAULT || ret == -E2BIG ||
			    ret == -ERANGE) TH_LOG("call %d: %s", i, strerror(-ret));
	}
}

TEST_HARNESS_MAIN
