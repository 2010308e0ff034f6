/* Kernel loader tests: e820, ELF vmlinux (zero page, page tables, GDT, initrd,
 * cmdline), PVH (hvm_start_info) and malformed inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include "test_boot_fixtures.h"
#include <vmsvc/pci.h>

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

/* ---- e820 ---- */

static void check_e820(uint64_t ram, int want_n, const struct boot_e820_entry *want)
{
	struct guest_mem m = { .fd = -1 };
	mem_layout(&m, ram);
	struct boot_e820_entry e[8];
	int n = boot_e820(&m, e, 8);
	assert_int_equal(n, want_n);
	for (int i = 0; i < n; i++) {
		assert_int_equal(e[i].addr, want[i].addr);
		assert_int_equal(e[i].size, want[i].size);
		assert_int_equal(e[i].type, want[i].type);
	}
}

static void test_e820_128m(void **state)
{
	const struct boot_e820_entry want[] = {
		{ 0, 0x9fc00, 1 }, { 0x9fc00, 0x100000 - 0x9fc00, 2 }, { 0x100000, 128 * MiB - 0x100000, 1 },
		{ PCI_ECAM_BASE, PCI_ECAM_SIZE, 2 } };   /* ECAM: reserved, for Linux to trust the MCFG */
	check_e820(128 * MiB, 4, want);
}

static void test_e820_3g_exact(void **state)
{
	const struct boot_e820_entry want[] = {
		{ 0, 0x9fc00, 1 }, { 0x9fc00, 0x100000 - 0x9fc00, 2 }, { 0x100000, 0xc0000000 - 0x100000, 1 },
		{ PCI_ECAM_BASE, PCI_ECAM_SIZE, 2 } };
	check_e820(3 * GiB, 4, want);
}

static void test_e820_5g_high(void **state)
{
	const struct boot_e820_entry want[] = { { 0, 0x9fc00, 1 },
						{ 0x9fc00, 0x100000 - 0x9fc00, 2 },
						{ 0x100000, 0xc0000000 - 0x100000, 1 },
						{ PCI_ECAM_BASE, PCI_ECAM_SIZE, 2 },
						{ 4 * GiB, 2 * GiB, 1 } };
	check_e820(5 * GiB, 5, want);
}

static void test_e820_too_small_table(void **state)
{
	struct guest_mem m = { .fd = -1 };
	mem_layout(&m, 5 * GiB);
	struct boot_e820_entry e[4];
	assert_int_equal(boot_e820(&m, e, 4), -ENOSPC);
	assert_true(err_msg()[0] != 0);
}

/* ---- ELF vmlinux ---- */

static const char *write_elf(const char *name, const struct elf_opt *o)
{
	struct buf b = build_elf(o);
	const char *p = tmp_file(name, b.p, b.len);
	free(b.p);
	return p;
}

static void check_page_tables_and_gdt(struct guest_mem *m, const struct boot_entry *out)
{
	assert_int_equal(out->cr3, BOOT_PML4_ADDR);
	assert_int_equal(get_le64(gp(m, 0x9000, 8)), 0xa003);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(get_le64(gp(m, 0xa000 + 8 * i, 8)), (0xb000 + 0x1000 * i) | 3);
	assert_int_equal(get_le64(gp(m, 0xa000 + 8 * 4, 8)), 0);
	assert_int_equal(get_le64(gp(m, 0xb000, 8)), 0x83);
	assert_int_equal(get_le64(gp(m, 0xb008, 8)), 0x200083);
	assert_int_equal(get_le64(gp(m, 0xeff8, 8)), 0xffe00083ULL); /* last 2 MiB below 4 GiB */
	assert_int_equal(out->gdt_base, BOOT_GDT_ADDR);
	assert_int_equal(out->gdt_limit, 39);
	assert_int_equal(get_le64(gp(m, 0x500, 8)), 0);
	assert_int_equal(get_le64(gp(m, 0x508, 8)), 0x00af9b000000ffffULL);
	assert_int_equal(get_le64(gp(m, 0x510, 8)), 0x00cf93000000ffffULL);
	assert_int_equal(gp(m, 0x518, 8)[5], 0x8b);
}

