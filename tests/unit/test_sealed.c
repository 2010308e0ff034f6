/* Sealed (encrypted suspend) files: round trips, tampering, truncation, header
 * edits, caps, interrupted writers, key files, and the plaintext parser.
 * SEALED_BENCH_MIB=512 ./test_sealed also measures throughput (see test_bench). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include "services/sealed_internal.h"

#if defined(HAVE_SODIUM) && defined(HAVE_ZSTD)
#include <sodium.h>

static char dir[64];
static char target[128];
/* Tampered copies: tmpfs when there is one (thousands of rewrites), else beside target. */
static char bad_path[128];
static const uint8_t raw_key[SEALED_KEY_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
						  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
/* Cheap Argon2id and tiny chunks so tamper tests cover many chunks quickly. */
static const struct sealed_opts fast = {.kdf_opslimit = 1, .kdf_memlimit = 8192, .chunk_size = 4096};

static uint64_t rng = 88172645463325252ull;
static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Pages like guest memory: zero, random (incompressible), or text-like. */
static void fill_realistic(uint8_t *p, size_t len)
{
	static const char words[] = "the quick brown fox jumps over the lazy dog; kernel: page fault at ";
	for (size_t off = 0; off < len; off += 4096) {
		size_t n = len - off < 4096 ? len - off : 4096;
		unsigned kind = (unsigned)(xorshift() % 4);
		if (kind <= 1) {
			memset(p + off, 0, n);
		} else if (kind == 2) {
			for (size_t i = 0; i < n; i += 8) {
				uint64_t v = xorshift();
				memcpy(p + off + i, &v, n - i < 8 ? n - i : 8);
			}
		} else {
			for (size_t i = 0; i < n; i++)
				p[off + i] = (uint8_t)words[(i + (xorshift() % 3 == 0 ? xorshift() % 40 : 0)) % (sizeof(words) - 1)];
		}
	}
}

struct rec {
	uint32_t type;
	size_t len;
	uint8_t *data;
};
#define NREC 6
static struct rec recs[NREC];

static int setup(void **state)
{
	strcpy(dir, "/tmp/test_sealed.XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(target, sizeof(target), "%s/vm.sus", dir);
	if (access("/dev/shm", W_OK) == 0)
		snprintf(bad_path, sizeof(bad_path), "/dev/shm/test_sealed.%d.bad", (int)getpid());
	else
		snprintf(bad_path, sizeof(bad_path), "%s/bad.sus", dir);
	static const size_t lens[NREC] = {0, 1, 4095, 4096, 3 * 4096 + 17, 200 * 1024};
	for (int i = 0; i < NREC; i++) {
		recs[i].type = 100 + (uint32_t)i;
		recs[i].len = lens[i];
		recs[i].data = malloc(lens[i] + 1);
		fill_realistic(recs[i].data, lens[i]);
	}
	memset(recs[3].data, 0, 4096); /* one record that is a single zero page */
	log_set_level(0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	unlink(bad_path);
	for (int i = 0; i < NREC; i++)
		free(recs[i].data);
	return 0;
}

static struct sealed_key *raw(void)
{
	struct sealed_key *k;
	assert_int_equal(sealed_key_from_raw(raw_key, &k), 0);
	return k;
}

static struct sealed_key *pass(const char *p)
{
	struct sealed_key *k;
	assert_int_equal(sealed_key_from_passphrase(p, strlen(p), &k), 0);
	return k;
}

static void write_file(const char *path, struct sealed_key *k, const struct sealed_opts *o)
{
	struct sealed_writer *w;
	assert_int_equal(sealed_create(path, k, o, &w), 0);
	for (int i = 0; i < NREC; i++)
		assert_int_equal(sealed_write(w, recs[i].type, recs[i].data, recs[i].len), 0);
	assert_int_equal(sealed_commit(w), 0);
}

/* Read every record back and compare. */
static void check_file(const char *path, struct sealed_key *k, const struct sealed_opts *o)
{
	struct sealed_reader *r;
	assert_int_equal(sealed_open(path, k, o, &r), 0);
	uint8_t *buf = calloc(1, 256 * 1024);
	for (int i = 0; i < NREC; i++) {
		uint32_t type;
		uint64_t len;
		if (o && o->buf_prezeroed)
			memset(buf, 0, 256 * 1024);
		assert_int_equal(sealed_read(r, &type, buf, 256 * 1024, &len), 1);
		assert_int_equal(type, recs[i].type);
		assert_int_equal(len, recs[i].len);
		if (len)
			assert_memory_equal(buf, recs[i].data, len);
	}
	uint32_t type;
	uint64_t len;
	assert_int_equal(sealed_read(r, &type, buf, 256 * 1024, &len), 0);
	assert_int_equal(sealed_read(r, &type, buf, 256 * 1024, &len), 0); /* end is sticky */
	assert_int_equal(sealed_close(r), 0);
	free(buf);
	assert_int_equal(sealed_verify(path, k, o), 0);
}

static void test_roundtrip_raw(void **state)
{
	struct sealed_key *k = raw();
	write_file(target, k, &fast);
	check_file(target, k, &fast);
	struct sealed_opts pre = fast;
	pre.buf_prezeroed = 1;
	check_file(target, k, &pre);
	/* Default options too (1 MiB chunks, zstd worker thread). */
	write_file(target, k, NULL);
	check_file(target, k, NULL);
	sealed_key_free(k);
}

static void test_roundtrip_passphrase(void **state)
{
	char pf[160];
	snprintf(pf, sizeof(pf), "%s/pass", dir);
	FILE *f = fopen(pf, "w");
	fputs("correct horse battery staple\n", f);
	fclose(f);
	struct sealed_key *kf, *km;
	assert_int_equal(sealed_key_from_passphrase_file(pf, &kf), 0);
	write_file(target, kf, &fast);
	km = pass("correct horse battery staple"); /* the newline was stripped */
	check_file(target, km, NULL);
	sealed_key_free(kf);
	sealed_key_free(km);
	/* The header records the KDF parameters used. */
	uint8_t h[SEALED_HDR_SIZE];
	int fd = open(target, O_RDONLY);
	assert_int_equal(read(fd, h, sizeof(h)), sizeof(h));
	close(fd);
	assert_int_equal(sealed__get32(h + SEALED_OFF_KDF), SEALED_KDF_ARGON2ID);
	assert_int_equal(sealed__get64(h + SEALED_OFF_OPSLIMIT), 1);
	assert_int_equal(sealed__get64(h + SEALED_OFF_MEMLIMIT), 8192);
}

static void test_wrong_key(void **state)
{
	struct sealed_key *k = pass("right"), *bad = pass("wrong"), *rk = raw();
	write_file(target, k, &fast);
	struct sealed_reader *r;
	assert_int_equal(sealed_open(target, bad, NULL, &r), -EBADMSG);
	char want[256];
	snprintf(want, sizeof(want),
		 "%s: wrong key or passphrase, or the file was modified (authentication failed at offset 80)", target);
	assert_string_equal(err_msg(), want);
	/* A key file for a passphrase file: told which option to use. */
	assert_true(sealed_open(target, rk, NULL, &r) < 0);
	assert_non_null(strstr(err_msg(), "--passphrase-file"));
	/* Wrong raw key. */
	uint8_t other[SEALED_KEY_BYTES] = {9};
	struct sealed_key *ok;
	assert_int_equal(sealed_key_from_raw(other, &ok), 0);
	write_file(target, rk, &fast);
	assert_int_equal(sealed_verify(target, ok, NULL), -EBADMSG);
	assert_non_null(strstr(err_msg(), "wrong key or passphrase"));
	sealed_key_free(k);
	sealed_key_free(bad);
	sealed_key_free(rk);
	sealed_key_free(ok);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	uint8_t *b = malloc((size_t)st.st_size + 64);
	int fd = open(path, O_RDONLY);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static void spit(const char *path, const uint8_t *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, len), (ssize_t)len);
	close(fd);
}

/* A modified copy must be rejected both by sealed_verify and by a reader loop
 * (which must never reach a verified end). */
static void expect_rejected(const char *path, struct sealed_key *k, size_t at)
{
	if (sealed_verify(path, k, NULL) == 0)
		fail_msg("modified file accepted by sealed_verify (change at %zu)", at);
	assert_non_null(strstr(err_msg(), path)); /* one line naming the file */
	assert_null(strchr(err_msg(), '\n'));
	struct sealed_reader *r;
	if (sealed_open(path, k, NULL, &r) < 0)
		return;
	static uint8_t buf[256 * 1024];
	uint32_t type;
	uint64_t len;
	int rc;
	while ((rc = sealed_read(r, &type, buf, sizeof(buf), &len)) == 1)
		;
	if (rc == 0)
		fail_msg("modified file read to a verified end (change at %zu)", at);
	assert_true(sealed_close(r) < 0);
}

static void test_bit_flips(void **state)
{
	struct sealed_key *k = raw();
	write_file(target, k, &fast);
	size_t len;
	uint8_t *orig = slurp(target, &len);
	assert_true(len > 8 * 4096); /* several chunks */
	char bad[160];
	snprintf(bad, sizeof(bad), "%s", bad_path);
	int n = 0;
	for (size_t i = 0; i < len; i += i < SEALED_HDR_SIZE + 64 || i + 64 > len ? 1 : 97) {
		orig[i] ^= (uint8_t)(1u << (i % 8));
		spit(bad, orig, len);
		orig[i] ^= (uint8_t)(1u << (i % 8));
		expect_rejected(bad, k, i);
		n++;
	}
	print_message("  %d single-bit flips over %zu bytes, all rejected\n", n, len);
	sealed_key_free(k);
	free(orig);
}

static void test_truncation_and_trailing(void **state)
{
	struct sealed_key *k = raw();
	write_file(target, k, &fast);
	size_t len;
	uint8_t *orig = slurp(target, &len);
	char bad[160];
	snprintf(bad, sizeof(bad), "%s", bad_path);
	int n = 0;
	for (size_t cut = 0; cut < len; cut += cut < 100 || cut + 100 > len ? 1 : 61) {
		spit(bad, orig, cut);
		expect_rejected(bad, k, cut);
		n++;
	}
	/* Cut exactly at chunk boundaries (a whole chunk, or the final one, missing). */
	size_t csize = 4096 + crypto_secretstream_xchacha20poly1305_ABYTES;
	for (size_t cut = SEALED_HDR_SIZE; cut < len; cut += csize) {
		spit(bad, orig, cut);
		expect_rejected(bad, k, cut);
		n++;
	}
	print_message("  %d truncations rejected\n", n);
	/* Trailing garbage: a short final chunk absorbs it (authentication fails);
	 * after a full-size final chunk it is reported as trailing data. */
	memset(orig + len, 0, 64);
	for (size_t extra = 1; extra <= 64; extra++) {
		spit(bad, orig, len + extra);
		expect_rejected(bad, k, len);
	}
	assert_non_null(strstr(err_msg(), "authentication failed"));
	sealed_key_free(k);
	free(orig);
}

/* Chunks swapped, duplicated or dropped: secretstream's chaining catches all three. */
static void test_chunk_reorder(void **state)
{
	struct sealed_key *k = raw();
	write_file(target, k, &fast);
	size_t len;
	uint8_t *orig = slurp(target, &len);
	size_t cs = 4096 + crypto_secretstream_xchacha20poly1305_ABYTES, body = len - SEALED_HDR_SIZE;
	size_t nfull = body / cs;
	assert_true(nfull >= 4);
	char bad[160];
	snprintf(bad, sizeof(bad), "%s", bad_path);
	uint8_t *b = malloc(len + cs);
	uint8_t *c1 = orig + SEALED_HDR_SIZE + cs, *c2 = orig + SEALED_HDR_SIZE + 2 * cs;
	/* swap chunks 1 and 2 */
	memcpy(b, orig, len);
	memcpy(b + SEALED_HDR_SIZE + cs, c2, cs);
	memcpy(b + SEALED_HDR_SIZE + 2 * cs, c1, cs);
	spit(bad, b, len);
	expect_rejected(bad, k, 1);
	/* duplicate chunk 1 */
	memcpy(b, orig, SEALED_HDR_SIZE + 2 * cs);
	memcpy(b + SEALED_HDR_SIZE + 2 * cs, c1, len - SEALED_HDR_SIZE - cs);
	spit(bad, b, len + cs);
	expect_rejected(bad, k, 2);
	/* drop chunk 1 */
	memcpy(b, orig, SEALED_HDR_SIZE + cs);
	memcpy(b + SEALED_HDR_SIZE + cs, c2, len - SEALED_HDR_SIZE - 2 * cs);
	spit(bad, b, len - cs);
	expect_rejected(bad, k, 3);
	/* the same chunks under another file's header (another stream) */
	write_file(bad, k, &fast);
	size_t len2;
	uint8_t *other = slurp(bad, &len2);
	memcpy(b, other, SEALED_HDR_SIZE);
	memcpy(b + SEALED_HDR_SIZE, orig + SEALED_HDR_SIZE, body);
	spit(bad, b, len);
	expect_rejected(bad, k, 4);
	free(other);
	free(b);
	free(orig);
	sealed_key_free(k);
}

static void edit32(const char *src, const char *dst, size_t off, uint32_t v)
{
	size_t len;
	uint8_t *b = slurp(src, &len);
	sealed__put32(b + off, v);
	spit(dst, b, len);
	free(b);
}

static void edit64(const char *src, const char *dst, size_t off, uint64_t v)
{
	size_t len;
	uint8_t *b = slurp(src, &len);
	sealed__put64(b + off, v);
	spit(dst, b, len);
	free(b);
}

static void test_header_edits(void **state)
{
	struct sealed_key *k = pass("pw");
	write_file(target, k, &fast);
	char bad[160], want[256];
	snprintf(bad, sizeof(bad), "%s", bad_path);
	struct sealed_reader *r;

	edit32(target, bad, SEALED_OFF_VERSION, 7);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -ENOTSUP);
	snprintf(want, sizeof(want), "%s: format version 7 is newer than this vmsvc supports (2)", bad);
	assert_string_equal(err_msg(), want);
	edit32(target, bad, SEALED_OFF_VERSION, 0);
	assert_true(sealed_open(bad, k, NULL, &r) < 0);

	/* In-bounds KDF edits derive another key: authentication fails. */
	edit64(target, bad, SEALED_OFF_OPSLIMIT, 2);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EBADMSG);
	assert_non_null(strstr(err_msg(), "authentication failed at offset 80"));
	edit64(target, bad, SEALED_OFF_MEMLIMIT, 16384);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EBADMSG);
	edit32(target, bad, SEALED_OFF_SALT + 4, 0xdeadbeef);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EBADMSG);
	/* Absurd KDF cost is refused before deriving anything (no 1 TiB allocation). */
	edit64(target, bad, SEALED_OFF_MEMLIMIT, 1ull << 40);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "out of bounds"));
	edit64(target, bad, SEALED_OFF_OPSLIMIT, 1ull << 32);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EINVAL);
	edit32(target, bad, SEALED_OFF_CHUNK, 1u << 30);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EINVAL);
	edit32(target, bad, SEALED_OFF_CHUNK, 8192);
	assert_true(sealed_open(bad, k, NULL, &r) < 0);
	edit32(target, bad, SEALED_OFF_FLAGS, 3);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EINVAL);
	edit32(target, bad, SEALED_OFF_KDF, 9);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EINVAL);
	edit32(target, bad, 0, 0x41414141);
	assert_int_equal(sealed_open(bad, k, NULL, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "not a vmsvc suspend file"));
	spit(bad, (const uint8_t *)"VMSVCSUS", 8);
	assert_true(sealed_open(bad, k, NULL, &r) < 0);
	assert_int_equal(sealed_verify(target, k, NULL), 0);
	sealed_key_free(k);
}

