/* imgboot: finding the kernel and initrd inside disk images.  Fixture file
 * systems are built at test time with `mke2fs -d`; partition tables (MBR, GPT
 * with CRCs) are written here, so only e2fsprogs is needed. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <vmsvc/err.h>
#include <vmsvc/imgboot.h>

static char tmpdir[64];
static bool have_mke2fs;
static int fixture_no;

/* ---- helpers: trees, file systems, partition tables ---- */

static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	if (rc != 0)
		fail_msg("command failed (%d): %s", rc, cmd);
}

/* A fresh empty directory for a file system tree. */
static void new_tree(char *dir, size_t n)
{
	snprintf(dir, n, "%s/tree%d", tmpdir, ++fixture_no);
	assert_int_equal(mkdir(dir, 0755), 0);
}

static void put_file(const char *dir, const char *rel, const char *content)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	char *slash = strrchr(p, '/');
	*slash = 0;
	sh("mkdir -p '%s'", p);
	*slash = '/';
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static void put_link(const char *dir, const char *rel, const char *target)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	assert_int_equal(symlink(target, p), 0);
}

/* ext4 image of the tree; returns its path in out. */
static void mkfs(const char *dir, char *out, size_t n, const char *size)
{
	snprintf(out, n, "%s/fs%d.img", tmpdir, ++fixture_no);
	sh("PATH=$PATH:/sbin:/usr/sbin mke2fs -q -t ext4 -d '%s' -F '%s' %s >/dev/null 2>&1", dir, out, size);
}

static void copy_into(int dfd, const char *src, uint64_t off)
{
	int s = open(src, O_RDONLY);
	assert_true(s >= 0);
	char buf[65536];
	ssize_t got;
	while ((got = read(s, buf, sizeof(buf))) > 0) {
		assert_int_equal(pwrite(dfd, buf, (size_t)got, (off_t)off), got);
		off += (uint64_t)got;
	}
	close(s);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static void guid_bytes(const char *t, uint8_t g[16])
{
	unsigned a, b, c, d[8];
	assert_int_equal(sscanf(t, "%8x-%4x-%4x-%2x%2x-%2x%2x%2x%2x%2x%2x", &a, &b, &c, &d[0], &d[1], &d[2], &d[3],
				&d[4], &d[5], &d[6], &d[7]), 11);
	put32(g, a);
	g[4] = (uint8_t)b, g[5] = (uint8_t)(b >> 8), g[6] = (uint8_t)c, g[7] = (uint8_t)(c >> 8);
	for (int i = 0; i < 8; i++)
		g[8 + i] = (uint8_t)d[i];
}

#define LINUX_FS "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
#define LINUX_ROOT "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
#define MS_DATA "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
#define DISK_SECTORS 81920ULL   /* 40 MiB */

struct tpart {
	const char *fs;       /* file to copy in, NULL = leave zero */
	uint64_t first, last; /* LBAs, inclusive */
	const char *type;     /* GUID text (GPT) */
	uint8_t mbr_type;
};

static int new_disk(char *out, size_t n, uint64_t sectors)
{
	snprintf(out, n, "%s/disk%d.img", tmpdir, ++fixture_no);
	int fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(sectors * 512)), 0);
	return fd;
}

/* Write one GPT header (+ its array) at hdr_lba with the array at arr_lba. */
static void write_gpt_copy(int fd, const uint8_t *arr, uint64_t hdr_lba, uint64_t alt_lba, uint64_t arr_lba,
			   uint64_t sectors)
{
	uint8_t h[512] = { 0 };
	memcpy(h, "EFI PART", 8);
	put32(h + 8, 0x00010000);
	put32(h + 12, 92);
	put64(h + 24, hdr_lba);
	put64(h + 32, alt_lba);
	put64(h + 40, 34);
	put64(h + 48, sectors - 34);
	for (int i = 0; i < 16; i++)
		h[56 + i] = (uint8_t)(0x11 * i);
	put64(h + 72, arr_lba);
	put32(h + 80, 128);
	put32(h + 84, 128);
	put32(h + 88, imgboot_crc32(arr, 128 * 128));
	put32(h + 16, imgboot_crc32(h, 92));
	assert_int_equal(pwrite(fd, arr, 128 * 128, (off_t)(arr_lba * 512)), 128 * 128);
	assert_int_equal(pwrite(fd, h, 512, (off_t)(hdr_lba * 512)), 512);
}