static void test_elf_vmlinux(void **state)
{
	struct guest_mem *m = guest_new(128 * MiB);
	struct elf_opt o = linux_elf_opt();
	const char *k = write_elf("vmlinux", &o);
	uint8_t rd[10000];
	for (size_t i = 0; i < sizeof(rd); i++)
		rd[i] = (uint8_t)(i * 7);
	const char *initrd = tmp_file("initrd", rd, sizeof(rd));
	/* Garbage where the bss goes: the loader must zero it. */
	memset(gp(m, 0x1200000, 0x5000), 0xaa, 0x5000);
	struct boot_request req = { .kernel_path = k, .initrd_path = initrd, .cmdline = "console=ttyS0 quiet",
				    .acpi_rsdp = 0xe0000 };
	struct boot_entry out;
	int ret = boot_load(m, &req, &out);
	if (ret)
		fail_msg("boot_load: %s", err_msg());
	assert_int_equal(out.mode, BOOT_MODE_LINUX64);
	assert_int_equal(out.rip, 0x1000000);
	assert_int_equal(out.rsi, BOOT_ZERO_PAGE_ADDR);
	assert_non_null(strstr(out.kind, "ELF vmlinux"));
	/* segments */
	assert_int_equal(gp(m, 0x1000000, 1)[0], 0x10);
	assert_int_equal(gp(m, 0x1000005, 1)[0], 0x15);
	assert_int_equal(gp(m, 0x1200000, 1)[0], 0x40);
	for (uint64_t a = 0x1200800; a < 0x1205000; a += 0x100)
		assert_int_equal(gp(m, a, 1)[0], 0);
	/* zero page */
	uint8_t *zp = gp(m, BOOT_ZERO_PAGE_ADDR, 4096);
	assert_int_equal(get_le16(zp + 0x1fe), 0xaa55);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(get_le16(zp + 0x206), 0x020f);
	assert_int_equal(zp[0x210], 0xff);
	assert_int_equal(zp[0x211] & LOADFLAG_LOADED_HIGH, LOADFLAG_LOADED_HIGH);
	assert_int_equal(get_le32(zp + 0x228), BOOT_CMDLINE_ADDR);
	assert_string_equal((char *)gp(m, BOOT_CMDLINE_ADDR, 32), "console=ttyS0 quiet");
	assert_int_equal(get_le64(zp + 0x70), 0xe0000);
	assert_int_equal(zp[0x1e8], 4);   /* low RAM, BIOS area, RAM, PCI ECAM */
	assert_int_equal(get_le64(zp + 0x2d0), 0);
	assert_int_equal(get_le64(zp + 0x2d8), 0x9fc00);
	assert_int_equal(get_le32(zp + 0x2e0), 1);
	assert_int_equal(get_le64(zp + 0x2d0 + 40), 0x100000);
	assert_int_equal(get_le64(zp + 0x2d0 + 48), 128 * MiB - 0x100000);
	/* initrd: page aligned, as high as possible, content intact */
	uint32_t rd_addr = get_le32(zp + 0x218), rd_size = get_le32(zp + 0x21c);
	assert_int_equal(rd_size, sizeof(rd));
	assert_int_equal(rd_addr & 0xfff, 0);
	assert_true(rd_addr >= 0x1205000);
	assert_true(rd_addr + rd_size <= 128 * MiB);
	assert_true(rd_addr + rd_size + 0x1000 > 128 * MiB);
	assert_memory_equal(gp(m, rd_addr, sizeof(rd)), rd, sizeof(rd));
	assert_int_equal(get_le32(zp + 0xc0), 0);
	check_page_tables_and_gdt(m, &out);
	guest_free(m);
}

static void test_elf_virtual_entry(void **state)
{
	struct guest_mem *m = guest_new(64 * MiB);
	struct elf_opt o = linux_elf_opt();
	o.entry = 0xffffffff81000040ULL;
	const char *k = write_elf("vmlinux-virt", &o);
	struct boot_request req = { .kernel_path = k };
	struct boot_entry out;
	assert_int_equal(boot_load(m, &req, &out), 0);
	assert_int_equal(out.rip, 0x1000040);
	assert_string_equal((char *)gp(m, BOOT_CMDLINE_ADDR, 1), "");
	assert_int_equal(get_le32(gp(m, BOOT_ZERO_PAGE_ADDR + 0x218, 4)), 0); /* no initrd */
	guest_free(m);
}