static void test_record_caps(void **state)
{
	struct sealed_key *k = raw();
	write_file(target, k, &fast);
	struct sealed_reader *r;
	assert_int_equal(sealed_open(target, k, NULL, &r), 0);
	uint8_t buf[16384];
	uint32_t type;
	uint64_t len;
	for (int i = 0; i < 5; i++)
		assert_int_equal(sealed_read(r, &type, buf, sizeof(buf), &len), 1);
	assert_int_equal(sealed_read(r, &type, buf, sizeof(buf), &len), -EBADMSG);
	assert_non_null(strstr(err_msg(), "record of 204800 bytes exceeds the limit of 16384"));
	assert_true(sealed_read(r, &type, buf, sizeof(buf), &len) < 0); /* failure is sticky */
	assert_true(sealed_close(r) < 0);
	/* Closing early is not an OK. */
	assert_int_equal(sealed_open(target, k, NULL, &r), 0);
	assert_int_equal(sealed_read(r, &type, buf, sizeof(buf), &len), 1);
	assert_true(sealed_close(r) < 0);
	/* sealed_next / sealed_read_body with the size announced. */
	assert_int_equal(sealed_open(target, k, NULL, &r), 0);
	for (int i = 0; i < NREC; i++) {
		assert_int_equal(sealed_next(r, &type, &len), 1);
		assert_int_equal(len, recs[i].len);
		uint8_t *b = malloc(len + 1);
		assert_int_equal(sealed_read_body(r, b, len), 0);
		if (len)
			assert_memory_equal(b, recs[i].data, len);
		free(b);
	}
	assert_int_equal(sealed_next(r, &type, &len), 0);
	assert_int_equal(sealed_close(r), 0);
	sealed_key_free(k);
}

