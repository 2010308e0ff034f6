/* Copy-on-write overlay: the base never changes, reads see writes (whole and
 * partial clusters, concurrent writes to one cluster), persistence across reopen,
 * corruption and changed-base detection, ephemeral overlays, extent listing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "test_blk_util.h"

#define CL 65536u
#define BASE_LEN (4u * 1024 * 1024 + 3 * 512)   /* ends in a partial cluster */

static enum blk_engine_kind engine;
static uint8_t *base0;                      /* base contents at creation */

static int setup(void **state)
{
	tdir_make();
	base0 = make_file(tpath("base.img"), BASE_LEN);
	return 0;
}

static int teardown(void **state)
{
	free(base0);
	tdir_remove();
	return 0;
}

static int try_open(const char *ovl, bool ro, bool ephemeral, struct blk **b)
{
	struct blk_spec s = { .path = tpath("base.img"), .overlay = ovl, .read_only = ro, .ephemeral = ephemeral,
			      .overlay_dir = tdir, .engine = engine, .queue_depth = 128 };
	return blk_open(&s, b);
}

static struct blk *open_ovl(const char *ovl)
{
	struct blk *b;
	if (try_open(ovl, false, false, &b))
		fail_msg("blk_open: %s", err_msg());
	return b;
}

static void assert_base_untouched(void)
{
	size_t len;
	uint8_t *now = slurp(tpath("base.img"), &len);
	assert_int_equal(len, BASE_LEN);
	assert_memory_equal(now, base0, BASE_LEN);
	free(now);
}

static void assert_disk_equals(struct blk *b, const uint8_t *want)
{
	uint64_t n = blk_size(b);
	uint8_t *all = malloc(n);
	assert_int_equal(sync_rw(b, false, 0, all, n), 0);
	for (uint64_t i = 0; i < n; i++)
		if (all[i] != want[i])
			fail_msg("disk differs at byte %llu", (unsigned long long)i);
	free(all);
}

/* Writes of every shape, write-zeroes and discard, against a shadow copy. */
static void scribble(struct blk *b, uint8_t *shadow)
{
	uint64_t size = blk_size(b);
	uint8_t *buf = malloc(3 * CL);
	struct { uint64_t off, len; } w[] = {
		{ 0, 512 },                        /* partial first cluster */
		{ CL + 4096, 8192 },               /* partial, middle of a cluster */
		{ 3 * CL, CL },                    /* exactly one cluster */
		{ 5 * CL - 1024, 2 * CL + 2048 },  /* spans 4 clusters, partial at both ends */
		{ size - 1536, 1536 },             /* partial last cluster */
		{ CL + 4096, 512 },                /* rewrite of an allocated cluster */
		{ 20 * CL, 3 * CL },
	};
	for (unsigned i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		fill_random(buf, w[i].len);
		memcpy(shadow + w[i].off, buf, w[i].len);
		assert_int_equal(sync_rw(b, true, w[i].off, buf, w[i].len), 0);
	}
	/* write-zeroes: whole clusters (zero entries) and partial (real zeros, copy-up) */
	assert_int_equal(sync_wz(b, 20 * CL + 512, 2 * CL), 0);
	memset(shadow + 20 * CL + 512, 0, 2 * CL);
	assert_int_equal(sync_wz(b, 30 * CL, CL), 0);
	memset(shadow + 30 * CL, 0, CL);
	/* discard: whole clusters read as zeros afterwards; partial ends untouched */
	assert_int_equal(sync_discard(b, 3 * CL - 512, CL + 1024), 0);
	memset(shadow + 3 * CL, 0, CL);
	assert_int_equal(sync_discard(b, 40 * CL, CL), 0);
	memset(shadow + 40 * CL, 0, CL);
	free(buf);
}

static void test_writes_reads_base_untouched(void **state)
{
	struct blk *b = open_ovl(tpath("a.ovl"));
	assert_int_equal(blk_size(b), BASE_LEN);
	assert_int_equal(blk_overlay_cluster_size(b), CL);
	uint8_t *shadow = malloc(BASE_LEN);
	memcpy(shadow, base0, BASE_LEN);
	assert_disk_equals(b, shadow);   /* fresh overlay reads as the base */
	scribble(b, shadow);
	assert_disk_equals(b, shadow);
	assert_int_equal(sync_flush(b), 0);
	assert_base_untouched();
	blk_close(b);
	assert_base_untouched();

	/* Persisted: reopen (after flush) and after a close without flush. */
	b = open_ovl(tpath("a.ovl"));
	assert_disk_equals(b, shadow);
	uint8_t buf[4096];
	fill_random(buf, sizeof(buf));
	memcpy(shadow + 50 * CL + 512, buf, sizeof(buf));
	assert_int_equal(sync_rw(b, true, 50 * CL + 512, buf, sizeof(buf)), 0);
	blk_close(b);
	b = open_ovl(tpath("a.ovl"));
	assert_disk_equals(b, shadow);
	blk_close(b);
	assert_base_untouched();
	free(shadow);
	unlink(tpath("a.ovl"));
}