static void test_elf_initrd_limit_3g(void **state)
{
	/* With 3 GiB of RAM the default initrd_addr_max (0x37ffffff) is the limit. */
	struct guest_mem *m = guest_new(3 * GiB);
	struct elf_opt o = linux_elf_opt();
	const char *k = write_elf("vmlinux3g", &o);
	uint8_t rd[5000] = { 1, 2, 3 };
	const char *initrd = tmp_file("initrd3g", rd, sizeof(rd));
	struct boot_request req = { .kernel_path = k, .initrd_path = initrd };
	struct boot_entry out;
	assert_int_equal(boot_load(m, &req, &out), 0);
	uint8_t *zp = gp(m, BOOT_ZERO_PAGE_ADDR, 4096);
	uint32_t a = get_le32(zp + 0x218);
	assert_int_equal(a, 0x38000000 - 0x2000);
	assert_int_equal(zp[0x1e8], 4);   /* low RAM, BIOS area, RAM, PCI ECAM */
	guest_free(m);
}

/* ---- PVH ---- */

static void check_pvh(bool elf32)
{
	struct guest_mem *m = guest_new(5 * GiB);
	struct elf_opt o = { .elf32 = elf32, .entry = 0x100000, .nsegs = 1, .pvh_note = true, .pvh_entry = 0x100010 };
	o.seg[0] = (struct elf_seg_opt){ .paddr = 0x100000, .vaddr = 0x100000, .filesz = 0x200, .memsz = 0x1000,
					 .fill = 1 };
	const char *k = write_elf(elf32 ? "pvh32" : "pvh64", &o);
	uint8_t rd[4096 + 1] = { 9 };
	const char *initrd = tmp_file("pvh-initrd", rd, sizeof(rd));
	struct boot_request req = { .kernel_path = k, .initrd_path = initrd, .cmdline = "hello", .acpi_rsdp = 0xe0000 };
	struct boot_entry out;
	int ret = boot_load(m, &req, &out);
	if (ret)
		fail_msg("boot_load: %s", err_msg());
	assert_int_equal(out.mode, BOOT_MODE_PVH32);
	assert_int_equal(out.rip, 0x100010);
	assert_int_equal(out.rbx, BOOT_START_INFO_ADDR);
	assert_non_null(strstr(out.kind, "PVH"));
	struct hvm_start_info si;
	memcpy(&si, gp(m, BOOT_START_INFO_ADDR, sizeof(si)), sizeof(si));
	assert_int_equal(si.magic, 0x336ec578);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.cmdline_paddr, BOOT_CMDLINE_ADDR);
	assert_string_equal((char *)gp(m, si.cmdline_paddr, 6), "hello");
	assert_int_equal(si.rsdp_paddr, 0xe0000);
	assert_int_equal(si.nr_modules, 1);
	struct hvm_modlist_entry mod;
	memcpy(&mod, gp(m, si.modlist_paddr, sizeof(mod)), sizeof(mod));
	assert_int_equal(mod.size, sizeof(rd));
	assert_int_equal(mod.paddr & 0xfff, 0);
	assert_true(mod.paddr + mod.size <= 0xc0000000ULL);
	assert_int_equal(gp(m, mod.paddr, 1)[0], 9);
	assert_int_equal(si.memmap_entries, 5);
	struct hvm_memmap_table_entry me[5];
	memcpy(me, gp(m, si.memmap_paddr, sizeof(me)), sizeof(me));
	assert_int_equal(me[0].addr, 0);
	assert_int_equal(me[0].size, 0x9fc00);
	assert_int_equal(me[1].type, 2);
	assert_int_equal(me[3].addr, PCI_ECAM_BASE);   /* reserved for the MCFG */
	assert_int_equal(me[3].type, 2);
	assert_int_equal(me[4].addr, 4 * GiB);
	assert_int_equal(me[4].size, 2 * GiB);
	assert_int_equal(me[4].type, 1);
	assert_int_equal(gp(m, 0x100000, 1)[0], 1);
	assert_int_equal(out.gdt_base, BOOT_GDT_ADDR);
	assert_int_equal(get_le64(gp(m, 0x508, 8)), 0x00cf9b000000ffffULL);
	guest_free(m);
}

static void test_pvh64(void **state) { check_pvh(false); }
static void test_pvh32(void **state) { check_pvh(true); }

static void test_pvh_note_with_linux_note_boots_linux(void **state)
{
	struct guest_mem *m = guest_new(64 * MiB);
	struct elf_opt o = linux_elf_opt(); /* has both notes */
	const char *k = write_elf("vmlinux-pvh", &o);
	struct boot_request req = { .kernel_path = k };
	struct boot_entry out;
	assert_int_equal(boot_load(m, &req, &out), 0);
	assert_int_equal(out.mode, BOOT_MODE_LINUX64);
	/* parse records both notes */
	struct boot_elf e;
	struct buf b = build_elf(&o);
	assert_int_equal(boot_elf_parse("x", b.p, b.len, m, &e), 0);
	assert_true(e.linux_note);
	assert_true(e.pvh_note);
	assert_int_equal(e.pvh_entry, 0x1000100);
	free(b.p);
	guest_free(m);
}