static void protective_mbr(int fd, uint64_t sectors)
{
	uint8_t m[512] = { 0 };
	m[446 + 4] = 0xee;
	put32(m + 446 + 8, 1);
	put32(m + 446 + 12, (uint32_t)(sectors - 1));
	m[510] = 0x55, m[511] = 0xaa;
	assert_int_equal(pwrite(fd, m, 512, 0), 512);
}

static void make_gpt(char *out, size_t n, const struct tpart *p, int np)
{
	int fd = new_disk(out, n, DISK_SECTORS);
	uint8_t arr[128 * 128] = { 0 };
	for (int i = 0; i < np; i++) {
		uint8_t *e = arr + 128 * i;
		if (!p[i].type)
			continue;
		guid_bytes(p[i].type, e);
		e[16] = (uint8_t)i + 1;   /* unique GUID: anything non-zero */
		put64(e + 32, p[i].first);
		put64(e + 40, p[i].last);
		if (p[i].fs)
			copy_into(fd, p[i].fs, p[i].first * 512);
	}
	protective_mbr(fd, DISK_SECTORS);
	write_gpt_copy(fd, arr, 1, DISK_SECTORS - 1, 2, DISK_SECTORS);
	write_gpt_copy(fd, arr, DISK_SECTORS - 1, 1, DISK_SECTORS - 33, DISK_SECTORS);
	close(fd);
}

static void mbr_entry(uint8_t *e, uint8_t status, uint8_t type, uint32_t start, uint32_t count)
{
	e[0] = status, e[4] = type;
	put32(e + 8, start);
	put32(e + 12, count);
}

static void make_mbr(char *out, size_t n, const struct tpart *p, int np)
{
	int fd = new_disk(out, n, DISK_SECTORS);
	uint8_t m[512] = { 0 };
	for (int i = 0; i < np; i++) {
		mbr_entry(m + 446 + 16 * i, 0, p[i].mbr_type, (uint32_t)p[i].first, (uint32_t)(p[i].last - p[i].first + 1));
		if (p[i].fs)
			copy_into(fd, p[i].fs, p[i].first * 512);
	}
	m[510] = 0x55, m[511] = 0xaa;
	assert_int_equal(pwrite(fd, m, 512, 0), 512);
	close(fd);
}