static int count_entries(void)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strncmp(de->d_name, "vm.sus", 6) == 0)
			n++;
	closedir(d);
	return n;
}

static void test_abort_and_kill(void **state)
{
	struct sealed_key *k = raw();
	unlink(target);
	struct sealed_writer *w;
	assert_int_equal(sealed_create(target, k, &fast, &w), 0);
	assert_int_equal(sealed_write(w, 1, recs[5].data, recs[5].len), 0);
	sealed_abort(w);
	assert_int_equal(count_entries(), 0);
	assert_int_equal(access(target, F_OK), -1);

	/* A child killed with SIGKILL mid-write leaves nothing at the target. */
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct sealed_writer *cw;
		if (sealed_create(target, k, &fast, &cw) < 0)
			_exit(1);
		for (int i = 0;; i++) {
			sealed_write(cw, 1, recs[5].data, recs[5].len);
			if (i == 20 && write(p[1], "x", 1) != 1)
				_exit(2);
		}
	}
	char c;
	assert_int_equal(read(p[0], &c, 1), 1);
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFSIGNALED(status));
	close(p[0]);
	close(p[1]);
	assert_int_equal(access(target, F_OK), -1);
	assert_int_equal(count_entries(), 0);

	/* Committing over an existing file replaces it atomically, leaving no temp. */
	write_file(target, k, &fast);
	write_file(target, k, &fast);
	assert_int_equal(count_entries(), 1);
	check_file(target, k, NULL);

	/* Stale named temps (writers on filesystems without O_TMPFILE) are cleaned;
	 * a locked one (live writer) is left alone. */
	char t1[200], t2[200];
	snprintf(t1, sizeof(t1), "%s.tmp.abcdef", target);
	snprintf(t2, sizeof(t2), "%s.tmp.ghijkl", target);
	spit(t1, (const uint8_t *)"x", 1);
	spit(t2, (const uint8_t *)"x", 1);
	int lfd = open(t2, O_RDONLY);
	assert_int_equal(flock(lfd, LOCK_EX), 0);
	pid = fork(); /* the lock must be seen from another open file description */
	if (pid == 0)
		_exit(sealed_clean_temps(target) == 1 ? 0 : 1);
	waitpid(pid, &status, 0);
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(access(t1, F_OK), -1);
	assert_int_equal(access(t2, F_OK), 0);
	close(lfd);
	assert_int_equal(sealed_clean_temps(target), 1);
	assert_int_equal(count_entries(), 1);
	sealed_key_free(k);
}

