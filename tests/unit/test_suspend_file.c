/* Suspend file reader (src/services/suspend.c, suspend_load_file): a state record
 * and RAM records in 4 KiB chunks come back exactly; a flipped byte late in the
 * file, a truncation, missing or oversized memory records and a wrong first
 * record are refused with nothing returned. No KVM needed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <vmsvc/blk.h>
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include <vmsvc/suspend.h>
#include <vmsvc/vmstate.h>
#include <vmsvc/vm.h>
#include "services/suspend_internal.h"

#define MEM (4ULL << 20)
static const struct sealed_opts fast = { .chunk_size = 4096 };
static char dir[] = "/tmp/test_suspend_file.XXXXXX";
static char path[64];
static struct sealed_key *key;
static uint8_t *ram;
static uint8_t *state;
static size_t state_len;

static void make_state(void)
{
	static const char cfg[] = "rng=0\nhugepages=0\ndisks=0\nnets=0\ndevices=0\n";
	struct snap_header h = { .version = SNAP_FORMAT_VERSION, .mem_size = MEM, .ncpus = 1, .nregions = 1 };
	h.region[0].size = MEM;
	struct snap_section s = { .type = SNAP_SEC_CONFIG, .name = "config", .data = (const uint8_t *)cfg,
				  .len = sizeof(cfg) - 1 };
	assert_int_equal(snap_build(&h, &s, 1, &state, &state_len), 0);
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* A DISKS record: no disks, or one 1 MiB disk with an ephemeral overlay
 * (64 KiB clusters) announcing data_bytes of overlay data. */
static uint8_t disks_rec[SUSPEND_DISKS_HDR + SUSPEND_DISK_ENTRY + 8];
static size_t disks_len = SUSPEND_DISKS_HDR;
static void set_disks(unsigned n, uint64_t data_bytes, uint64_t image_size, uint64_t image_hash)
{
	memset(disks_rec, 0, sizeof(disks_rec));
	put32(disks_rec, SUSPEND_DISKS_VERSION);
	put32(disks_rec + 4, n);
	disks_len = SUSPEND_DISKS_HDR;
	if (n) {
		uint8_t *e = disks_rec + SUSPEND_DISKS_HDR;
		put32(e, SUSPEND_DISK_EPHEMERAL);
		put64(e + 8, 1u << 20);     /* disk size */
		put64(e + 16, 64u << 10);   /* cluster */
		put64(e + 24, image_size);
		put64(e + 32, image_hash);
		put64(e + 64, data_bytes);
		put32(e + 72, 8);
		memcpy(e + SUSPEND_DISK_ENTRY, "base.img", 8);
		disks_len += SUSPEND_DISK_ENTRY + 8;
	}
}

/* extents: DISK_EXTENT records appended after memory. */
struct ext { uint32_t disk, kind; uint64_t off, len; };
static const struct ext *extents;
static unsigned nextents;

/* records: the state, the disks, then RAM in pieces of `piece` bytes up to `mem` bytes, then extents. */
static void write_file(uint32_t first_type, uint64_t piece, uint64_t mem)
{
	struct sealed_writer *w;
	assert_int_equal(sealed_create(path, key, &fast, &w), 0);
	assert_int_equal(sealed_write(w, first_type, state, state_len), 0);
	assert_int_equal(sealed_write(w, SUSPEND_REC_DISKS, disks_rec, disks_len), 0);
	for (uint64_t off = 0; off < mem; off += piece)
		assert_int_equal(sealed_write(w, SUSPEND_REC_MEMORY, ram + off, mem - off < piece ? mem - off : piece), 0);
	for (unsigned i = 0; i < nextents; i++) {
		const struct ext *x = &extents[i];
		uint64_t body = x->kind == SUSPEND_EXTENT_DATA ? x->len : 0;
		uint8_t *rec = calloc(1, SUSPEND_EXTENT_HDR + body);
		put32(rec, x->disk);
		put32(rec + 4, x->kind);
		put64(rec + 8, x->off);
		put64(rec + 16, x->len);
		memset(rec + SUSPEND_EXTENT_HDR, 0x5a, body);
		assert_int_equal(sealed_write(w, SUSPEND_REC_DISK_EXTENT, rec, SUSPEND_EXTENT_HDR + body), 0);
		free(rec);
	}
	assert_int_equal(sealed_commit(w), 0);
}