static void flip_byte(const char *img, uint64_t off)
{
	int fd = open(img, O_RDWR);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0xff;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void assert_fd_content(const char *path, const char *expect)
{
	char buf[256] = { 0 };
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	assert_string_equal(buf, expect);
}

/* A tree with a versioned kernel + initrd and the Debian symlinks. */
static void debian_tree(char *dir, size_t n, const char *ver)
{
	char p[256], c[256];
	new_tree(dir, n);
	snprintf(p, sizeof(p), "boot/vmlinuz-%s", ver);
	snprintf(c, sizeof(c), "kernel %s", ver);
	put_file(dir, p, c);
	snprintf(p, sizeof(p), "boot/initrd.img-%s", ver);
	snprintf(c, sizeof(c), "initrd %s", ver);
	put_file(dir, p, c);
	snprintf(p, sizeof(p), "boot/vmlinuz-%s", ver);
	put_link(dir, "vmlinuz", p);
	snprintf(p, sizeof(p), "boot/initrd.img-%s", ver);
	put_link(dir, "initrd.img", p);
	put_file(dir, "etc/fstab", "# test\n");
}

#define NEED_MKE2FS() do { if (!have_mke2fs) { print_message("mke2fs not found: skipped\n"); skip(); } } while (0)

/* ---- tests ---- */

static void test_version_cmp(void **state)
{
	assert_true(imgboot_version_cmp("6.1.0-18-amd64", "6.1.0-9-amd64") > 0);
	assert_true(imgboot_version_cmp("5.10.0-30", "6.1.0-1") < 0);
	assert_true(imgboot_version_cmp("6.1.0", "6.1.0") == 0);
	assert_true(imgboot_version_cmp("6.1.0-18", "6.1.0") > 0);
	assert_true(imgboot_version_cmp("6.01", "6.1") == 0);
	assert_true(imgboot_version_cmp("6.1.10", "6.1.9") > 0);
	assert_true(imgboot_version_cmp("99999999999999999999999", "1") > 0);
}

static void test_crc32(void **state)
{
	assert_int_equal(imgboot_crc32("123456789", 9), 0xcbf43926u);
}

static void test_bare_fs_vmlinuz_symlink(void **state)
{
	NEED_MKE2FS();
	char dir[128], img[128];
	debian_tree(dir, sizeof(dir), "6.1.0-18-cloud-amd64");
	mkfs(dir, img, sizeof(img), "16M");
	struct imgboot_result r;
	int rc = imgboot_find(img, &r);
	assert_int_equal(rc, 0);
	assert_string_equal(r.kernel_file, "/boot/vmlinuz-6.1.0-18-cloud-amd64");
	assert_string_equal(r.initrd_file, "/boot/initrd.img-6.1.0-18-cloud-amd64");
	assert_string_equal(r.version, "6.1.0-18-cloud-amd64");
	assert_int_equal(r.partition, 0);
	assert_string_equal(r.table, "none");
	assert_string_equal(r.fs_type, "ext4");
	assert_string_equal(r.root_dev, "/dev/vda");
	assert_int_equal(strlen(r.root_uuid), 5 + 36);
	assert_fd_content(r.kernel_path, "kernel 6.1.0-18-cloud-amd64");
	assert_fd_content(r.initrd_path, "initrd 6.1.0-18-cloud-amd64");
	imgboot_release(&r);
	assert_int_equal(r.kernel_fd, -1);
	imgboot_release(&r);
}

static void test_gpt_kernel_in_partition_2(void **state)
{
	NEED_MKE2FS();
	char d1[128], d2[128], f1[128], f2[128], img[128];
	new_tree(d1, sizeof(d1));
	put_file(d1, "data/readme", "no kernel here");
	mkfs(d1, f1, sizeof(f1), "8M");
	debian_tree(d2, sizeof(d2), "6.1.0-7");
	mkfs(d2, f2, sizeof(f2), "16M");
	struct tpart p[] = {
		{ f1, 2048, 2048 + 16384 - 1, LINUX_FS },
		{ f2, 20480, 20480 + 32768 - 1, LINUX_FS },
	};
	make_gpt(img, sizeof(img), p, 2);
	struct imgboot_result r;
	int rc = imgboot_find(img, &r);
	assert_int_equal(rc, 0);
	assert_int_equal(r.partition, 2);
	assert_string_equal(r.table, "GPT");
	assert_string_equal(r.root_dev, "/dev/vda2");
	assert_int_equal(r.fs_offset, 20480 * 512ULL);
	assert_fd_content(r.kernel_path, "kernel 6.1.0-7");
	assert_fd_content(r.initrd_path, "initrd 6.1.0-7");
	imgboot_release(&r);
}

/* A Linux root partition is searched before a "Microsoft basic data" one. */
static void test_gpt_prefers_linux_root_type(void **state)
{
	NEED_MKE2FS();
	char d1[128], d2[128], f1[128], f2[128], img[128];
	debian_tree(d1, sizeof(d1), "1.0");
	mkfs(d1, f1, sizeof(f1), "8M");
	debian_tree(d2, sizeof(d2), "2.0");
	mkfs(d2, f2, sizeof(f2), "8M");
	struct tpart p[] = {
		{ f1, 2048, 2048 + 16384 - 1, MS_DATA },
		{ f2, 20480, 20480 + 16384 - 1, LINUX_ROOT },
	};
	make_gpt(img, sizeof(img), p, 2);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_int_equal(r.partition, 2);
	assert_string_equal(r.version, "2.0");
	imgboot_release(&r);
}

static void test_gpt_primary_damaged_uses_backup(void **state)
{
	NEED_MKE2FS();
	char d[128], f[128], img[128];
	debian_tree(d, sizeof(d), "3.0");
	mkfs(d, f, sizeof(f), "8M");
	struct tpart p[] = { { f, 2048, 2048 + 16384 - 1, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 1);
	flip_byte(img, 512 + 40);   /* inside the primary header: CRC no longer matches */
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_int_equal(r.partition, 1);
	imgboot_release(&r);
}

static void test_gpt_crc_mismatch(void **state)
{
	NEED_MKE2FS();
	char d[128], f[128], img[128];
	debian_tree(d, sizeof(d), "3.0");
	mkfs(d, f, sizeof(f), "8M");
	struct tpart p[] = { { f, 2048, 2048 + 16384 - 1, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 1);
	flip_byte(img, 512 + 40);
	flip_byte(img, (DISK_SECTORS - 1) * 512 + 40);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "GPT header CRC mismatch at offset 512"));
	assert_non_null(strstr(err_msg(), img));
	assert_int_equal(r.kernel_fd, -1);
}

static void test_gpt_array_crc_mismatch(void **state)
{
	char img[128];
	struct tpart p[] = { { NULL, 2048, 4095, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 1);
	flip_byte(img, 1024 + 32);              /* primary array */
	flip_byte(img, (DISK_SECTORS - 33) * 512 + 32);   /* backup array */
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "GPT partition array CRC mismatch at offset 1024"));
}