/* Filesystems without O_TMPFILE: a named, locked "<path>.tmp.XXXXXX". */
static void test_named_temp(void **state)
{
	struct sealed_key *k = raw();
	unlink(target);
	sealed__no_tmpfile = 1;
	struct sealed_writer *w;
	assert_int_equal(sealed_create(target, k, &fast, &w), 0);
	assert_int_equal(count_entries(), 1); /* the temp file */
	assert_int_equal(access(target, F_OK), -1);
	assert_int_equal(sealed_clean_temps(target), 0); /* locked: a live writer */
	sealed_abort(w);
	assert_int_equal(count_entries(), 0);
	write_file(target, k, &fast);
	assert_int_equal(count_entries(), 1);
	write_file(target, k, &fast); /* over an existing file */
	assert_int_equal(count_entries(), 1);
	check_file(target, k, NULL);
	unlink(target);
	/* Killed mid-write: the temp stays (unlocked), the target never appears. */
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		struct sealed_writer *cw;
		if (sealed_create(target, k, &fast, &cw) < 0)
			_exit(1);
		for (int i = 0;; i++) {
			sealed_write(cw, 1, recs[5].data, recs[5].len);
			if (i == 5 && write(p[1], "x", 1) != 1)
				_exit(2);
		}
	}
	char c;
	assert_int_equal(read(p[0], &c, 1), 1);
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	close(p[0]);
	close(p[1]);
	sealed__no_tmpfile = 0;
	assert_int_equal(access(target, F_OK), -1);
	assert_int_equal(count_entries(), 1);
	assert_int_equal(sealed_clean_temps(target), 1);
	assert_int_equal(count_entries(), 0);
	sealed_key_free(k);
}

