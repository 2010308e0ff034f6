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
#include <vmsvc/err.h>
#include <vmsvc/sealed.h>
#include <vmsvc/suspend.h>
#include <vmsvc/vmstate.h>

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

/* records: the state, then RAM in pieces of `piece` bytes up to `mem` bytes. */
static void write_file(uint32_t first_type, uint64_t piece, uint64_t mem)
{
	struct sealed_writer *w;
	assert_int_equal(sealed_create(path, key, &fast, &w), 0);
	assert_int_equal(sealed_write(w, first_type, state, state_len), 0);
	for (uint64_t off = 0; off < mem; off += piece)
		assert_int_equal(sealed_write(w, SUSPEND_REC_MEMORY, ram + off, mem - off < piece ? mem - off : piece), 0);
	assert_int_equal(sealed_commit(w), 0);
}

static int load(uint8_t **st, size_t *len, int *fd)
{
	*st = NULL;
	*fd = -1;
	return suspend_load_file(path, key, NULL, st, len, fd);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_late_damage),
		cmocka_unit_test(test_bad_records),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
