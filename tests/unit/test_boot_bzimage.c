/* bzImage loader tests: synthetic bzImages whose payload is a tiny vmlinux ELF
 * compressed at test time with gzip/xz/zstd/lz4-legacy; the in-guest fallback;
 * malformed headers, payloads and decompression bombs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include "test_boot_fixtures.h"
#ifdef HAVE_ZLIB
#include <zlib.h>
#endif
#ifdef HAVE_LZMA
#include <lzma.h>
#endif
#ifdef HAVE_LZ4
#include <lz4.h>
#endif
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#define MiB (1ULL << 20)

/* ---- compressors (kernel formats) ---- */

static struct buf compress_kernel(enum boot_comp c, const uint8_t *in, size_t n)
{
	struct buf out = { 0 };
	switch (c) {
#ifdef HAVE_ZLIB
	case COMP_GZIP: {
		z_stream s;
		memset(&s, 0, sizeof(s));
		assert_int_equal(deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
		size_t cap = deflateBound(&s, n) + 64;
		out.p = malloc(cap);
		s.next_in = (Bytef *)in;
		s.avail_in = (uInt)n;
		s.next_out = out.p;
		s.avail_out = (uInt)cap;
		assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
		out.len = s.total_out;
		deflateEnd(&s);
		break;
	}
#endif
#ifdef HAVE_LZMA
	case COMP_XZ: {
		size_t cap = n + n / 2 + 4096, pos = 0;
		out.p = malloc(cap);
		assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, n, out.p, &pos, cap), LZMA_OK);
		out.len = pos;
		break;
	}
#endif
#ifdef HAVE_ZSTD
	case COMP_ZSTD: {
		size_t cap = ZSTD_compressBound(n);
		out.p = malloc(cap);
		out.len = ZSTD_compress(out.p, cap, in, n, 3);
		assert_false(ZSTD_isError(out.len));
		break;
	}
#endif
#ifdef HAVE_LZ4
	case COMP_LZ4: { /* legacy frame: magic, then { u32 csize, block } of <= 8 MiB input */
		const size_t blk = 8 * MiB;
		size_t cap = 4 + (n / blk + 1) * (4 + (size_t)LZ4_compressBound((int)blk));
		out.p = malloc(cap);
		put_le32(out.p, 0x184c2102);
		out.len = 4;
		for (size_t off = 0; off < n; off += blk) {
			int in_len = (int)(n - off < blk ? n - off : blk);
			int c_len = LZ4_compress_default((const char *)in + off, (char *)out.p + out.len + 4, in_len,
							 LZ4_compressBound((int)blk));
			assert_true(c_len > 0);
			put_le32(out.p + out.len, (uint32_t)c_len);
			out.len += 4 + (size_t)c_len;
		}
		break;
	}
#endif
	default:
		break;
	}
	return out;
}

static bool have(enum boot_comp c)
{
	switch (c) {
#ifdef HAVE_ZLIB
	case COMP_GZIP: return true;
#endif
#ifdef HAVE_LZMA
	case COMP_XZ: return true;
#endif
#ifdef HAVE_ZSTD
	case COMP_ZSTD: return true;
#endif
#ifdef HAVE_LZ4
	case COMP_LZ4: return true;
#endif
	default: return false;
	}
}

static struct buf payload_elf(void)
{
	struct elf_opt o = linux_elf_opt();
	return build_elf(&o);
}

static const char *write_bz(const char *name, const struct bz_opt *o)
{
	struct buf b = build_bzimage(o);
	const char *p = tmp_file(name, b.p, b.len);
	free(b.p);
	return p;
}

/* ---- happy paths ---- */