static void test_key_files(void **state)
{
	char kf[160];
	snprintf(kf, sizeof(kf), "%s/key", dir);
	struct sealed_key *k;
	uint8_t bytes[64] = {0};
	static const size_t bad_lens[] = {0, 1, 31, 33, 64};
	for (size_t i = 0; i < sizeof(bad_lens) / sizeof(bad_lens[0]); i++) {
		spit(kf, bytes, bad_lens[i]);
		assert_int_equal(sealed_key_from_key_file(kf, &k), -EINVAL);
		assert_non_null(strstr(err_msg(), "exactly 32 raw bytes"));
	}
	spit(kf, raw_key, 32);
	assert_int_equal(sealed_key_from_key_file(kf, &k), 0);
	write_file(target, k, &fast);
	struct sealed_key *k2 = raw();
	check_file(target, k2, NULL);
	sealed_key_free(k);
	sealed_key_free(k2);
	assert_true(sealed_key_from_key_file("/nonexistent/key", &k) < 0);

	/* Passphrase files: only one trailing newline is stripped; empty is refused. */
	spit(kf, (const uint8_t *)"pw\n\n", 4);
	assert_int_equal(sealed_key_from_passphrase_file(kf, &k), 0);
	write_file(target, k, &fast);
	sealed_key_free(k);
	k = pass("pw\n");
	assert_int_equal(sealed_verify(target, k, NULL), 0);
	sealed_key_free(k);
	k = pass("pw");
	assert_true(sealed_verify(target, k, NULL) < 0);
	sealed_key_free(k);
	spit(kf, (const uint8_t *)"\n", 1);
	assert_int_equal(sealed_key_from_passphrase_file(kf, &k), -EINVAL);
}

/* ---- The plaintext record parser, without crypto ---- */

static size_t frame(uint8_t *p, uint32_t kind, uint32_t type, uint64_t len)
{
	sealed__put32(p, kind);
	sealed__put32(p + 4, type);
	sealed__put64(p + 8, len);
	return SEALED_FRAME_SIZE;
}

static int parse_plain(const uint8_t *b, size_t n)
{
	struct sealed_reader *r;
	assert_int_equal(sealed__reader_from_plain(b, n, 0, &r), 0);
	uint8_t buf[64];
	uint32_t type;
	uint64_t len;
	int rc;
	while ((rc = sealed_read(r, &type, buf, sizeof(buf), &len)) == 1)
		;
	int crc = sealed_close(r);
	return rc < 0 ? rc : crc;
}

static void test_plain_parser(void **state)
{
	uint8_t b[256];
	size_t n = 0;
	n += frame(b + n, SEALED_FR_BEGIN, 5, 12);
	n += frame(b + n, SEALED_FR_DATA, 0, 4);
	memcpy(b + n, "abcd", 4);
	n += 4;
	n += frame(b + n, SEALED_FR_ZERO, 0, 8);
	size_t body_end = n;
	n += frame(b + n, SEALED_FR_END, 0, 1);
	assert_int_equal(parse_plain(b, n), 0);
	assert_true(parse_plain(b, n - 1) < 0);      /* truncated end marker */
	assert_true(parse_plain(b, body_end) < 0);   /* no end marker */
	b[n] = 0;
	assert_true(parse_plain(b, n + 1) < 0);      /* trailing byte */
	sealed__put64(b + body_end + 8, 2);           /* wrong record count */
	assert_true(parse_plain(b, n) < 0);
	sealed__put64(b + body_end + 8, 1);
	sealed__put64(b + 16 + 8, 13);                /* data frame past the record */
	assert_true(parse_plain(b, n) < 0);
	sealed__put64(b + 16 + 8, 4);
	sealed__put64(b + 8, 100);                    /* record longer than the caller's cap */
	assert_true(parse_plain(b, n) < 0);
	assert_non_null(strstr(err_msg(), "exceeds the limit"));
	sealed__put64(b + 8, 12);
	sealed__put32(b, 77);                         /* unknown frame kind */
	assert_true(parse_plain(b, n) < 0);
}

struct prog {
	uint64_t last, total;
	int calls;
};
static void on_progress(uint64_t done, uint64_t total, void *arg)
{
	struct prog *p = arg;
	assert_true(done >= p->last);
	assert_true(done <= total);
	p->last = done;
	p->total = total;
	p->calls++;
}

static void test_progress(void **state)
{
	struct sealed_key *k = raw();
	struct prog wp = {0}, rp = {0};
	struct sealed_opts o = fast;
	o.progress = on_progress;
	o.progress_arg = &wp;
	o.progress_total = 0;
	for (int i = 0; i < NREC; i++)
		o.progress_total += recs[i].len;
	write_file(target, k, &o);
	assert_true(wp.calls > 0);
	assert_int_equal(wp.last, o.progress_total);
	o.progress_arg = &rp;
	assert_int_equal(sealed_verify(target, k, &o), 0);
	struct stat st;
	stat(target, &st);
	assert_true(rp.calls > 1);
	assert_int_equal(rp.last, (uint64_t)st.st_size);
	assert_int_equal(rp.total, (uint64_t)st.st_size);
	sealed_key_free(k);
}