/* ---- malformed inputs: error, message names the file, no crash ---- */

static void expect_fail(struct guest_mem *m, const char *path, const char *initrd, const char *cmdline,
			const char *needle)
{
	struct boot_request req = { .kernel_path = path, .initrd_path = initrd, .cmdline = cmdline };
	struct boot_entry out;
	err_clear();
	int ret = boot_load(m, &req, &out);
	if (ret >= 0)
		fail_msg("%s loaded (%s) but should fail with \"%s\"", path, out.kind, needle);
	assert_err_names(ret, initrd && strstr(needle, "initrd") ? initrd : path);
	if (needle && !strstr(err_msg(), needle))
		fail_msg("message \"%s\" lacks \"%s\"", err_msg(), needle);
}

static void expect_elf_fail(struct guest_mem *m, const char *name, const struct elf_opt *o, const char *needle)
{
	expect_fail(m, write_elf(name, o), NULL, NULL, needle);
}

static void test_bad_files(void **state)
{
	struct guest_mem *m = guest_new(128 * MiB);
	expect_fail(m, tmp_file("empty", "", 0), NULL, NULL, "empty");
	const char *passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n";
	expect_fail(m, tmp_file("passwd", passwd, strlen(passwd)), NULL, NULL,
		    "not a kernel image (no bzImage header, not ELF)");
	expect_fail(m, "/nonexistent/vmlinux", NULL, NULL, "cannot open");
	expect_fail(m, tmpdir, NULL, NULL, "not a regular file");
	/* truncated ELF header */
	struct elf_opt o = linux_elf_opt();
	struct buf b = build_elf(&o);
	expect_fail(m, tmp_file("trunc-ehdr", b.p, 20), NULL, NULL, "truncated ELF header");
	/* file cut in the middle of the first segment */
	expect_fail(m, tmp_file("trunc-seg", b.p, 0x1800), NULL, NULL, "beyond the end of the file");
	free(b.p);
	guest_free(m);
}

static void test_bad_elf_segments(void **state)
{
	struct guest_mem *m = guest_new(128 * MiB);
	struct elf_opt o;

	o = linux_elf_opt();
	o.seg[0].offset = 0x100000; /* PT_LOAD beyond EOF */
	expect_elf_fail(m, "seg-eof", &o, "beyond the end of the file");

	o = linux_elf_opt();
	o.seg[1].paddr = 200 * MiB; /* outside 128 MiB of RAM */
	expect_elf_fail(m, "seg-outside", &o, "outside guest RAM");

	o = linux_elf_opt();
	o.seg[1].paddr = 127 * MiB; /* straddles the end of RAM */
	o.seg[1].memsz = 2 * MiB;
	expect_elf_fail(m, "seg-straddle", &o, "outside guest RAM");

	o = linux_elf_opt();
	o.seg[1].memsz = 0xfffffffffffff000ULL; /* huge p_memsz */
	expect_elf_fail(m, "seg-huge", &o, "outside guest RAM");

	o = linux_elf_opt();
	o.seg[0].paddr = 0x8000; /* over the zero page / page tables */
	o.entry = 0x8000;
	expect_elf_fail(m, "seg-low", &o, "below 1 MiB");

	o = linux_elf_opt();
	o.seg[0].filesz = 0x3000;
	o.seg[0].memsz = 0x1000; /* p_filesz > p_memsz */
	expect_elf_fail(m, "seg-filesz", &o, "p_filesz");

	o = linux_elf_opt();
	o.entry = 0x5000000; /* entry in no segment */
	expect_elf_fail(m, "entry-out", &o, "entry point");

	o = linux_elf_opt();
	o.phnum_override = 2000; /* program headers past EOF */
	expect_elf_fail(m, "phnum", &o, "program headers");

	o = linux_elf_opt();
	o.nsegs = 0;
	expect_elf_fail(m, "noload", &o, "no loadable segments");

	o = linux_elf_opt();
	o.seg[1].paddr = 0xbffff000ULL; /* in a 3 GiB guest this runs into the PCI hole */
	struct guest_mem *m3 = guest_new(3 * GiB);
	expect_elf_fail(m3, "seg-hole", &o, "outside guest RAM");
	guest_free(m3);

	/* 32-bit ELF without a PVH note */
	o = (struct elf_opt){ .elf32 = true, .entry = 0x100000, .nsegs = 1 };
	o.seg[0] = (struct elf_seg_opt){ .paddr = 0x100000, .filesz = 0x10, .memsz = 0x10 };
	expect_elf_fail(m, "elf32-nopvh", &o, "32-bit ELF");
	guest_free(m);
}

