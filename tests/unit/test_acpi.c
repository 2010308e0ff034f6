/* ACPI and MP tables: build them in a fake 16 MiB guest and walk them the way a
 * guest would (RSDP -> XSDT -> tables, MP floating pointer -> config table). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <vmsvc/boot.h>
#include <vmsvc/err.h>
#include <vmsvc/mem.h>
#include <vmsvc/pci.h>
#include <vmsvc/platform.h>
#include <sys/wait.h>
#include <unistd.h>

#define RAM (16u << 20)

struct fake {
	struct guest_mem mem;
	uint8_t *ram;
};

static int setup(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));
	f->ram = calloc(1, RAM);
	f->mem.fd = -1;
	f->mem.ram_size = RAM;
	f->mem.nregions = 1;
	f->mem.region[0] = (struct mem_region){ .gpa = 0, .size = RAM, .hva = f->ram };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fake *f = *state;
	free(f->ram);
	free(f);
	return 0;
}

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	while (len--)
		s += *p++;
	return s;
}
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Checked pointer to a whole ACPI table at gpa: signature, length, checksum. */
static const uint8_t *table(struct fake *f, uint64_t gpa, const char *sig)
{
	assert_true(gpa >= BOOT_ACPI_ADDR && gpa < MPTABLE_ADDR);
	const uint8_t *t = f->ram + gpa;
	assert_memory_equal(t, sig, 4);
	uint32_t len = rd32(t + 4);
	assert_true(len >= 36 && gpa + len <= MPTABLE_ADDR);
	assert_int_equal(sum(t, len), 0);
	assert_memory_equal(t + 10, "VMSVC ", 6);
	return t;
}

/* Find a table through RSDP -> XSDT; also checks the RSDT points to the same. */
static const uint8_t *find(struct fake *f, uint64_t rsdp_gpa, const char *sig)
{
	const uint8_t *rsdp = f->ram + rsdp_gpa;
	const uint8_t *xsdt = table(f, rd64(rsdp + 24), "XSDT");
	const uint8_t *rsdt = table(f, rd32(rsdp + 16), "RSDT");
	unsigned n = (rd32(xsdt + 4) - 36) / 8;
	assert_int_equal((rd32(rsdt + 4) - 36) / 4, n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t a = rd64(xsdt + 36 + 8 * i);
		assert_int_equal(rd32(rsdt + 36 + 4 * i), a);
		if (memcmp(f->ram + a, sig, 4) == 0)
			return table(f, a, sig);
	}
	fail_msg("table %s not in XSDT", sig);
	return NULL;
}

/* The host bridge's memory windows in the DSDT: the 32-bit one ends where the
 * ECAM window starts, the 64-bit prefetchable one follows RAM (patched in). */