static void check_decompressed(enum boot_comp c)
{
	if (!have(c))
		skip();
	struct guest_mem *m = guest_new(128 * MiB);
	struct buf elf = payload_elf();
	struct buf z = compress_kernel(c, elf.p, elf.len);
	struct bz_opt o = { .payload = z.p, .payload_len = z.len, .initrd_addr_max = 0x2ffffff, .xloadflags = 0x3,
			    .relocatable = 1 };
	char name[32];
	snprintf(name, sizeof(name), "bz-%s", boot_comp_name(c));
	const char *k = write_bz(name, &o);
	uint8_t rd[3000] = { 0x5a };
	const char *initrd = tmp_file("bz-initrd", rd, sizeof(rd));
	struct boot_request req = { .kernel_path = k, .initrd_path = initrd, .cmdline = "root=/dev/vda" };
	struct boot_entry out;
	int ret = boot_load(m, &req, &out);
	if (ret)
		fail_msg("boot_load: %s", err_msg());
	assert_int_equal(out.mode, BOOT_MODE_LINUX64);
	assert_int_equal(out.rip, 0x1000000);
	assert_int_equal(out.rsi, BOOT_ZERO_PAGE_ADDR);
	assert_int_equal(out.cr3, BOOT_PML4_ADDR);
	char want[96];
	snprintf(want, sizeof(want), "bzImage 6.1.0-test, %s payload decompressed on host", boot_comp_name(c));
	if (!strstr(out.kind, want))
		fail_msg("kind \"%s\"", out.kind);
	/* the vmlinux inside was loaded, bss zeroed */
	assert_int_equal(gp(m, 0x1000000, 1)[0], 0x10);
	assert_int_equal(gp(m, 0x1200000, 1)[0], 0x40);
	/* zero page = bzImage header + loader fields */
	uint8_t *zp = gp(m, BOOT_ZERO_PAGE_ADDR, 4096);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(get_le16(zp + 0x206), 0x020f);
	assert_int_equal(get_le32(zp + HDR_INITRD_ADDR_MAX), 0x2ffffff);
	assert_int_equal(get_le32(zp + HDR_PAYLOAD_OFFSET), BZ_PM_PREFIX);
	assert_int_equal(get_le16(zp + HDR_XLOADFLAGS), 3);
	assert_int_equal(zp[0x210], 0xff);
	assert_int_equal(zp[0x211], LOADFLAG_LOADED_HIGH);
	assert_int_equal(get_le32(zp + 0x228), BOOT_CMDLINE_ADDR);
	assert_string_equal((char *)gp(m, BOOT_CMDLINE_ADDR, 16), "root=/dev/vda");
	assert_int_equal(zp[0x1e8], 4);   /* e820: low RAM, BIOS area, RAM, PCI ECAM */
	assert_int_equal(get_le64(zp + 0x70), 0); /* no RSDP given */
	/* initrd honours the header's initrd_addr_max (48 MiB) */
	uint32_t a = get_le32(zp + 0x218);
	assert_int_equal(a, 0x3000000 - 0x1000);
	assert_int_equal(get_le32(zp + 0x21c), sizeof(rd));
	assert_int_equal(gp(m, a, 1)[0], 0x5a);
	free(elf.p);
	free(z.p);
	guest_free(m);
}

static void test_bz_gzip(void **state) { check_decompressed(COMP_GZIP); }
static void test_bz_xz(void **state) { check_decompressed(COMP_XZ); }
static void test_bz_zstd(void **state) { check_decompressed(COMP_ZSTD); }
static void test_bz_lz4(void **state) { check_decompressed(COMP_LZ4); }

static void test_bz_fallback_unknown_compressor(void **state)
{
	struct guest_mem *m = guest_new(128 * MiB);
	const uint8_t bz2[] = "BZh91AY&SY fake bzip2 stream";
	struct bz_opt o = { .payload = bz2, .payload_len = sizeof(bz2), .xloadflags = XLF_KERNEL_64, .relocatable = 1 };
	const char *k = write_bz("bz-bzip2", &o);
	struct boot_request req = { .kernel_path = k, .cmdline = "x" };
	struct boot_entry out;
	assert_int_equal(boot_load(m, &req, &out), 0);
	assert_int_equal(out.mode, BOOT_MODE_LINUX64);
	assert_int_equal(out.rip, 0x1000000 + 0x200); /* pref_address + 64-bit entry */
	assert_int_equal(gp(m, 0x1000000, 1)[0], BZ_PM_MARKER);
	assert_int_equal(gp(m, 0x1000200, 1)[0], 0xe8);
	assert_non_null(strstr(out.kind, "bzip2 payload decompressed in guest"));
	uint8_t *zp = gp(m, BOOT_ZERO_PAGE_ADDR, 4096);
	assert_int_equal(get_le32(zp + HDR_CODE32_START), 0x1000000);
	guest_free(m);
}