static struct suspend_image img;
static int load(uint8_t **st, size_t *len, int *fd)
{
	int r = suspend_load_file(path, key, NULL, NULL, &img);
	*st = img.state;
	*len = img.state_len;
	*fd = img.mem_fd;
	suspend_disks_free(img.disks);
	img.disks = NULL;
	return r;
}

static void expect_refused(const char *what)
{
	uint8_t *st;
	size_t len;
	int fd;
	int r = load(&st, &len, &fd);
	if (r >= 0)
		fail_msg("%s: accepted", what);
	assert_null(st);
	assert_int_equal(fd, -1);
	printf("  %s: %s\n", what, err_msg());
}

static int setup(void **s)
{
	(void)s;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vm.sealed", dir);
	uint8_t raw[SEALED_KEY_BYTES] = { 7 };
	assert_int_equal(sealed_key_from_raw(raw, &key), 0);
	ram = calloc(1, MEM);
	/* Incompressible data in part of RAM (so the file has many chunks), zeros elsewhere. */
	srand(42);
	for (uint64_t i = 0; i < MEM / 2; i++)
		ram[i] = (uint8_t)rand();
	make_state();
	return 0;
}

static int teardown(void **s)
{
	(void)s;
	unlink(path);
	rmdir(dir);
	free(ram);
	free(state);
	sealed_key_free(key);
	return 0;
}

static void test_round_trip(void **s)
{
	(void)s;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	uint8_t *st;
	size_t len;
	int fd;
	assert_int_equal(load(&st, &len, &fd), 0);
	assert_int_equal(len, state_len);
	assert_memory_equal(st, state, len);
	uint8_t *back = malloc(MEM);
	assert_int_equal(pread(fd, back, MEM, 0), (ssize_t)MEM);
	assert_memory_equal(back, ram, MEM);
	free(back);
	free(st);
	close(fd);
}

static void test_late_damage(void **s)
{
	(void)s;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	assert_int_equal(fseek(f, -100, SEEK_END), 0);
	long off = ftell(f);
	int c = fgetc(f);
	fseek(f, off, SEEK_SET);
	fputc(c ^ 1, f);
	fclose(f);
	expect_refused("byte flipped 100 bytes before the end");
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	assert_int_equal(truncate(path, off), 0);
	expect_refused("truncated");
}

static void test_bad_records(void **s)
{
	(void)s;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM - (1ULL << 20));
	expect_refused("memory short by 1 MiB");
	write_file(SUSPEND_REC_MEMORY, 1ULL << 20, MEM);
	expect_refused("first record not the state");
	write_file(SUSPEND_REC_STATE, SUSPEND_MEM_RECORD_MAX + 4096, MEM); /* one 4 MiB record: fine */
	uint8_t *st;
	size_t len;
	int fd;
	assert_int_equal(load(&st, &len, &fd), 0);
	free(st);
	close(fd);
}

