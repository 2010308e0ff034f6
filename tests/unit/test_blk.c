/* Block backend, raw images: read/write/flush/discard/write-zeroes, many requests
 * in flight, read-only disks, argument checks — through io_uring and through the
 * thread-pool fallback engine (each group runs once per engine). */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "test_blk_util.h"

#define DISK (4u << 20)

static enum blk_engine_kind engine;

static int setup_uring(void **state)
{
	engine = BLK_ENGINE_URING;
	tdir_make();
	return 0;
}

static int setup_threads(void **state)
{
	engine = BLK_ENGINE_THREADS;
	tdir_make();
	return 0;
}

static int teardown(void **state)
{
	tdir_remove();
	return 0;
}

static struct blk *open_disk(const char *path, bool ro, unsigned depth)
{
	struct blk_spec s = { .path = path, .read_only = ro, .engine = engine, .queue_depth = depth };
	struct blk *b = NULL;
	int r = blk_open(&s, &b);
	if (r)
		fail_msg("blk_open: %s", err_msg());
	assert_string_equal(blk_engine_name(b), engine == BLK_ENGINE_URING ? "io_uring" : "threads");
	return b;
}

static void test_read_write_flush(void **state)
{
	uint8_t *img = make_file(tpath("raw.img"), DISK);
	struct blk *b = open_disk(tpath("raw.img"), false, 0);
	assert_int_equal(blk_size(b), DISK);
	assert_int_equal(blk_sectors(b), DISK / 512);
	assert_int_equal(blk_logical_block_size(b), 512);
	assert_false(blk_is_read_only(b));

	uint8_t *buf = malloc(65536);
	assert_int_equal(sync_rw(b, false, 131072, buf, 65536), 0);
	assert_memory_equal(buf, img + 131072, 65536);

	fill_random(buf, 65536);
	memcpy(img + 512 * 7, buf, 65536);
	assert_int_equal(sync_rw(b, true, 512 * 7, buf, 65536), 0);
	assert_int_equal(sync_flush(b), 0);

	/* Scatter-gather: three segments of different sizes. */
	uint8_t seg[3][4096];
	struct iovec iov[3] = { { seg[0], 512 }, { seg[1], 4096 }, { seg[2], 1024 } };
	struct done d = { 0 };
	assert_int_equal(blk_read(b, DISK - 5632, iov, 3, on_done, &d), 0);
	assert_int_equal(d.calls, 0);   /* never inside the submit call */
	blk_kick(b);
	blk_drain(b);
	assert_int_equal(d.status, 0);
	assert_int_equal(d.bytes, 5632);
	assert_memory_equal(seg[0], img + DISK - 5632, 512);
	assert_memory_equal(seg[1], img + DISK - 5120, 4096);
	assert_memory_equal(seg[2], img + DISK - 1024, 1024);
	blk_close(b);

	assert_file_is(tpath("raw.img"), img, DISK);
	free(buf);
	free(img);
}

static void test_discard_write_zeroes(void **state)
{
	uint8_t *img = make_file(tpath("dz.img"), DISK);
	struct blk *b = open_disk(tpath("dz.img"), false, 0);
	assert_true(blk_can_discard(b));
	assert_true(blk_can_write_zeroes(b));
	uint8_t *buf = malloc(3 * 65536), zero[65536] = { 0 };

	assert_int_equal(sync_wz(b, 65536 + 512, 65536), 0);
	assert_int_equal(sync_rw(b, false, 65536, buf, 131072 + 512), 0);
	assert_memory_equal(buf, img + 65536, 512);
	assert_memory_equal(buf + 512, zero, 65536);
	assert_memory_equal(buf + 512 + 65536, img + 65536 + 512 + 65536, 65536 - 512);

	int r = sync_discard(b, 1 << 20, 65536);
	if (r == 0) {   /* ext4/xfs/btrfs punch holes; a filesystem that can't reports unsupported */
		assert_int_equal(sync_rw(b, false, 1 << 20, buf, 65536), 0);
		assert_memory_equal(buf, zero, 65536);
	} else {
		assert_int_equal(r, -EOPNOTSUPP);
		assert_int_equal(blk_status_class(r), BLK_S_UNSUPP);
	}
	assert_int_equal(sync_flush(b), 0);
	blk_close(b);
	free(buf);
	free(img);
}