static void test_gpt_partition_beyond_end(void **state)
{
	char img[128];
	struct tpart p[] = { { NULL, 2048, DISK_SECTORS + 100, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 1);
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "GPT partition 1"));
	assert_non_null(strstr(err_msg(), "extends beyond the end of the image"));
}

static void test_gpt_overlap(void **state)
{
	char img[128];
	struct tpart p[] = { { NULL, 2048, 10000, LINUX_FS }, { NULL, 9000, 12000, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 2);
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "partitions 1 and 2 overlap"));
}

/* A correctly checksummed header claiming a million entries. */
static void test_gpt_absurd_entry_count(void **state)
{
	char img[128];
	int fd = new_disk(img, sizeof(img), DISK_SECTORS);
	uint8_t h[512] = { 0 };
	memcpy(h, "EFI PART", 8);
	put32(h + 12, 92);
	put64(h + 24, 1);
	put64(h + 40, 34);
	put64(h + 48, DISK_SECTORS - 34);
	put64(h + 72, 2);
	put32(h + 80, 1000000);
	put32(h + 84, 128);
	put32(h + 16, imgboot_crc32(h, 92));
	assert_int_equal(pwrite(fd, h, 512, 512), 512);
	close(fd);
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "absurd partition array"));
}

static void test_gpt_no_ext_fs(void **state)
{
	char img[128];
	struct tpart p[] = { { NULL, 2048, 4095, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" }, { NULL, 4096, 8191, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 2);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -ENOENT);
	assert_non_null(strstr(err_msg(), "no ext2/3/4 filesystem found (partition table: GPT, 2 partitions: "));
	assert_non_null(strstr(err_msg(), "EFI system"));
}

static void test_gpt_no_kernel(void **state)
{
	NEED_MKE2FS();
	char d[128], f[128], img[128];
	new_tree(d, sizeof(d));
	put_file(d, "etc/hostname", "nokernel\n");
	mkfs(d, f, sizeof(f), "8M");
	struct tpart p[] = { { f, 2048, 2048 + 16384 - 1, LINUX_FS } };
	make_gpt(img, sizeof(img), p, 1);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -ENOENT);
	assert_non_null(strstr(err_msg(),
			       "no kernel found (looked for /vmlinuz, /boot/vmlinuz, /boot/vmlinuz-* in partition 1 (ext4))"));
}

static void test_mbr(void **state)
{
	NEED_MKE2FS();
	char d[128], f[128], img[128];
	debian_tree(d, sizeof(d), "4.19.0");
	mkfs(d, f, sizeof(f), "16M");
	struct tpart p[] = { { NULL, 2048, 4095, NULL, 0x82 }, { f, 4096, 4096 + 32768 - 1, NULL, 0x83 } };
	make_mbr(img, sizeof(img), p, 2);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_int_equal(r.partition, 2);
	assert_string_equal(r.table, "MBR");
	assert_string_equal(r.root_dev, "/dev/vda2");
	assert_fd_content(r.kernel_path, "kernel 4.19.0");
	imgboot_release(&r);
}

/* Extended partition at 4096 with one logical partition (vda5) 2048 sectors in. */
static void test_mbr_logical(void **state)
{
	NEED_MKE2FS();
	char d[128], f[128], img[128];
	debian_tree(d, sizeof(d), "5.5");
	mkfs(d, f, sizeof(f), "16M");
	struct tpart p[] = { { NULL, 4096, 4096 + 40000 - 1, NULL, 0x05 } };
	make_mbr(img, sizeof(img), p, 1);
	int fd = open(img, O_RDWR);
	uint8_t ebr[512] = { 0 };
	mbr_entry(ebr + 446, 0, 0x83, 2048, 32768);
	ebr[510] = 0x55, ebr[511] = 0xaa;
	assert_int_equal(pwrite(fd, ebr, 512, 4096 * 512), 512);
	copy_into(fd, f, (4096 + 2048) * 512ULL);
	close(fd);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_int_equal(r.partition, 5);
	assert_string_equal(r.root_dev, "/dev/vda5");
	imgboot_release(&r);
}

static void test_mbr_beyond_end(void **state)
{
	char img[128];
	struct tpart p[] = { { NULL, 2048, DISK_SECTORS * 4, NULL, 0x83 } };
	make_mbr(img, sizeof(img), p, 1);
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "MBR partition 1"));
	assert_non_null(strstr(err_msg(), "extends beyond the end of the image"));
}