/* Overlay blocks: staged when well-formed; every malformed extent list refused. */
static void test_disk_extents(void **s)
{
	(void)s;
	static const struct ext good[] = {
		{ 0, SUSPEND_EXTENT_DATA, 0, 64 << 10 },
		{ 0, SUSPEND_EXTENT_ZERO, 128 << 10, 128 << 10 },
		{ 0, SUSPEND_EXTENT_DATA, 512 << 10, 512 << 10 },
	};
	uint8_t *st;
	size_t len;
	int fd;
	set_disks(1, (64 << 10) + (512 << 10), 1u << 20, 1);
	extents = good;
	nextents = 3;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	assert_int_equal(load(&st, &len, &fd), 0);
	free(st);
	close(fd);
	static const struct { const char *what; struct ext e; uint64_t announced; } bad[] = {
		{ "extent past the disk end", { 0, SUSPEND_EXTENT_ZERO, 1u << 20, 4096 }, 0 },
		{ "extent for a missing disk", { 1, SUSPEND_EXTENT_ZERO, 0, 4096 }, 0 },
		{ "misaligned extent", { 0, SUSPEND_EXTENT_ZERO, 100, 4096 }, 0 },
		{ "unknown extent kind", { 0, 7, 0, 4096 }, 0 },
		{ "empty extent", { 0, SUSPEND_EXTENT_ZERO, 0, 0 }, 0 },
		{ "more data than announced", { 0, SUSPEND_EXTENT_DATA, 0, 8192 }, 4096 },
		{ "less data than announced", { 0, SUSPEND_EXTENT_DATA, 0, 4096 }, 8192 },
	};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		set_disks(1, bad[i].announced, 1u << 20, 1);
		extents = &bad[i].e;
		nextents = 1;
		write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
		expect_refused(bad[i].what);
	}
	static const struct ext overlap[] = {
		{ 0, SUSPEND_EXTENT_ZERO, 0, 64 << 10 },
		{ 0, SUSPEND_EXTENT_ZERO, 4096, 4096 },
	};
	set_disks(1, 0, 1u << 20, 1);
	extents = overlap;
	nextents = 2;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	expect_refused("overlapping extents");
	/* Extents for a disk without an overlay, and a disk record that lies about its size. */
	set_disks(0, 0, 0, 0);
	extents = good;
	nextents = 1;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	expect_refused("extent for a plain disk");
	set_disks(1, 0, 4096, 1);   /* image smaller than the disk */
	nextents = 0;
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	expect_refused("disk larger than its image");
	set_disks(0, 0, 0, 0);
	extents = NULL;
}

/* The --disk given on resume is checked against the saved image identity. */
static void test_disk_identity(void **s)
{
	(void)s;
	char base[96];
	snprintf(base, sizeof(base), "%s/base.img", dir);
	FILE *f = fopen(base, "wb");
	assert_non_null(f);
	for (int i = 0; i < (1 << 20); i++)
		fputc(i * 7, f);
	fclose(f);
	struct blk_identity id;
	assert_int_equal(blk_image_identity(base, &id), 0);
	struct vm_config cfg = { .ndisks = 1, .disks = { base } };
	set_disks(1, 0, id.size, id.hash);
	write_file(SUSPEND_REC_STATE, 1ULL << 20, MEM);
	assert_int_equal(suspend_load_file(path, key, NULL, &cfg, &img), 0);
	suspend_image_free(&img);
	/* Same size, other contents. */
	f = fopen(base, "r+b");
	fseek(f, 4096, SEEK_SET);
	fputc('X', f);
	fclose(f);
	assert_true(suspend_load_file(path, key, NULL, &cfg, &img) < 0);
	printf("  changed base: %s\n", err_msg());
	assert_non_null(strstr(err_msg(), "not the image"));
	assert_int_equal(img.mem_fd, -1);
	/* Other size. */
	assert_int_equal(truncate(base, 2u << 20), 0);
	assert_true(suspend_load_file(path, key, NULL, &cfg, &img) < 0);
	printf("  resized base: %s\n", err_msg());
	/* Wrong number of disks. */
	cfg.ndisks = 0;
	assert_true(suspend_load_file(path, key, NULL, &cfg, &img) < 0);
	printf("  disk count: %s\n", err_msg());
	unlink(base);
	set_disks(0, 0, 0, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_disk_extents),
		cmocka_unit_test(test_disk_identity),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_late_damage),
		cmocka_unit_test(test_bad_records),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