static void test_bz_fallback_relocates(void **state)
{
	/* pref_address 256 MiB does not fit in 128 MiB: a relocatable kernel goes to
	 * the first kernel_alignment boundary above 1 MiB. */
	struct guest_mem *m = guest_new(128 * MiB);
	const uint8_t lzo[] = "\x89LZO fake";
	struct bz_opt o = { .payload = lzo, .payload_len = sizeof(lzo), .xloadflags = XLF_KERNEL_64, .relocatable = 1,
			    .pref_address = 0x10000000 };
	const char *k = write_bz("bz-reloc", &o);
	struct boot_request req = { .kernel_path = k };
	struct boot_entry out;
	assert_int_equal(boot_load(m, &req, &out), 0);
	assert_int_equal(out.rip, 0x200000 + 0x200);
	assert_int_equal(gp(m, 0x200000, 1)[0], BZ_PM_MARKER);
	/* not relocatable: error */
	o.relocatable = 0;
	k = write_bz("bz-noreloc", &o);
	req.kernel_path = k;
	err_clear();
	assert_err_names(boot_load(m, &req, &out), k);
	guest_free(m);
}

static void test_bz_corrupt_payload(void **state)
{
	if (!have(COMP_GZIP))
		skip();
	struct guest_mem *m = guest_new(128 * MiB);
	struct buf elf = payload_elf();
	struct buf z = compress_kernel(COMP_GZIP, elf.p, elf.len);
	for (size_t i = 20; i < z.len - 20; i += 7)
		z.p[i] ^= 0x5a;
	/* with a 64-bit entry: warn and let the kernel decompress itself */
	struct bz_opt o = { .payload = z.p, .payload_len = z.len, .xloadflags = XLF_KERNEL_64 };
	const char *k = write_bz("bz-corrupt64", &o);
	struct boot_request req = { .kernel_path = k };
	struct boot_entry out;
	assert_int_equal(boot_load(m, &req, &out), 0);
	assert_non_null(strstr(out.kind, "gzip payload decompressed in guest"));
	assert_int_equal(out.rip, 0x1000200);
	/* without one: a clear error */
	o.xloadflags = 0;
	k = write_bz("bz-corrupt", &o);
	req.kernel_path = k;
	err_clear();
	assert_err_names(boot_load(m, &req, &out), k);
	assert_non_null(strstr(err_msg(), "gzip payload is corrupt"));
	/* truncated gzip stream */
	struct buf z2 = compress_kernel(COMP_GZIP, elf.p, elf.len);
	o.payload = z2.p;
	o.payload_len = z2.len / 2;
	k = write_bz("bz-truncgz", &o);
	req.kernel_path = k;
	assert_err_names(boot_load(m, &req, &out), k);
	assert_non_null(strstr(err_msg(), "gzip payload is"));
	/* decompresses fine but is not an ELF */
	const char text[] = "this is not an elf image at all, just text...........";
	struct buf z3 = compress_kernel(COMP_GZIP, (const uint8_t *)text, sizeof(text));
	o.payload = z3.p;
	o.payload_len = z3.len;
	k = write_bz("bz-notelf", &o);
	req.kernel_path = k;
	assert_err_names(boot_load(m, &req, &out), k);
	assert_non_null(strstr(err_msg(), "not an ELF"));
	free(z.p);
	free(z2.p);
	free(z3.p);
	free(elf.p);
	guest_free(m);
}