/* 256 random-offset writes (two segments each) in flight at once, then verify all. */
static void test_many_in_flight(void **state)
{
	uint8_t *shadow = make_file(tpath("qd.img"), DISK);
	struct blk *b = open_disk(tpath("qd.img"), false, 256);
	enum { N = 256, BS = 8192 };
	uint8_t *bufs = malloc((size_t)N * BS);
	struct iovec iov[N][2];
	struct done d[N];
	memset(d, 0, sizeof(d));
	bool used[DISK / BS] = { false };
	for (unsigned i = 0; i < N; i++) {
		uint64_t blk;
		do
			blk = rnd() % (DISK / BS);
		while (used[blk]);
		used[blk] = true;
		uint8_t *p = bufs + (size_t)i * BS;
		fill_random(p, BS);
		memcpy(shadow + blk * BS, p, BS);
		iov[i][0] = (struct iovec){ p, 3072 };
		iov[i][1] = (struct iovec){ p + 3072, BS - 3072 };
		assert_int_equal(blk_write(b, blk * BS, iov[i], 2, on_done, &d[i]), 0);
	}
	struct done extra = { 0 };
	assert_int_equal(blk_flush(b, on_done, &extra), -EAGAIN);   /* queue depth reached */
	assert_int_equal(blk_inflight(b), N);
	blk_kick(b);   /* one batch */
	blk_drain(b);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, 0);
		assert_int_equal(d[i].bytes, BS);
	}
	uint8_t *all = malloc(DISK);
	assert_int_equal(sync_rw(b, false, 0, all, DISK), 0);
	assert_memory_equal(all, shadow, DISK);
	blk_close(b);
	free(all);
	free(bufs);
	free(shadow);
}

static void test_read_only(void **state)
{
	uint8_t *img = make_file(tpath("ro.img"), DISK);
	struct blk *b = open_disk(tpath("ro.img"), true, 0);
	assert_true(blk_is_read_only(b));
	assert_false(blk_can_discard(b));
	assert_false(blk_can_write_zeroes(b));
	uint8_t buf[4096];
	assert_int_equal(sync_rw(b, false, 0, buf, sizeof(buf)), 0);
	assert_memory_equal(buf, img, sizeof(buf));
	memset(buf, 0xaa, sizeof(buf));
	assert_int_equal(sync_rw(b, true, 0, buf, sizeof(buf)), -EROFS);
	assert_int_equal(blk_status_class(-EROFS), BLK_S_IOERR);
	assert_int_equal(sync_discard(b, 0, 4096), -EROFS);
	assert_int_equal(sync_wz(b, 0, 4096), -EROFS);
	assert_int_equal(sync_flush(b), 0);
	blk_close(b);
	size_t len;
	uint8_t *now = slurp(tpath("ro.img"), &len);
	assert_memory_equal(now, img, DISK);
	free(now);
	free(img);
}

static void test_bad_requests(void **state)
{
	free(make_file(tpath("bad.img"), DISK + 100));   /* tail shorter than a sector is hidden */
	struct blk *b = open_disk(tpath("bad.img"), false, 8);
	assert_int_equal(blk_size(b), DISK);
	uint8_t buf[4096];
	assert_int_equal(sync_rw(b, false, DISK - 512, buf, 1024), -EINVAL);   /* past the end */
	assert_int_equal(sync_rw(b, false, 100, buf, 512), -EINVAL);          /* misaligned offset */
	assert_int_equal(sync_rw(b, true, 0, buf, 100), -EINVAL);             /* misaligned length */
	assert_int_equal(sync_rw(b, false, UINT64_MAX - 511, buf, 512), -EINVAL);
	assert_int_equal(sync_discard(b, DISK, 512), -EINVAL);
	assert_int_equal(sync_wz(b, 512, UINT64_MAX - 511), -EINVAL);
	assert_int_equal(sync_rw(b, false, DISK - 512, buf, 512), 0);
	assert_int_equal(blk_read(b, 0, NULL, 1, on_done, NULL), -EINVAL);
	blk_close(b);
}