/* Many concurrent 512-byte writes into the same two clusters (copy-up must be
 * serialised per cluster), plus reads of those clusters in the same batch. */
static void test_concurrent_same_cluster(void **state)
{
	struct blk *b = open_ovl(tpath("c.ovl"));
	enum { N = 96 };
	uint8_t *shadow = malloc(BASE_LEN), bufs[N][512], rbuf[8][CL];
	memcpy(shadow, base0, BASE_LEN);
	struct iovec iov[N], riov[8];
	struct done d[N], rd[8];
	memset(d, 0, sizeof(d));
	memset(rd, 0, sizeof(rd));
	for (unsigned i = 0; i < N; i++) {
		uint64_t off = 7 * CL + (i % 2) * CL + (i / 2) * 512 % CL;
		fill_random(bufs[i], 512);
		memcpy(shadow + off, bufs[i], 512);
		iov[i] = (struct iovec){ bufs[i], 512 };
		assert_int_equal(blk_write(b, off, &iov[i], 1, on_done, &d[i]), 0);
		if (i % 12 == 0) {
			riov[i / 12] = (struct iovec){ rbuf[i / 12], CL };
			assert_int_equal(blk_read(b, 7 * CL, &riov[i / 12], 1, on_done, &rd[i / 12]), 0);
		}
	}
	blk_kick(b);
	blk_drain(b);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(d[i].status, 0);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(rd[i].status, 0);
	assert_disk_equals(b, shadow);
	blk_close(b);
	b = open_ovl(tpath("c.ovl"));
	assert_disk_equals(b, shadow);
	blk_close(b);
	assert_base_untouched();
	free(shadow);
	unlink(tpath("c.ovl"));
}

static void test_extents_and_read_only(void **state)
{
	struct blk *b = open_ovl(tpath("e.ovl"));
	uint8_t buf[CL];
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(sync_rw(b, true, 0, buf, CL), 0);
	assert_int_equal(sync_rw(b, true, CL + 512, buf, 512), 0);
	assert_int_equal(sync_rw(b, true, 5 * CL, buf, 4096), 0);
	assert_int_equal(sync_discard(b, 10 * CL, 2 * CL), 0);
	uint64_t pos = 0;
	struct blk_extent e;
	assert_int_equal(blk_overlay_next_extent(b, &pos, &e), 1);
	assert_true(e.offset == 0 && e.length == 2 * CL && e.kind == BLK_EXTENT_DATA);
	assert_int_equal(blk_overlay_next_extent(b, &pos, &e), 1);
	assert_true(e.offset == 5 * CL && e.length == CL && e.kind == BLK_EXTENT_DATA);
	assert_int_equal(blk_overlay_next_extent(b, &pos, &e), 1);
	assert_true(e.offset == 10 * CL && e.length == 2 * CL && e.kind == BLK_EXTENT_ZERO);
	assert_int_equal(blk_overlay_next_extent(b, &pos, &e), 0);
	blk_close(b);

	assert_int_equal(try_open(tpath("e.ovl"), true, false, &b), 0);
	assert_true(blk_is_read_only(b));
	assert_int_equal(sync_rw(b, false, 0, buf, 512), 0);
	assert_int_equal(buf[0], 0x5a);
	assert_int_equal(sync_rw(b, true, 0, buf, 512), -EROFS);
	assert_int_equal(sync_wz(b, 0, 512), -EROFS);
	blk_close(b);
	assert_int_equal(try_open(tpath("none.ovl"), true, false, &b), -ENOENT);
	unlink(tpath("e.ovl"));
}

static void test_ephemeral_leaves_nothing(void **state)
{
	unsigned before = tdir_count();
	struct blk *b;
	assert_int_equal(try_open(NULL, false, true, &b), 0);
	assert_int_equal(tdir_count(), before);   /* unlinked from the start */
	uint8_t *shadow = malloc(BASE_LEN);
	memcpy(shadow, base0, BASE_LEN);
	scribble(b, shadow);
	assert_int_equal(sync_flush(b), 0);
	assert_disk_equals(b, shadow);
	blk_close(b);
	assert_int_equal(tdir_count(), before);
	assert_base_untouched();
	free(shadow);
}

static void patch(const char *path, uint64_t off, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
	close(fd);
}

static void expect_error(const char *ovl, const char *what, const char *offset)
{
	struct blk *b = NULL;
	int r = try_open(ovl, false, false, &b);
	if (r == 0)
		fail_msg("opened a bad overlay (%s)", what);
	assert_null(b);
	const char *m = err_msg();
	if (!strstr(m, ovl) || !strstr(m, what) || (offset && !strstr(m, offset)))
		fail_msg("error message '%s' lacks '%s' / '%s' / file name", m, what, offset ? offset : "");
}

