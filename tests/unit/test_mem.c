/* Guest memory layout, bounds-checked translation, io bus, page walk. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <vmsvc/io.h>
#include <vmsvc/mem.h>
#include <vmsvc/pagewalk.h>

static void test_layout(void **state)
{
	struct guest_mem m = { 0 };
	mem_layout(&m, 512ULL << 20);
	assert_int_equal(m.nregions, 1);
	assert_int_equal(m.region[0].size, 512ULL << 20);
	mem_layout(&m, MEM_HOLE_START);
	assert_int_equal(m.nregions, 1);
	mem_layout(&m, 5ULL << 30);
	assert_int_equal(m.nregions, 2);
	assert_int_equal(m.region[0].size, MEM_HOLE_START);
	assert_int_equal(m.region[1].gpa, MEM_HOLE_END);
	assert_int_equal(m.region[1].size, (5ULL << 30) - MEM_HOLE_START);
	assert_int_equal(m.region[1].fd_offset, MEM_HOLE_START);
}

static void test_gpa_to_hva(void **state)
{
	struct guest_mem m;
	assert_int_equal(mem_init(&m, 16ULL << 20, MEM_BACKEND_ANON), 0);
	assert_ptr_equal(gpa_to_hva(&m, 0, 16ULL << 20), m.map);
	assert_non_null(gpa_to_hva(&m, (16ULL << 20) - 1, 1));
	assert_null(gpa_to_hva(&m, (16ULL << 20) - 1, 2));
	assert_null(gpa_to_hva(&m, 16ULL << 20, 1));
	assert_null(gpa_to_hva(&m, 4096, UINT64_MAX));         /* overflow */
	assert_null(gpa_to_hva(&m, UINT64_MAX, 2));
	assert_non_null(gpa_to_hva(&m, 0, 0));
	uint8_t buf[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, back[8];
	assert_int_equal(mem_write(&m, 100, buf, 8), 0);
	assert_int_equal(mem_read(&m, 100, back, 8), 0);
	assert_memory_equal(buf, back, 8);
	assert_int_equal(mem_write(&m, (16ULL << 20) - 4, buf, 8), -EFAULT);
	assert_int_equal(mem_top(&m), 16ULL << 20);
	mem_free(&m);
	assert_true(mem_init(&m, 4096, MEM_BACKEND_ANON) < 0);  /* too small */
	assert_true(mem_init(&m, (64ULL << 20) + 1, MEM_BACKEND_ANON) < 0); /* not page multiple */
}

/* Both backings give zeroed RAM at the same layout; only the memfd one has an fd,
 * and what is written through the mapping is what the fd holds. */
static void test_mem_backends(void **state)
{
	struct guest_mem a, f;
	assert_int_equal(mem_init(&a, 8ULL << 20, MEM_BACKEND_ANON), 0);
	assert_int_equal(a.fd, -1);
	assert_int_equal(mem_init(&f, 8ULL << 20, MEM_BACKEND_MEMFD), 0);
	assert_true(f.fd >= 0);
	assert_int_equal(a.nregions, f.nregions);
	uint8_t z[64] = { 0 }, buf[64];
	assert_int_equal(mem_read(&a, (8ULL << 20) - 64, buf, 64), 0);
	assert_memory_equal(buf, z, 64);
	assert_int_equal(mem_write(&f, 0x1000, "vmsvc", 5), 0);
	assert_int_equal(pread(f.fd, buf, 5, 0x1000), 5);
	assert_memory_equal(buf, "vmsvc", 5);
	mem_free(&a);
	mem_free(&f);
}

static int hits;
static void handler(void *opaque, uint64_t off, void *data, unsigned size, bool is_write)
{
	hits++;
	if (!is_write)
		memset(data, (int)off, size);
}