static void test_mbr_ebr_loop(void **state)
{
	char img[128];
	struct tpart p[] = { { NULL, 4096, 4096 + 40000 - 1, NULL, 0x0f } };
	make_mbr(img, sizeof(img), p, 1);
	int fd = open(img, O_RDWR);
	uint8_t ebr[512] = { 0 };
	/* The first EBR links to sector 100 of the extended partition, and the EBR
	 * there links to sector 100 again. */
	mbr_entry(ebr + 462, 0, 0x05, 100, 100);
	ebr[510] = 0x55, ebr[511] = 0xaa;
	assert_int_equal(pwrite(fd, ebr, 512, 4096 * 512), 512);
	assert_int_equal(pwrite(fd, ebr, 512, (4096 + 100) * 512), 512);
	close(fd);
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "loops back"));
}

static void test_versioned_kernels_pick_highest(void **state)
{
	NEED_MKE2FS();
	char d[128], img[128];
	new_tree(d, sizeof(d));
	put_file(d, "boot/vmlinuz-6.1.0-9-amd64", "k9");
	put_file(d, "boot/vmlinuz-6.1.0-18-amd64", "k18");
	put_file(d, "boot/vmlinuz-5.10.0-30-amd64", "k5");
	put_file(d, "boot/vmlinuz-6.1.0-20-amd64.dpkg-old", "old");
	put_file(d, "boot/initrd.img-6.1.0-9-amd64", "i9");
	put_file(d, "boot/initramfs-6.1.0-18-amd64.img", "i18");
	put_file(d, "boot/config-6.1.0-18-amd64", "cfg");
	mkfs(d, img, sizeof(img), "16M");
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_string_equal(r.kernel_file, "/boot/vmlinuz-6.1.0-18-amd64");
	assert_string_equal(r.initrd_file, "/boot/initramfs-6.1.0-18-amd64.img");
	assert_fd_content(r.kernel_path, "k18");
	assert_fd_content(r.initrd_path, "i18");
	imgboot_release(&r);
}

/* /initrd.img pointing at another version's initrd is not used. */
static void test_initrd_must_match(void **state)
{
	NEED_MKE2FS();
	char d[128], img[128];
	new_tree(d, sizeof(d));
	put_file(d, "boot/vmlinuz-2.0", "k2");
	put_file(d, "boot/initrd.img-1.0", "i1");
	put_link(d, "vmlinuz", "boot/vmlinuz-2.0");
	put_link(d, "initrd.img", "boot/initrd.img-1.0");
	mkfs(d, img, sizeof(img), "16M");
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_string_equal(r.kernel_file, "/boot/vmlinuz-2.0");
	assert_string_equal(r.initrd_file, "");
	assert_string_equal(r.initrd_path, "");
	assert_int_equal(r.initrd_fd, -1);
	imgboot_release(&r);
}

/* Absolute and ../-laden symlinks stay inside the file system; /boot/vmlinuz
 * (Fedora-style, no version) pairs with /boot/initrd.img. */
static void test_symlinks_stay_inside(void **state)
{
	NEED_MKE2FS();
	char d[128], img[128];
	new_tree(d, sizeof(d));
	put_file(d, "images/k", "kernel x");
	put_file(d, "images/i", "initrd x");
	sh("mkdir -p '%s/boot'", d);
	put_link(d, "boot/vmlinuz", "../../../../../../images/k");
	put_link(d, "boot/initrd.img", "/../../images/./i");
	mkfs(d, img, sizeof(img), "16M");
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), 0);
	assert_string_equal(r.kernel_file, "/images/k");
	assert_string_equal(r.initrd_file, "/images/i");
	assert_string_equal(r.version, "");
	imgboot_release(&r);
}

static void test_symlink_loop(void **state)
{
	NEED_MKE2FS();
	char d[128], img[128];
	new_tree(d, sizeof(d));
	put_link(d, "vmlinuz", "vmlinuz.a");
	put_link(d, "vmlinuz.a", "/vmlinuz");
	mkfs(d, img, sizeof(img), "16M");
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -ENOENT);
	assert_non_null(strstr(err_msg(), "no kernel found"));
	assert_non_null(strstr(err_msg(), "/vmlinuz: symlink loop"));
}