/* ---- Throughput (only with SEALED_BENCH_MIB set) ---- */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int page_is_zero_(const uint8_t *p)
{
	for (int i = 0; i < 4096; i++)
		if (p[i])
			return 0;
	return 1;
}

static double cpu(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* all threads, incl. zstd workers */
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* VmLck of this process in KiB (/proc/self/status). */
static long locked_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld kB", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/* Keys, writer and reader secrets are locked in memory while they exist (and
 * unlocked, i.e. freed through sodium_free, which wipes, afterwards) - also when
 * loading a key fails half-way. */
static void test_key_locked(void **state)
{
	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* ASan and TSan intercept mlock and make it a no-op: nothing to observe. */
	skip();
	return;
#endif
	struct rlimit rl;
	long before = locked_kib();
	if (before < 0 || getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur < (1u << 20)) {
		skip();
		return;
	}
	struct sealed_key *k = raw();
	long with_key = locked_kib();
	assert_true(with_key > before);
	struct sealed_writer *w;
	assert_int_equal(sealed_create(target, k, &fast, &w), 0);
	assert_true(locked_kib() > with_key);   /* the stream state */
	sealed_abort(w);
	assert_int_equal(locked_kib(), with_key);
	sealed_key_free(k);
	assert_int_equal(locked_kib(), before);
	/* Error paths: a key file of the wrong size, a missing one. */
	char bad[160];
	snprintf(bad, sizeof(bad), "%s/short.key", dir);
	FILE *f = fopen(bad, "wb");
	fputs("short", f);
	fclose(f);
	assert_true(sealed_key_from_key_file(bad, &k) < 0);
	assert_true(sealed_key_from_passphrase_file("/nonexistent/pass", &k) < 0);
	assert_int_equal(locked_kib(), before);
	unlink(bad);
	assert_int_equal(sealed__lock_failures, 0);
}

/* sealed_write_mapped: holes of the backing memfd are stored as zero without
 * being touched (they stay holes), data pages come back exactly; the reader with
 * populate fills a fresh shared mapping. */