static void test_bad_notes(void **state)
{
	struct guest_mem *m = guest_new(128 * MiB);
	struct elf_opt o = linux_elf_opt();
	o.bad_namesz = 0x7ffffff0; /* note name larger than the segment */
	expect_elf_fail(m, "note-namesz", &o, "malformed ELF note");

	o = linux_elf_opt();
	o.linux_note = false;
	o.pvh_descsz = 2; /* PVH entry of 2 bytes */
	expect_elf_fail(m, "note-desc", &o, "PVH entry note has bad size");

	o = linux_elf_opt();
	o.linux_note = false;
	o.pvh_entry = 0x7000000; /* PVH entry not in a segment */
	expect_elf_fail(m, "note-entry", &o, "PVH entry point");
	guest_free(m);
}

static void test_bad_cmdline_initrd(void **state)
{
	struct guest_mem *m = guest_new(32 * MiB);
	struct elf_opt o = linux_elf_opt();
	const char *k = write_elf("vmlinux-c", &o);
	char *big = malloc(BOOT_CMDLINE_MAX + 10);
	memset(big, 'a', BOOT_CMDLINE_MAX + 9);
	big[BOOT_CMDLINE_MAX + 9] = 0;
	expect_fail(m, k, NULL, big, "command line too long");
	free(big);
	/* an initrd that cannot fit between the kernel end (~18 MiB) and 32 MiB */
	size_t n = 15 * MiB;
	uint8_t *rd = calloc(1, n);
	const char *initrd = tmp_file("big-initrd", rd, n);
	free(rd);
	expect_fail(m, k, initrd, NULL, "initrd");
	expect_fail(m, k, "/nonexistent/initrd", NULL, "initrd");
	expect_fail(m, k, tmp_file("empty-initrd", "", 0), NULL, "initrd is empty");
	guest_free(m);
}

/* Random bit flips on a valid ELF must never crash (ASan/UBSan build checks it). */
static void test_elf_fuzz_smoke(void **state)
{
	struct guest_mem *m = guest_new(64 * MiB);
	struct elf_opt o = linux_elf_opt();
	struct buf b = build_elf(&o);
	srand(1234);
	for (int iter = 0; iter < 3000; iter++) {
		uint8_t *c = malloc(b.len);
		memcpy(c, b.p, b.len);
		int flips = 1 + rand() % 4;
		for (int f = 0; f < flips; f++)
			c[rand() % 0x140] ^= (uint8_t)(1u << (rand() % 8)); /* headers + notes */
		size_t len = rand() % 8 ? b.len : (size_t)rand() % b.len;
		struct boot_elf e;
		if (boot_elf_parse("fuzz", c, len, m, &e) == 0) {
			boot_elf_load("fuzz", c, len, m, &e);
			uint64_t rip;
			boot_elf_linux_entry("fuzz", c, len, &e, &rip);
		} else {
			assert_non_null(strstr(err_msg(), "fuzz"));
		}
		free(c);
	}
	free(b.p);
	guest_free(m);
}

static int teardown_all(void **state)
{
	tmp_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_e820_128m),
		cmocka_unit_test(test_e820_3g_exact),
		cmocka_unit_test(test_e820_5g_high),
		cmocka_unit_test(test_e820_too_small_table),
		cmocka_unit_test(test_elf_vmlinux),
		cmocka_unit_test(test_elf_virtual_entry),
		cmocka_unit_test(test_elf_initrd_limit_3g),
		cmocka_unit_test(test_pvh64),
		cmocka_unit_test(test_pvh32),
		cmocka_unit_test(test_pvh_note_with_linux_note_boots_linux),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_bad_elf_segments),
		cmocka_unit_test(test_bad_notes),
		cmocka_unit_test(test_bad_cmdline_initrd),
		cmocka_unit_test(test_elf_fuzz_smoke),
	};
	return cmocka_run_group_tests_name("boot", tests, NULL, teardown_all);
}