static void test_kernel_too_big(void **state)
{
	NEED_MKE2FS();
	char d[128], img[128], p[256];
	new_tree(d, sizeof(d));
	snprintf(p, sizeof(p), "%s/boot", d);
	assert_int_equal(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/boot/vmlinuz-9.9", d);
	int fd = open(p, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 300LL << 20), 0);   /* sparse: 300 MiB of holes */
	close(fd);
	mkfs(d, img, sizeof(img), "16M");
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -EFBIG);
	assert_non_null(strstr(err_msg(), "/boot/vmlinuz-9.9"));
	assert_non_null(strstr(err_msg(), "256 MiB limit"));
}

static void test_random_bytes(void **state)
{
	char img[128];
	int fd = new_disk(img, sizeof(img), 2048);
	uint8_t buf[4096];
	srand(7);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rand();
	buf[510] = 0, buf[1080] = 0;
	assert_int_equal(pwrite(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	close(fd);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "no partition table (MBR or GPT) and no ext2/3/4 file system"));
}

static void test_qcow2_named(void **state)
{
	char img[128];
	int fd = new_disk(img, sizeof(img), 16);
	assert_int_equal(pwrite(fd, "QFI\xfb\0\0\0\3", 8, 0), 8);
	close(fd);
	struct imgboot_result r;
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "qcow2"));
}

static void test_missing_and_tiny(void **state)
{
	struct imgboot_result r;
	char img[128];
	snprintf(img, sizeof(img), "%s/does-not-exist.img", tmpdir);
	assert_int_equal(imgboot_find(img, &r), -ENOENT);
	assert_non_null(strstr(err_msg(), "does-not-exist.img"));
	int fd = new_disk(img, sizeof(img), 1);
	close(fd);
	assert_true(imgboot_find(img, &r) < 0);
	assert_non_null(strstr(err_msg(), "too small"));
}

/* A bare ext4 file system whose superblock claims more blocks than the image has. */
static void test_truncated_fs(void **state)
{
	NEED_MKE2FS();
	char d[128], img[128];
	debian_tree(d, sizeof(d), "1.1");
	mkfs(d, img, sizeof(img), "16M");
	assert_int_equal(truncate(img, 8 << 20), 0);
	struct imgboot_result r;
	assert_int_equal(imgboot_find(img, &r), -ENOENT);
	assert_non_null(strstr(err_msg(), "file system larger than its image"));
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmsvc-imgboot-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	have_mke2fs = system("PATH=$PATH:/sbin:/usr/sbin command -v mke2fs >/dev/null 2>&1") == 0;
	if (!have_mke2fs)
		fprintf(stderr, "test_imgboot: mke2fs not found (apt-get install e2fsprogs): file system tests skipped\n");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version_cmp),
		cmocka_unit_test(test_crc32),
		cmocka_unit_test(test_bare_fs_vmlinuz_symlink),
		cmocka_unit_test(test_gpt_kernel_in_partition_2),
		cmocka_unit_test(test_gpt_prefers_linux_root_type),
		cmocka_unit_test(test_gpt_primary_damaged_uses_backup),
		cmocka_unit_test(test_gpt_crc_mismatch),
		cmocka_unit_test(test_gpt_array_crc_mismatch),
		cmocka_unit_test(test_gpt_partition_beyond_end),
		cmocka_unit_test(test_gpt_overlap),
		cmocka_unit_test(test_gpt_absurd_entry_count),
		cmocka_unit_test(test_gpt_no_ext_fs),
		cmocka_unit_test(test_gpt_no_kernel),
		cmocka_unit_test(test_mbr),
		cmocka_unit_test(test_mbr_logical),
		cmocka_unit_test(test_mbr_beyond_end),
		cmocka_unit_test(test_mbr_ebr_loop),
		cmocka_unit_test(test_versioned_kernels_pick_highest),
		cmocka_unit_test(test_initrd_must_match),
		cmocka_unit_test(test_symlinks_stay_inside),
		cmocka_unit_test(test_symlink_loop),
		cmocka_unit_test(test_kernel_too_big),
		cmocka_unit_test(test_random_bytes),
		cmocka_unit_test(test_qcow2_named),
		cmocka_unit_test(test_missing_and_tiny),
		cmocka_unit_test(test_truncated_fs),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