static void make_ovl(const char *path)
{
	unlink(path);
	struct blk *b = open_ovl(path);
	uint8_t buf[8192];
	memset(buf, 1, sizeof(buf));
	assert_int_equal(sync_rw(b, true, 0, buf, sizeof(buf)), 0);
	assert_int_equal(sync_rw(b, true, 2 * CL, buf, sizeof(buf)), 0);
	blk_close(b);
}

static void test_corruption_detected(void **state)
{
	char o[512];
	snprintf(o, sizeof(o), "%s", tpath("bad.ovl"));
	make_ovl(o);
	patch(o, 0, "X", 1);
	expect_error(o, "bad magic", "offset 0");

	make_ovl(o);
	uint8_t v = 30;
	patch(o, 16, &v, 1);   /* cluster bits: caught by the header checksum */
	expect_error(o, "checksum", "offset 80");

	/* Table entry 0 pointing far past the end of the file. */
	make_ovl(o);
	uint32_t e = 100000;
	patch(o, 4096, &e, 4);
	expect_error(o, "outside the data area", "offset 4096");

	/* Entry 2 pointing at entry 0's cluster. */
	make_ovl(o);
	int fd = open(o, O_RDONLY);
	uint32_t e0;
	assert_int_equal(pread(fd, &e0, 4, 4096), 4);
	close(fd);
	patch(o, 4096 + 8, &e0, 4);
	expect_error(o, "already used", "offset 4104");

	/* Truncated: inside the header, inside the table, inside the data. */
	make_ovl(o);
	assert_int_equal(truncate(o, 100), 0);
	expect_error(o, "truncated", "offset 100");
	make_ovl(o);
	assert_int_equal(truncate(o, 8192), 0);
	expect_error(o, "truncated", "offset 8192");
	make_ovl(o);
	assert_int_equal(truncate(o, 3 * CL), 0);
	expect_error(o, "outside the data area", NULL);
	unlink(o);
}

static void test_changed_base_refused(void **state)
{
	char o[512];
	snprintf(o, sizeof(o), "%s", tpath("cb.ovl"));
	make_ovl(o);
	/* Same size, different content. */
	patch(tpath("base.img"), 10, "\xff\x00\xff", 3);
	expect_error(o, "changed", NULL);
	patch(tpath("base.img"), 10, base0 + 10, 3);
	struct blk *b;
	if (try_open(o, false, false, &b))   /* restored: accepted again */
		fail_msg("%s", err_msg());
	blk_close(b);
	/* Different size. */
	int fd = open(tpath("base.img"), O_WRONLY | O_APPEND);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
	expect_error(o, "changed", NULL);
	assert_int_equal(truncate(tpath("base.img"), BASE_LEN), 0);
	unlink(o);
}

static void test_existing_file_is_not_overlay(void **state)
{
	free(make_file(tpath("junk.ovl"), 3 * CL));
	char j[512];
	snprintf(j, sizeof(j), "%s", tpath("junk.ovl"));
	expect_error(j, "bad magic", "offset 0");
	struct blk_spec s = { .path = tpath("base.img"), .overlay = tpath("cs.ovl"), .cluster_size = 3000 };
	struct blk *b;
	assert_int_equal(blk_open(&s, &b), -EINVAL);
	assert_non_null(strstr(err_msg(), "cluster size"));
	s.cluster_size = 4096;
	assert_int_equal(blk_open(&s, &b), 0);
	assert_int_equal(blk_overlay_cluster_size(b), 4096);
	uint8_t buf[512] = { 7 };
	assert_int_equal(sync_rw(b, true, 4096 * 3 + 512, buf, 512), 0);
	blk_close(b);
	assert_int_equal(blk_open(&s, &b), 0);   /* cluster size comes from the file now */
	assert_int_equal(sync_rw(b, false, 4096 * 3 + 512, buf, 512), 0);
	assert_int_equal(buf[0], 7);
	blk_close(b);
}

#define TESTS                                                   \
	cmocka_unit_test(test_writes_reads_base_untouched),     \
	cmocka_unit_test(test_concurrent_same_cluster),         \
	cmocka_unit_test(test_extents_and_read_only),           \
	cmocka_unit_test(test_ephemeral_leaves_nothing),        \
	cmocka_unit_test(test_corruption_detected),             \
	cmocka_unit_test(test_changed_base_refused),            \
	cmocka_unit_test(test_existing_file_is_not_overlay)

static int setup_auto(void **s) { engine = BLK_ENGINE_AUTO; return setup(s); }
static int setup_threads(void **s) { engine = BLK_ENGINE_THREADS; return setup(s); }

int main(void)
{
	const struct CMUnitTest tests[] = { TESTS };
	int fails = cmocka_run_group_tests_name("blk_overlay_auto", tests, setup_auto, teardown);
	fails += cmocka_run_group_tests_name("blk_overlay_threads", tests, setup_threads, teardown);
	return fails;
}