static void test_bz_bomb(void **state)
{
	if (!have(COMP_ZSTD))
		skip();
	/* 80 MiB of zeros into a 64 MiB guest: the cap (min(512 MiB, RAM)) stops it. */
	struct guest_mem *m = guest_new(64 * MiB);
	size_t n = 80 * MiB;
	uint8_t *zeros = calloc(1, n);
	memcpy(zeros, ELFMAG, SELFMAG);
	struct buf z = compress_kernel(COMP_ZSTD, zeros, n);
	free(zeros);
	assert_true(z.len < 1 * MiB);
	struct bz_opt o = { .payload = z.p, .payload_len = z.len, .xloadflags = XLF_KERNEL_64 };
	const char *k = write_bz("bz-bomb", &o);
	struct boot_request req = { .kernel_path = k };
	struct boot_entry out;
	err_clear();
	int ret = boot_load(m, &req, &out);
	assert_int_equal(ret, -EFBIG);
	assert_err_names(ret, k);
	assert_non_null(strstr(err_msg(), "exceeds"));
	free(z.p);
	guest_free(m);
}

/* ---- malformed headers ---- */

static void test_bz_bad_headers(void **state)
{
	struct guest_mem *m = guest_new(128 * MiB);
	const uint8_t junk[] = "\x01\x02\x03\x04 payload";
	struct boot_request req;
	struct boot_entry out;
	const char *k;
	struct bz_opt base = { .payload = junk, .payload_len = sizeof(junk), .xloadflags = XLF_KERNEL_64 };
	struct bz_opt o;

#define EXPECT_BZ_FAIL(name, needle)                                                     \
	do {                                                                             \
		k = write_bz(name, &o);                                                  \
		req = (struct boot_request){ .kernel_path = k };                         \
		err_clear();                                                             \
		assert_err_names(boot_load(m, &req, &out), k);                           \
		if (!strstr(err_msg(), needle))                                          \
			fail_msg("%s: message \"%s\" lacks \"%s\"", name, err_msg(), needle); \
	} while (0)

	o = base;
	o.version = 0x0205;
	EXPECT_BZ_FAIL("bz-old", "too old");
	o = base;
	o.payload_offset_override = 0x100000;
	EXPECT_BZ_FAIL("bz-poff", "payload");
	o = base;
	o.payload_length_override = 0x7fffffff;
	EXPECT_BZ_FAIL("bz-plen", "payload");
	o = base;
	o.setup_sects_field = 255; /* 128 KiB of setup in a tiny file */
	EXPECT_BZ_FAIL("bz-sects", "setup_sects");
	o = base;
	o.truncate_to = 0x300;
	EXPECT_BZ_FAIL("bz-trunc", "truncated bzImage");
	o = base;
	o.init_size = 0x10; /* smaller than the kernel */
	EXPECT_BZ_FAIL("bz-initsize", "init_size");
	o = base;
	o.xloadflags = 0; /* unknown payload and no 64-bit entry */
	EXPECT_BZ_FAIL("bz-no64", "XLF_KERNEL_64");
	o = base;
	o.version = 0x0207; /* no payload fields, and 2.07 has no 64-bit entry */
	EXPECT_BZ_FAIL("bz-207", "64-bit entry");
	o = base;
	o.init_size = 0x10000000; /* needs 256 MiB from pref_address */
	o.relocatable = 1;
	EXPECT_BZ_FAIL("bz-big", "more than guest RAM");
	/* command line longer than the header's cmdline_size */
	o = base;
	o.cmdline_size = 10;
	k = write_bz("bz-cmdline", &o);
	req = (struct boot_request){ .kernel_path = k, .cmdline = "0123456789" };
	assert_int_equal(boot_load(m, &req, &out), 0);
	req.cmdline = "0123456789A";
	err_clear();
	assert_err_names(boot_load(m, &req, &out), k);
	assert_non_null(strstr(err_msg(), "command line too long"));
#undef EXPECT_BZ_FAIL
	guest_free(m);
}

