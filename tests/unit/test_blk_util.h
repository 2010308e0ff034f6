/* Shared helpers for the block backend tests: temp dirs, files, synchronous wrappers. */
#ifndef TEST_BLK_UTIL_H
#define TEST_BLK_UTIL_H
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsvc/blk.h>
#include <vmsvc/err.h>

struct done {
	int status, calls;
	uint64_t bytes;
};

static void on_done(void *opaque, int status, uint64_t bytes)
{
	struct done *d = opaque;
	d->status = status;
	d->bytes = bytes;
	d->calls++;
}

static char tdir[256];

static void tdir_make(void)
{
	snprintf(tdir, sizeof(tdir), "/tmp/vmsvc-blk-XXXXXX");
	assert_non_null(mkdtemp(tdir));
}

static void tdir_remove(void)
{
	DIR *d = opendir(tdir);
	if (!d)
		return;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(p, sizeof(p), "%s/%s", tdir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(tdir);
}

static __attribute__((unused)) unsigned tdir_count(void)
{
	DIR *d = opendir(tdir);
	unsigned n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	if (d)
		closedir(d);
	return n;
}

static char *tpath(const char *name)
{
	static char p[4][512];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", tdir, name);
	return p[k];
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rnd();
}

/* A file of `len` random bytes; returns a malloc'd copy of its contents. */
static uint8_t *make_file(const char *path, size_t len)
{
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	fill_random(buf, len);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
	return buf;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	fstat(fd, &st);
	uint8_t *buf = malloc(st.st_size ? st.st_size : 1);
	assert_int_equal(pread(fd, buf, st.st_size, 0), st.st_size);
	close(fd);
	*len = st.st_size;
	return buf;
}

/* The file at `path` holds exactly the `len` bytes of `want`. */
static inline void assert_file_is(const char *path, const uint8_t *want, size_t len)
{
	size_t have;
	uint8_t *now = slurp(path, &have);
	assert_int_equal(have, len);
	assert_memory_equal(now, want, len);
	free(now);
}

static int sync_rw(struct blk *b, bool write, uint64_t off, void *buf, size_t len)
{
	struct done d = { 0 };
	struct iovec iov = { buf, len };
	int r = write ? blk_write(b, off, &iov, 1, on_done, &d) : blk_read(b, off, &iov, 1, on_done, &d);
	assert_int_equal(r, 0);
	blk_kick(b);
	blk_drain(b);
	assert_int_equal(d.calls, 1);
	if (d.status == 0)
		assert_int_equal(d.bytes, len);
	return d.status;
}

static int sync_op(struct blk *b, int op, uint64_t off, uint64_t len)
{
	struct done d = { 0 };
	int r = op == 0 ? blk_flush(b, on_done, &d) : op == 1 ? blk_discard(b, off, len, on_done, &d)
							    : blk_write_zeroes(b, off, len, on_done, &d);
	assert_int_equal(r, 0);
	blk_kick(b);
	blk_drain(b);
	assert_int_equal(d.calls, 1);
	return d.status;
}
#define sync_flush(b) sync_op(b, 0, 0, 0)
#define sync_discard(b, o, l) sync_op(b, 1, o, l)
#define sync_wz(b, o, l) sync_op(b, 2, o, l)

#endif