static void test_serial_and_open_errors(void **state)
{
	free(make_file(tpath("s.img"), 65536));
	struct blk *b = open_disk(tpath("s.img"), false, 0);
	assert_int_equal(strlen(blk_serial(b)), BLK_SERIAL_MAX);
	assert_memory_equal(blk_serial(b), "vmsvc-", 6);
	blk_close(b);
	struct blk_spec s = { .path = tpath("s.img"), .serial = "disk-7", .engine = engine };
	assert_int_equal(blk_open(&s, &b), 0);
	assert_string_equal(blk_serial(b), "disk-7");
	blk_close(b);
	s.serial = "012345678901234567890";
	assert_int_equal(blk_open(&s, &b), -EINVAL);
	assert_non_null(strstr(err_msg(), "serial"));
	s.serial = NULL;
	s.path = tpath("missing.img");
	assert_int_equal(blk_open(&s, &b), -ENOENT);
	assert_non_null(strstr(err_msg(), "missing.img"));
	s.path = tdir;
	assert_true(blk_open(&s, &b) < 0);
	assert_null(b);
}

/* Completion callbacks may submit the next request (how a virtio queue refills). */
struct chain {
	struct blk *b;
	uint8_t buf[4096];
	struct iovec iov;
	unsigned left, errors;
};

static void chain_done(void *opaque, int status, uint64_t bytes)
{
	struct chain *c = opaque;
	if (status)
		c->errors++;
	if (c->left && --c->left) {
		c->iov = (struct iovec){ c->buf, sizeof(c->buf) };
		assert_int_equal(blk_read(c->b, (c->left % 64) * 4096, &c->iov, 1, chain_done, c), 0);
	}
}

static void test_resubmit_from_callback(void **state)
{
	free(make_file(tpath("c.img"), DISK));
	struct chain c = { .left = 100 };
	c.b = open_disk(tpath("c.img"), false, 4);
	c.iov = (struct iovec){ c.buf, sizeof(c.buf) };
	assert_int_equal(blk_read(c.b, 0, &c.iov, 1, chain_done, &c), 0);
	blk_kick(c.b);
	blk_drain(c.b);
	assert_int_equal(c.left, 0);
	assert_int_equal(c.errors, 0);
	blk_close(c.b);
}

/* Buffered writes under io_uring are done inside blk_kick() (not by io-wq): they
 * are ready at once, the callback still runs only in blk_process_completions(),
 * and the eventfd says so for epoll-driven callers. */
static void test_buffered_write_ready_after_kick(void **state)
{
	uint8_t *img = make_file(tpath("w.img"), DISK);
	struct blk *b = open_disk(tpath("w.img"), false, 0);
	uint8_t buf[4096];
	fill_random(buf, sizeof(buf));
	memcpy(img + 8192, buf, sizeof(buf));
	struct iovec iov = { buf, sizeof(buf) };
	struct done d = { 0 };
	assert_int_equal(blk_write(b, 8192, &iov, 1, on_done, &d), 0);
	blk_kick(b);
	assert_int_equal(d.calls, 0);
	if (engine == BLK_ENGINE_URING) {
		assert_true(blk_completions_ready(b));
		struct pollfd p = { .fd = blk_completion_fd(b), .events = POLLIN };
		assert_int_equal(poll(&p, 1, 0), 1);
		assert_int_equal(blk_process_completions(b), 1);
		assert_int_equal(d.calls, 1);
		assert_false(blk_completions_ready(b));
	}
	blk_drain(b);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, 0);
	assert_int_equal(d.bytes, sizeof(buf));
	blk_close(b);
	assert_file_is(tpath("w.img"), img, DISK);
	free(img);
}

#define TESTS                                                  \
	cmocka_unit_test(test_read_write_flush),               \
	cmocka_unit_test(test_discard_write_zeroes),           \
	cmocka_unit_test(test_many_in_flight),                 \
	cmocka_unit_test(test_read_only),                      \
	cmocka_unit_test(test_bad_requests),                   \
	cmocka_unit_test(test_serial_and_open_errors),         \
	cmocka_unit_test(test_resubmit_from_callback),         \
	cmocka_unit_test(test_buffered_write_ready_after_kick)

int main(void)
{
	const struct CMUnitTest tests[] = { TESTS };
	int fails = 0;
	/* io_uring may be compiled out or forbidden by a sandbox: then only the fallback runs. */
	struct blk_spec probe = { .path = "/proc/self/exe", .read_only = true, .engine = BLK_ENGINE_URING };
	struct blk *b;
	if (blk_open(&probe, &b) == 0) {
		blk_close(b);
		fails += cmocka_run_group_tests_name("blk_raw_io_uring", tests, setup_uring, teardown);
	} else {
		fprintf(stderr, "io_uring engine unavailable (%s): its tests are skipped\n", err_msg());
	}
	fails += cmocka_run_group_tests_name("blk_raw_threads", tests, setup_threads, teardown);
	return fails;
}