static void test_mapped_holes(void **state)
{
	(void)state;
	const size_t len = 8u << 20;
	int fd = memfd_create("test-sealed", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	/* Data at 1 MiB (random), 3 MiB + 4 KiB (one zero-filled but allocated page,
	 * then text), and the last page; holes elsewhere. */
	fill_realistic(m + (1u << 20), 1u << 20);
	memset(m + (3u << 20), 0, 4096);
	memset(m + (3u << 20) + 4096, 'x', 12288);
	memset(m + len - 4096, 0xa5, 4096);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	blkcnt_t blocks_before = st.st_blocks;
	struct sealed_key *k = raw();
	struct sealed_writer *w;
	assert_int_equal(sealed_create(target, k, &fast, &w), 0);
	assert_int_equal(sealed_write_mapped(w, 7, m + 4096, len - 4096, fd, 4096), 0);
	assert_int_equal(sealed_commit(w), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_blocks, blocks_before);   /* no hole was faulted in */
	uint8_t *back = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(back != MAP_FAILED);
	struct sealed_opts ro = {.buf_prezeroed = 1, .populate = 1};
	struct sealed_reader *r;
	assert_int_equal(sealed_open(target, k, &ro, &r), 0);
	uint32_t type;
	uint64_t got;
	assert_int_equal(sealed_read(r, &type, back + 4096, len - 4096, &got), 1);
	assert_int_equal(type, 7);
	assert_int_equal(got, len - 4096);
	assert_int_equal(sealed_next(r, &type, &got), 0);
	assert_int_equal(sealed_close(r), 0);
	assert_memory_equal(back + 4096, m + 4096, len - 4096);
	munmap(back, len);
	munmap(m, len);
	close(fd);
	sealed_key_free(k);
	unlink(target);
}

/* Memory for the pipeline tests: long runs of text (pieces compressed in place),
 * a stretch of mixed 4 KiB pages (short runs copied into the stage), random data. */
#define PIPE_LEN (5 * SEALED_PIECE_SIZE + 3 * 4096)
static uint8_t *pipeline_memory(void)
{
	uint8_t *m = mmap(NULL, PIPE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(m != MAP_FAILED);
	static const char text[] = "static int emit_piece(struct sealed_writer *w, struct piece *p) { return 0; }\n";
	size_t text_len = 9u << 20, mixed_len = 6u << 20;
	for (size_t i = 0; i < text_len; i++)
		m[i] = (uint8_t)text[(i * 7 + i / 4099) % (sizeof(text) - 1)];
	fill_realistic(m + text_len, mixed_len);
	for (size_t i = text_len + mixed_len; i + 8 <= PIPE_LEN; i += 8) {
		uint64_t v = xorshift();
		memcpy(m + i, &v, 8);
	}
	return m;
}

/* Writes stable memory (pieces compressed in place), a large copied record (many
 * staged pieces), short records; returns 0 or the first error. */
static int write_pipeline_file(struct sealed_key *k, const struct sealed_opts *o, const uint8_t *m)
{
	struct sealed_writer *w;
	int rc = sealed_create(target, k, o, &w);
	if (rc < 0)
		return rc;
	if (rc == 0)
		rc = sealed_write(w, 1, recs[5].data, recs[5].len);
	if (rc == 0)
		rc = sealed_write_mapped(w, 2, m, PIPE_LEN, -1, 0);
	if (rc == 0)
		rc = sealed_write(w, 3, m + 4096, 3 * SEALED_PIECE_SIZE + 7);
	if (rc == 0)
		rc = sealed_write_mapped(w, 4, m + 100, 100, -1, 0);
	if (rc < 0) {
		sealed_abort(w);
		return rc;
	}
	return sealed_commit(w);
}

static void check_pipeline_file(struct sealed_key *k, const uint8_t *m)
{
	const struct {
		uint32_t type;
		const uint8_t *data;
		size_t len;
	} want[] = {{1, recs[5].data, recs[5].len}, {2, m, PIPE_LEN}, {3, m + 4096, 3 * SEALED_PIECE_SIZE + 7}, {4, m + 100, 100}};
	uint8_t *back = malloc(PIPE_LEN);
	struct sealed_reader *r;
	assert_int_equal(sealed_open(target, k, NULL, &r), 0);
	for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
		uint32_t type;
		uint64_t len;
		assert_int_equal(sealed_read(r, &type, back, PIPE_LEN, &len), 1);
		assert_int_equal(type, want[i].type);
		assert_int_equal(len, want[i].len);
		assert_memory_equal(back, want[i].data, len);
	}
	uint32_t type;
	uint64_t len;
	assert_int_equal(sealed_read(r, &type, back, PIPE_LEN, &len), 0);
	assert_int_equal(sealed_close(r), 0);
	free(back);
}

/* The compressing pipeline: output of many pieces (independent zstd frames,
 * compressed by 0..3 workers, cut into chunks of various sizes) decodes to the
 * same bytes. */
static void test_pipeline_pieces(void **state)
{
	(void)state;
	uint8_t *m = pipeline_memory();
	struct sealed_key *k = raw();
	static const int workers[] = {-1, 1, 2, 3};
	static const uint32_t chunks[] = {4096, 1u << 20, 65536 + 17, 3u << 20};
	for (int i = 0; i < 4; i++) {
		struct sealed_opts o = fast;
		o.zstd_workers = workers[i];
		o.chunk_size = chunks[i];
		assert_int_equal(write_pipeline_file(k, &o, m), 0);
		check_pipeline_file(k, m);
		unlink(target);
	}
	/* Version 1 files (one zstd frame) are still read; a v1 header on a stream of
	 * several frames is refused (v1 readers could not read it either). */
	sealed__write_version = 1;
	write_file(target, k, &fast);
	check_file(target, k, NULL);
	assert_int_equal(write_pipeline_file(k, &fast, m), 0);
	sealed__write_version = 0;
	struct sealed_reader *r;
	assert_int_equal(sealed_open(target, k, NULL, &r), 0);
	uint8_t *back = malloc(PIPE_LEN);
	uint32_t type;
	uint64_t len;
	int rc;
	while ((rc = sealed_read(r, &type, back, PIPE_LEN, &len)) == 1)
		;
	assert_int_equal(rc, -EBADMSG);
	assert_non_null(strstr(err_msg(), "compressed stream ends before the end of the records"));
	sealed_close(r);
	free(back);
	unlink(target);
	munmap(m, PIPE_LEN);
	sealed_key_free(k);
}

/* Errors inside the pipeline: a piece that fails to compress (on a worker or
 * inline) and a failed file write fail the write or the commit with their own
 * message, and leave nothing at the target, not even a named temp file. */
static void test_pipeline_errors(void **state)
{
	(void)state;
	uint8_t *m = pipeline_memory();
	struct sealed_key *k = raw();
	static const int workers[] = {-1, 2};
	for (int i = 0; i < 2; i++) {
		for (uint64_t piece = 1; piece <= 9; piece += 4) {
			struct sealed_opts o = fast;
			o.zstd_workers = workers[i];
			sealed__fail_piece = piece;
			sealed__no_tmpfile = (int)(piece & 1);
			struct sealed_writer *w;
			assert_int_equal(sealed_create(target, k, &o, &w), 0);
			int rc = sealed_write_mapped(w, 2, m, PIPE_LEN, -1, 0);
			char first[256];
			snprintf(first, sizeof(first), "%s", err_msg());
			int rc2 = sealed_commit(w);
			sealed__fail_piece = 0;
			sealed__no_tmpfile = 0;
			if (rc == 0) {
				assert_int_equal(rc2, -EIO);
				snprintf(first, sizeof(first), "%s", err_msg());
			} else {
				assert_int_equal(rc, -EIO);
				assert_true(rc2 < 0);
			}
			assert_non_null(strstr(first, "zstd"));
			assert_int_equal(access(target, F_OK), -1);
			assert_int_equal(count_entries(), 0);
		}
	}
	/* The file system refuses a write (file size limit): EFBIG, temp removed. */
	struct rlimit old, lim;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 256 << 10;
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	for (int named = 0; named < 2; named++) {
		sealed__no_tmpfile = named;
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		int rc = write_pipeline_file(k, &fast, m);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
		sealed__no_tmpfile = 0;
		assert_int_equal(rc, -EFBIG);
		assert_non_null(strstr(err_msg(), "write"));
		assert_int_equal(access(target, F_OK), -1);
		assert_int_equal(count_entries(), 0);
	}
	signal(SIGXFSZ, prev);
	munmap(m, PIPE_LEN);
	sealed_key_free(k);
}

static void test_bench(void **state)
{
	const char *env = getenv("SEALED_BENCH_MIB");
	if (!env) {
		skip();
		return;
	}
	size_t len = (size_t)strtoull(env, NULL, 0) << 20;
	const char *bdir = getenv("SEALED_BENCH_DIR");
	char path[256];
	snprintf(path, sizeof(path), "%s/bench.sus", bdir ? bdir : dir);
	uint8_t *mem = malloc(len), *back = malloc(len);
	fill_realistic(mem, len);
	/* Make the text-like pages real code and text when the host has some: guest
	 * memory is mostly zero pages, program text, page cache and random data. */
	static const char *corpus_files[] = {"/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/qemu-system-x86_64",
					     "/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/usr/share/dict/words"};
	size_t clen = 0, ccap = 64 << 20;
	uint8_t *corpus = malloc(ccap);
	for (size_t i = 0; i < sizeof(corpus_files) / sizeof(*corpus_files) && clen < ccap; i++) {
		FILE *f = fopen(corpus_files[i], "rb");
		if (f) {
			clen += fread(corpus + clen, 1, ccap - clen, f);
			fclose(f);
		}
	}
	clen &= ~(size_t)4095;
	size_t zero = 0, rnd = 0, code = 0;
	for (size_t off = 0, c = 0; off < len; off += 4096) {
		if (page_is_zero_(mem + off)) {
			zero++;
		} else if (mem[off] == mem[off + 1] || !clen || (xorshift() & 1)) {
			rnd++;
		} else {
			memcpy(mem + off, corpus + c, 4096);
			c = (c + 4096) % clen;
			code++;
		}
	}
	free(corpus);
	print_message("  data: %zu%% zero pages, %zu%% random/text, %zu%% program code/text\n", zero * 100 / (len / 4096),
		      rnd * 100 / (len / 4096), code * 100 / (len / 4096));
	memset(back, 1, len);
	struct sealed_key *k = raw();
	static const int workers[] = {-1, 1, 2, 2}, levels[] = {1, 1, 1, -3};
	for (int wi = 0; wi < 4; wi++) {
		struct sealed_opts o = {.zstd_workers = workers[wi], .zstd_level = levels[wi]};
		struct sealed_writer *w;
		double c0 = cpu(), t0 = now();
		assert_int_equal(sealed_create(path, k, &o, &w), 0);
		for (size_t off = 0; off < len; off += 64 << 20) /* like suspend's memory records */
			assert_int_equal(sealed_write_mapped(w, 1, mem + off, len - off < (64 << 20) ? len - off : 64 << 20, -1, 0), 0);
		assert_int_equal(sealed_commit(w), 0);
		double t1 = now(), c1 = cpu();
		struct stat st;
		stat(path, &st);
		struct sealed_reader *r;
		assert_int_equal(sealed_open(path, k, NULL, &r), 0);
		uint32_t type;
		uint64_t got;
		for (size_t off = 0; off < len; off += got)
			assert_int_equal(sealed_read(r, &type, back + off, len - off, &got), 1);
		assert_int_equal(sealed_read(r, &type, back, 0, &got), 0);
		assert_int_equal(sealed_close(r), 0);
		double t2 = now(), c2 = cpu();
		assert_memory_equal(mem, back, len);
		double t3 = now();
		assert_int_equal(sealed_verify(path, k, NULL), 0);
		double t4 = now();
		print_message("  %zu MiB, zstd level %d, workers %2d: write+fsync %.2f GB/s (%.2f s CPU), read %.2f GB/s (%.2f s CPU), "
			      "verify %.2f GB/s, file %.1f MiB (%.1f%%)\n",
			      len >> 20, levels[wi], workers[wi], len / (t1 - t0) / 1e9, c1 - c0, len / (t2 - t1) / 1e9, c2 - c1,
			      len / (t4 - t3) / 1e9, st.st_size / 1048576.0, 100.0 * st.st_size / len);
	}
	/* Baseline: a plain copy of the same bytes to a file with fsync. */
	double t0 = now();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	for (size_t off = 0; off < len; off += 1 << 20)
		assert_int_equal(write(fd, mem + off, 1 << 20), 1 << 20);
	fsync(fd);
	close(fd);
	print_message("  plain write+fsync of the same bytes: %.2f GB/s\n", len / (now() - t0) / 1e9);
	unlink(path);
	sealed_key_free(k);
	free(mem);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_raw),
		cmocka_unit_test(test_roundtrip_passphrase),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_bit_flips),
		cmocka_unit_test(test_truncation_and_trailing),
		cmocka_unit_test(test_chunk_reorder),
		cmocka_unit_test(test_header_edits),
		cmocka_unit_test(test_record_caps),
		cmocka_unit_test(test_abort_and_kill),
		cmocka_unit_test(test_named_temp),
		cmocka_unit_test(test_key_files),
		cmocka_unit_test(test_plain_parser),
		cmocka_unit_test(test_progress),
		cmocka_unit_test(test_mapped_holes),
		cmocka_unit_test(test_key_locked),
		cmocka_unit_test(test_pipeline_pieces),
		cmocka_unit_test(test_pipeline_errors),
		cmocka_unit_test(test_bench),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}

#else
int main(void)
{
	return 77; /* built without libsodium/libzstd */
}
#endif