static void check_dsdt_windows(const uint8_t *dsdt, uint64_t ram_top)
{
	uint32_t dlen = rd32(dsdt + 4);
	/* DWordMemory: tag 0x87, _MIN at +10, _MAX +14, _LEN +22 */
	const uint8_t *d = NULL;
	for (uint32_t i = 36; i + 26 <= dlen; i++)
		if (dsdt[i] == 0x87 && rd16(dsdt + i + 1) == 0x17 && dsdt[i + 3] == 0 &&
		    rd32(dsdt + i + 10) == PCI_MMIO32_BASE)
			d = dsdt + i;
	assert_non_null(d);
	assert_int_equal(rd32(d + 14), PCI_MMIO32_END - 1);
	assert_int_equal(rd32(d + 22), PCI_MMIO32_END - PCI_MMIO32_BASE);
	/* QWordMemory: tag 0x8a, length 0x2b, type 0 (memory), flags: prefetchable */
	const uint8_t *q = NULL;
	for (uint32_t i = 36; i + 46 <= dlen; i++)
		if (dsdt[i] == 0x8a && rd16(dsdt + i + 1) == 0x2b && dsdt[i + 3] == 0) {
			assert_null(q);
			q = dsdt + i;
		}
	assert_non_null(q);
	assert_int_equal((q[5] >> 1) & 3, 3);   /* _MEM: prefetchable */
	uint64_t base = rd64(q + 14), max = rd64(q + 22), len = rd64(q + 38);
	assert_int_equal(base, pci_mmio64_base(ram_top));
	assert_true(base >= 0x100000000ULL && base >= ram_top && base % (1u << 30) == 0);
	assert_int_equal(len, PCI_MMIO64_SIZE);
	assert_int_equal(max, base + len - 1);
	/* The motherboard resource device reserving the ECAM window:
	 * Memory32Fixed (tag 0x86), base, length. */
	static const uint8_t pnp0c02[] = { 0x41, 0xd0, 0x0c, 0x02 };
	assert_non_null(memmem(dsdt + 36, dlen - 36, pnp0c02, sizeof(pnp0c02)));
	uint8_t m32[12] = { 0x86, 0x09, 0x00, 0x01 };
	uint32_t eb = (uint32_t)PCI_ECAM_BASE, es = (uint32_t)PCI_ECAM_SIZE;
	memcpy(m32 + 4, &eb, 4);
	memcpy(m32 + 8, &es, 4);
	assert_non_null(memmem(dsdt + 36, dlen - 36, m32, sizeof(m32)));
}

/* When iasl (acpica-tools) is installed: the table must disassemble cleanly and
 * the listing mention `expect`. Skipped silently otherwise. */
static void iasl_check(const uint8_t *table, const char *sig, const char *expect)
{
	if (system("command -v iasl >/dev/null 2>&1") != 0)
		return;
	char dir[] = "/tmp/vmsvc-test-acpi-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128], cmd[512];
	snprintf(path, sizeof(path), "%s/%s.dat", dir, sig);
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(table, 1, rd32(table + 4), fp), rd32(table + 4));
	assert_int_equal(fclose(fp), 0);
	snprintf(cmd, sizeof(cmd), "cd %s && iasl -d %s.dat >log 2>&1 && grep -q '%s' %s.dsl && ! grep -qi 'error' log",
		 dir, sig, expect, sig);
	int st = system(cmd);
	if (st != 0) {
		snprintf(cmd, sizeof(cmd), "cat %s/log >&2", dir);
		(void)!system(cmd);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	assert_int_equal(st, 0);
}