static void test_io_bus(void **state)
{
	struct io_bus b;
	io_bus_init(&b);
	assert_int_equal(io_register_pio(&b, 0x3f8, 8, handler, NULL, "uart"), 0);
	assert_true(io_register_pio(&b, 0x3fc, 8, handler, NULL, "overlap") < 0);
	assert_true(io_register_pio(&b, 0x3f0, 9, handler, NULL, "overlap2") < 0);
	assert_int_equal(io_register_pio(&b, 0x3f0, 8, handler, NULL, "below"), 0);
	assert_true(io_register_pio(&b, 0xfffc, 8, handler, NULL, "wrap") < 0);
	uint8_t d[4];
	hits = 0;
	assert_true(io_pio(&b, 0x3fa, d, 1, false));
	assert_int_equal(d[0], 2);
	assert_false(io_pio(&b, 0x3ff, d, 2, false)); /* straddles the end: dropped */
	assert_false(io_pio(&b, 0x80, d, 4, false));
	assert_int_equal(d[0], 0xff);
	assert_int_equal(b.pio.unhandled, 2);
	assert_int_equal(io_register_mmio(&b, 0xd0000000, 0x1000, handler, NULL, "bar"), 0);
	assert_true(io_mmio(&b, 0xd0000ff8, d, 4, true));
	assert_false(io_mmio(&b, 0xd0001000, d, 4, true));
	assert_int_equal(io_unregister_mmio(&b, 0xd0000000), 0);
	assert_false(io_mmio(&b, 0xd0000000, d, 4, true));
	assert_int_equal(hits, 2);
	io_bus_destroy(&b);
}

static void test_pagewalk(void **state)
{
	struct guest_mem m;
	assert_int_equal(mem_init(&m, 8ULL << 20, MEM_BACKEND_ANON), 0);
	/* 4-level: PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000: 2 MiB page at 0x200000 for
	 * va 0xffff800000000000 + ..., and a 4 KiB page through PT 0x4000. */
	uint64_t pml4 = 0x1000, pdpt = 0x2000, pd = 0x3000, pt = 0x4000;
	uint64_t va = 0xffff800000000000ULL;
	unsigned i4 = (va >> 39) & 511;
	uint64_t e;
	e = pdpt | 3; mem_write(&m, pml4 + i4 * 8, &e, 8);
	e = pd | 3; mem_write(&m, pdpt, &e, 8);
	e = 0x200000 | 0x83; mem_write(&m, pd, &e, 8);          /* 2 MiB at va */
	e = pt | 3; mem_write(&m, pd + 8, &e, 8);               /* va + 2 MiB -> PT */
	e = 0x5000 | 1; mem_write(&m, pt, &e, 8);               /* read-only 4 KiB */
	struct pw_regs r = { .cr0 = 0x80000011, .cr3 = pml4, .cr4 = 0x20, .efer = 0x500 };
	uint64_t gpa;
	bool w;
	assert_int_equal(pw_translate(&m, &r, va + 0x1234, &gpa, &w), 0);
	assert_int_equal(gpa, 0x201234);
	assert_true(w);
	assert_int_equal(pw_translate(&m, &r, va + 0x200010, &gpa, &w), 0);
	assert_int_equal(gpa, 0x5010);
	assert_false(w);
	assert_int_equal(pw_translate(&m, &r, va + 0x201000, &gpa, &w), -EFAULT);
	assert_int_equal(pw_translate(&m, &r, 0x1000, &gpa, &w), -EFAULT);
	/* A table pointer outside RAM fails cleanly. */
	e = 0x7fff000000ULL | 3; mem_write(&m, pd + 16, &e, 8);
	assert_int_equal(pw_translate(&m, &r, va + 0x400000, &gpa, &w), -EFAULT);
	/* Paging off: identity. */
	struct pw_regs flat = { .cr0 = 0x11 };
	assert_int_equal(pw_translate(&m, &flat, 0x1234, &gpa, &w), 0);
	assert_int_equal(gpa, 0x1234);
	/* Cross-page read through both mappings. */
	uint8_t buf[16];
	assert_int_equal(pw_read(&m, &flat, 0x2ff8, buf, 16), 0);
	assert_int_equal(pw_read(&m, &flat, (8ULL << 20) - 8, buf, 16), -EFAULT);
	mem_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_gpa_to_hva),
		cmocka_unit_test(test_mem_backends),
		cmocka_unit_test(test_io_bus),
		cmocka_unit_test(test_pagewalk),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