/* Flip header/payload bytes of a valid gzip bzImage: never crash. */
static void test_bz_fuzz_smoke(void **state)
{
	if (!have(COMP_GZIP))
		skip();
	struct guest_mem *m = guest_new(128 * MiB);
	struct buf elf = payload_elf();
	struct buf z = compress_kernel(COMP_GZIP, elf.p, elf.len);
	struct bz_opt o = { .payload = z.p, .payload_len = z.len, .xloadflags = XLF_KERNEL_64 };
	struct buf bz = build_bzimage(&o);
	struct boot_request req = { .kernel_path = "fuzz-bz" };
	log_set_level(0); /* fallbacks warn; keep the output short */
	srand(99);
	for (int i = 0; i < 300; i++) {
		uint8_t *c = malloc(bz.len);
		memcpy(c, bz.p, bz.len);
		for (int f = 0; f < 3; f++) {
			size_t at = rand() % 2 ? 0x1f1 + (size_t)rand() % 0x80 : (size_t)rand() % bz.len;
			c[at] ^= (uint8_t)(1u << (rand() % 8));
		}
		struct boot_entry out;
		int ret = boot_bzimage(m, &req, c, bz.len, &out);
		if (ret < 0)
			assert_non_null(strstr(err_msg(), "fuzz-bz"));
		free(c);
	}
	log_set_level(1);
	free(bz.p);
	free(z.p);
	free(elf.p);
	guest_free(m);
}

/* ---- decoder edge cases ---- */

static void test_decompress_limits(void **state)
{
	uint8_t data[100000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i % 251 ^ i / 1000);
	enum boot_comp cs[] = { COMP_GZIP, COMP_XZ, COMP_ZSTD, COMP_LZ4 };
	for (size_t k = 0; k < sizeof(cs) / sizeof(cs[0]); k++) {
		if (!have(cs[k]))
			continue;
		struct buf z = compress_kernel(cs[k], data, sizeof(data));
		uint8_t trailer[4] = { 0xa0, 0x86, 0x01, 0x00 };
		buf_put_at(&z, z.len, trailer, 4);
		assert_int_equal(boot_comp_detect(z.p, z.len), cs[k]);
		uint8_t *out;
		size_t n;
		/* exactly at the limit: fine */
		int ret = boot_decompress(cs[k], z.p, z.len, sizeof(data), &out, &n);
		if (ret)
			fail_msg("%s: %s", boot_comp_name(cs[k]), err_msg());
		assert_int_equal(n, sizeof(data));
		assert_memory_equal(out, data, sizeof(data));
		free(out);
		/* one byte less: -EFBIG */
		assert_int_equal(boot_decompress(cs[k], z.p, z.len, sizeof(data) - 1, &out, &n), -EFBIG);
		assert_null(out);
		/* truncated input: an error, never a crash */
		for (size_t cut = 0; cut < z.len; cut += z.len / 13 + 1)
			if (boot_decompress(cs[k], z.p, cut, 1 << 20, &out, &n) == 0)
				free(out);
		free(z.p);
	}
	uint8_t *out;
	size_t n;
	assert_int_equal(boot_decompress(COMP_BZIP2, data, 10, 1 << 20, &out, &n), -ENOTSUP);
	assert_int_equal(boot_comp_detect((const uint8_t *)"\x5d\x00\x00\x80", 4), COMP_LZMA);
	assert_int_equal(boot_comp_detect((const uint8_t *)"BZh9", 4), COMP_BZIP2);
	assert_int_equal(boot_comp_detect((const uint8_t *)"\x89LZO", 4), COMP_LZO);
	assert_int_equal(boot_comp_detect((const uint8_t *)"\x1f", 1), COMP_UNKNOWN);
}

static int teardown_all(void **state)
{
	tmp_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bz_gzip),
		cmocka_unit_test(test_bz_xz),
		cmocka_unit_test(test_bz_zstd),
		cmocka_unit_test(test_bz_lz4),
		cmocka_unit_test(test_bz_fallback_unknown_compressor),
		cmocka_unit_test(test_bz_fallback_relocates),
		cmocka_unit_test(test_bz_corrupt_payload),
		cmocka_unit_test(test_bz_bomb),
		cmocka_unit_test(test_bz_bad_headers),
		cmocka_unit_test(test_bz_fuzz_smoke),
		cmocka_unit_test(test_decompress_limits),
	};
	return cmocka_run_group_tests_name("boot_bzimage", tests, NULL, teardown_all);
}