static void check_acpi(struct fake *f, unsigned ncpus)
{
	memset(f->ram, 0xa5, RAM); /* tables must not rely on zeroed memory */
	uint64_t rsdp = 0;
	assert_int_equal(platform_write_tables(&f->mem, ncpus, &rsdp), 0);
	assert_int_equal(rsdp, BOOT_ACPI_ADDR);

	/* RSDP: ACPI 2.0, both checksums, 16-byte aligned (Linux scans for it) */
	const uint8_t *r = f->ram + rsdp;
	assert_memory_equal(r, "RSD PTR ", 8);
	assert_int_equal(rsdp % 16, 0);
	assert_int_equal(r[15], 2);
	assert_int_equal(rd32(r + 20), 36);
	assert_int_equal(sum(r, 20), 0);
	assert_int_equal(sum(r, 36), 0);

	/* FADT */
	const uint8_t *fadt = find(f, rsdp, "FACP");
	assert_int_equal(rd32(fadt + 4), 276);
	assert_int_equal(fadt[8], 6);
	assert_int_equal(rd16(fadt + 46), 9);               /* SCI_INT */
	assert_int_equal(rd32(fadt + 48), 0);               /* SMI_CMD: always ACPI mode */
	assert_int_equal(rd32(fadt + 56), PM1A_EVT_PORT);
	assert_int_equal(rd32(fadt + 64), PM1A_CNT_PORT);
	assert_int_equal(rd32(fadt + 76), 0);               /* no PM timer */
	assert_int_equal(fadt[88], 4);
	assert_int_equal(fadt[89], 2);
	assert_true(rd32(fadt + 112) & (1u << 0));          /* WBINVD */
	assert_true(rd32(fadt + 112) & (1u << 10));         /* RESET_REG_SUP */
	assert_false(rd32(fadt + 112) & (1u << 20));        /* not HW_REDUCED_ACPI */
	assert_true(rd16(fadt + 109) & (1u << 2));          /* VGA not present */
	assert_false(rd16(fadt + 109) & (1u << 3));         /* MSI allowed */
	assert_int_equal(fadt[116], 1);                     /* RESET_REG: I/O */
	assert_int_equal(fadt[117], 8);
	assert_int_equal(rd64(fadt + 120), RESET_PORT);
	assert_int_equal(fadt[128], 6);
	assert_int_equal(fadt[148], 1);                     /* X_PM1a_EVT_BLK */
	assert_int_equal(fadt[149], 32);
	assert_int_equal(rd64(fadt + 152), PM1A_EVT_PORT);
	assert_int_equal(fadt[172], 1);                     /* X_PM1a_CNT_BLK */
	assert_int_equal(fadt[173], 16);
	assert_int_equal(rd64(fadt + 176), PM1A_CNT_PORT);
	/* FACS (not checksummed, 64-byte aligned) */
	uint32_t facs = rd32(fadt + 36);
	assert_int_equal(facs % 64, 0);
	assert_memory_equal(f->ram + facs, "FACS", 4);
	assert_int_equal(rd32(f->ram + facs + 4), 64);

	/* DSDT with Name (_S5, Package (4) {5, 5, 0, 0}) */
	assert_int_equal(rd32(fadt + 40), rd64(fadt + 140));
	const uint8_t *dsdt = table(f, rd64(fadt + 140), "DSDT");
	static const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00 };
	uint32_t dlen = rd32(dsdt + 4);
	assert_true(dlen >= 36 + sizeof(s5));
	assert_memory_equal(dsdt + 36, s5, sizeof(s5));
	/* then Scope (\_SB) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03")) ... */
	static const uint8_t pci0[] = { 0x5b, 0x82 };   /* DeviceOp */
	static const uint8_t hid[] = { 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03 };
	assert_non_null(memmem(dsdt + 36, dlen - 36, "PCI0", 4));
	assert_non_null(memmem(dsdt + 36, dlen - 36, pci0, sizeof(pci0)));
	assert_non_null(memmem(dsdt + 36, dlen - 36, hid, sizeof(hid)));
	assert_non_null(memmem(dsdt + 36, dlen - 36, "_CRS", 4));
	assert_non_null(memmem(dsdt + 36, dlen - 36, "_PRT", 4));
	check_dsdt_windows(dsdt, mem_top(&f->mem));
	/* _PRT: Package () { 0x00ssFFFF, 0 (INTA), 0 (no link: a GSI), 11 } per slot,
	 * the same routing the MP table gives below. */
	for (unsigned slot = 1; slot < 32; slot++) {
		const uint8_t prt[] = { 0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, (uint8_t)slot, 0x00,
					0x00, 0x00, 0x0a, PCI_INTX_GSI };
		assert_non_null(memmem(dsdt + 36, dlen - 36, prt, sizeof(prt)));
	}

	/* MCFG: one allocation, the ECAM window, segment 0, buses 0..N-1 */
	const uint8_t *mcfg = find(f, rsdp, "MCFG");
	assert_int_equal(rd32(mcfg + 4), 60);
	assert_int_equal(mcfg[8], 1);
	assert_int_equal(rd64(mcfg + 44), PCI_ECAM_BASE);
	assert_int_equal(rd16(mcfg + 52), 0);
	assert_int_equal(mcfg[54], 0);
	assert_int_equal(mcfg[55], PCI_ECAM_BUSES - 1);
	assert_int_equal(PCI_ECAM_BASE % (256u << 20), 0);
	assert_true(PCI_ECAM_BASE >= PCI_MMIO32_END && PCI_ECAM_BASE + PCI_ECAM_SIZE <= 0xfec00000u);
	iasl_check(dsdt, "DSDT", "PNP0A03");
	iasl_check(mcfg, "MCFG", "F0000000");

	/* MADT: one LAPIC per vCPU + IOAPIC + 2 overrides + LAPIC NMI */
	const uint8_t *madt = find(f, rsdp, "APIC");
	assert_int_equal(rd32(madt + 36), 0xfee00000);
	assert_int_equal(rd32(madt + 40), 1);
	uint32_t mlen = rd32(madt + 4);
	unsigned count[6] = { 0 }, total = 0;
	for (uint32_t off = 44; off < mlen;) {
		const uint8_t *e = madt + off;
		assert_true(e[1] >= 2 && off + e[1] <= mlen);
		assert_true(e[0] < 6);
		if (e[0] == 0) {
			assert_int_equal(e[2], count[0]);      /* UID = index */
			assert_int_equal(e[3], count[0]);      /* APIC ID = index */
			assert_int_equal(rd32(e + 4), 1);
		} else if (e[0] == 1) {
			assert_int_equal(e[2], ncpus);
			assert_int_equal(rd32(e + 4), 0xfec00000);
			assert_int_equal(rd32(e + 8), 0);
		} else if (e[0] == 2) {
			if (e[3] == 0) {
				assert_int_equal(rd32(e + 4), 2);
				assert_int_equal(rd16(e + 8), 0);
			} else if (e[3] == 9) {
				assert_int_equal(rd32(e + 4), 9);
				assert_int_equal(rd16(e + 8), 0x000d);
			} else {   /* PCI INTx: level, active low, like the _PRT */
				assert_int_equal(e[3], PCI_INTX_GSI);
				assert_int_equal(rd32(e + 4), PCI_INTX_GSI);
				assert_int_equal(rd16(e + 8), 0x000f);
			}
		} else if (e[0] == 4) {
			assert_int_equal(e[2], 0xff);
			assert_int_equal(e[5], 1);
		}
		count[e[0]]++;
		total++;
		off += e[1];
	}
	assert_int_equal(count[0], ncpus);
	assert_int_equal(count[1], 1);
	assert_int_equal(count[2], 3);
	assert_int_equal(count[4], 1);
	assert_int_equal(total, ncpus + 5);

	/* MP table: floating pointer in 0xf0000-0xfffff on a 16-byte boundary */
	const uint8_t *fp = NULL;
	for (uint64_t a = 0xf0000; a < 0x100000; a += 16)
		if (memcmp(f->ram + a, "_MP_", 4) == 0 && sum(f->ram + a, 16) == 0) {
			fp = f->ram + a;
			break;
		}
	assert_non_null(fp);
	assert_int_equal(fp[8], 1);
	assert_int_equal(fp[9], 4);
	assert_int_equal(fp[11], 0);
	uint32_t cfg = rd32(fp + 4);
	assert_true(cfg >= 0xf0000 && cfg < 0x100000);
	const uint8_t *t = f->ram + cfg;
	assert_memory_equal(t, "PCMP", 4);
	uint16_t clen = rd16(t + 4);
	assert_true(cfg + clen <= 0x100000);
	assert_int_equal(sum(t, clen), 0);
	assert_int_equal(rd32(t + 36), 0xfee00000);
	unsigned nent = rd16(t + 34), procs = 0, ioints = 0, pci_ioints = 0, lints = 0, buses = 0, n = 0;
	uint32_t slots_seen = 0;
	uint32_t off = 44;
	for (; off < clen && n < nent; n++) {
		const uint8_t *e = t + off;
		switch (e[0]) {
		case 0:
			assert_int_equal(e[1], procs);
			assert_int_equal(e[3], procs == 0 ? 3 : 1); /* enabled, BSP on 0 */
			procs++;
			off += 20;
			break;
		case 1:   /* PCI bus 0 is MP bus 0 (Linux matches them), then ISA */
			assert_int_equal(e[1], buses);
			assert_memory_equal(e + 2, buses == 0 ? "PCI   " : "ISA   ", 6);
			buses++;
			off += 8;
			break;
		case 2:
			assert_int_equal(e[1], ncpus);
			assert_int_equal(rd32(e + 4), 0xfec00000);
			off += 8;
			break;
		case 3:
			assert_int_equal(e[6], ncpus);
			assert_int_equal(e[1], 0);   /* vectored interrupt */
			if (e[4] == 0) {             /* PCI: slot << 2 | INTA -> GSI 11, level low */
				unsigned slot = e[5] >> 2;
				assert_int_equal(e[5] & 3, 0);
				assert_true(slot >= 1 && slot < 32 && !(slots_seen & (1u << slot)));
				slots_seen |= 1u << slot;
				assert_int_equal(e[7], PCI_INTX_GSI);
				assert_int_equal(rd16(e + 2), 0x000f);
				pci_ioints++;
			} else {
				assert_int_equal(e[4], 1);
				assert_int_not_equal(e[5], PCI_INTX_GSI);   /* pin 11 is PCI's */
				if (e[5] == 0)
					assert_int_equal(e[7], 2); /* IRQ0 -> pin 2 */
				else
					assert_int_equal(e[7], e[5]);
				ioints++;
			}
			off += 8;
			break;
		case 4:
			assert_int_equal(e[7], lints); /* ExtINT on LINT0, NMI on LINT1 */
			assert_int_equal(e[1], lints == 0 ? 3 : 1);
			lints++;
			off += 8;
			break;
		default:
			fail_msg("bad MP entry type %u", e[0]);
		}
	}
	assert_int_equal(off, clen);
	assert_int_equal(n, nent);
	assert_int_equal(procs, ncpus);
	assert_int_equal(buses, 2);
	assert_int_equal(ioints, 14);
	assert_int_equal(pci_ioints, 31);
	assert_int_equal(lints, 2);
}

static void test_tables_1(void **state) { check_acpi(*state, 1); }
static void test_tables_4(void **state) { check_acpi(*state, 4); }
static void test_tables_64(void **state) { check_acpi(*state, 64); }
static void test_tables_254(void **state) { check_acpi(*state, 254); }

/* RAM above 4 GiB: the 64-bit window moves above it (hva of the high region is
 * never touched: tables live below 1 MiB). */
static void test_window64_follows_ram(void **state)
{
	struct fake *f = *state;
	f->mem.nregions = 2;
	f->mem.region[1] = (struct mem_region){ .gpa = 0x100000000ULL, .size = (5ULL << 30) + 4096, .hva = NULL };
	uint64_t rsdp = 0;
	assert_int_equal(platform_write_tables(&f->mem, 2, &rsdp), 0);
	const uint8_t *fadt = find(f, rsdp, "FACP");
	const uint8_t *dsdt = table(f, rd64(fadt + 140), "DSDT");
	check_dsdt_windows(dsdt, mem_top(&f->mem));
	assert_int_equal(pci_mmio64_base(mem_top(&f->mem)), 10ULL << 30);
	f->mem.nregions = 1;
}

static void test_bad_args(void **state)
{
	struct fake *f = *state;
	uint64_t rsdp = 123;
	assert_int_equal(platform_write_tables(&f->mem, 0, &rsdp), -EINVAL);
	assert_int_equal(platform_write_tables(&f->mem, 255, &rsdp), -EINVAL);
	assert_non_null(strstr(err_msg(), "255"));
	assert_int_equal(rsdp, 123);
	/* guest RAM that does not reach the BIOS area */
	struct guest_mem small = f->mem;
	small.region[0].size = 0x80000;
	assert_int_equal(platform_write_tables(&small, 1, &rsdp), -EFAULT);
	assert_non_null(strstr(err_msg(), "0xe0000"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tables_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables_4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables_64, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables_254, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window64_follows_ram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
