/* ACPI tables for the guest: RSDP, RSDT/XSDT, FADT (+FACS, DSDT with \_S5 and
 * the PCI host bridge), MADT and MCFG (the PCI ECAM window), built in a host
 * buffer and copied to BOOT_ACPI_ADDR (the reserved area below 1 MiB, where
 * Linux also scans for the RSDP). The MP table (mptable.c)
 * goes after them, at 0xf0000. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/boot.h>
#include <vmsvc/err.h>
#include <vmsvc/pci.h>
#include <vmsvc/platform.h>

#define ACPI_AREA_END MPTABLE_ADDR  /* ACPI tables must end before the MP table */
#define IOAPIC_ADDR 0xfec00000u
#define LAPIC_ADDR 0xfee00000u
#define SCI_IRQ 9

static void put8(uint8_t *p, size_t off, uint8_t v) { p[off] = v; }
static void put16(uint8_t *p, size_t off, uint16_t v) { memcpy(p + off, &v, 2); } /* x86: little endian */
static void put32(uint8_t *p, size_t off, uint32_t v) { memcpy(p + off, &v, 4); }
static void put64(uint8_t *p, size_t off, uint64_t v) { memcpy(p + off, &v, 8); }

/* Value that makes the bytes sum to zero. */
static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += p[i];
	return (uint8_t)-sum;
}

/* Standard 36-byte System Description Table header; checksum filled by finish(). */
static void sdt_header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put32(t, 4, len);
	put8(t, 8, rev);
	memcpy(t + 10, "VMSVC ", 6);   /* OEMID */
	memcpy(t + 16, "VMSV", 4);     /* OEM table ID: "VMSV" + signature, */
	memcpy(t + 20, sig, 4);        /* distinct per table */
	put32(t, 24, 1);               /* OEM revision */
	memcpy(t + 28, "VMSV", 4);     /* creator ID */
	put32(t, 32, 1);               /* creator revision */
}

static void sdt_finish(uint8_t *t)
{
	uint32_t len;
	memcpy(&len, t + 4, 4);
	t[9] = 0;
	t[9] = checksum(t, len);
}

/* Generic Address Structure (12 bytes) for an I/O port register. */
static void gas_io(uint8_t *p, size_t off, uint8_t bit_width, uint8_t access_size, uint16_t port)
{
	put8(p, off, 1); /* system I/O space */
	put8(p, off + 1, bit_width);
	put8(p, off + 2, 0);
	put8(p, off + 3, access_size); /* 1 byte, 2 word, 3 dword */
	put64(p, off + 4, port);
}

/* The DSDT body (\_S5, the PCI host bridge \_SB.PCI0 with its _CRS windows and
 * _PRT, the motherboard resource device reserving the ECAM window): AML compiled
 * from src/vmm/dsdt.asl by scripts/gen-dsdt.sh. */
#include "vmm/dsdt_aml.h"

/* The placeholder minimum of the 64-bit window's QWordMemory descriptor in
 * dsdt.asl; the descriptor's max and length follow it at +8 and +24. */
#define DSDT_MMIO64_PLACEHOLDER 0x000000ABCD000000ULL
#define QWORD_DESC_TAG 0x8a
#define QWORD_MIN_OFFSET 14   /* from the descriptor tag to _MIN */

/* Offset of the 64-bit window's _MIN in dsdt_aml, or -1 (a broken regeneration). */
static long dsdt_mmio64_offset(void)
{
	uint8_t pat[8];
	put64(pat, 0, DSDT_MMIO64_PLACEHOLDER);
	const uint8_t *hit = memmem(dsdt_aml, sizeof(dsdt_aml), pat, sizeof(pat));
	if (!hit || hit - dsdt_aml < QWORD_MIN_OFFSET || hit[-QWORD_MIN_OFFSET] != QWORD_DESC_TAG ||
	    (size_t)(hit - dsdt_aml) + 32 > sizeof(dsdt_aml) ||
	    memmem(hit + 1, sizeof(dsdt_aml) - (size_t)(hit - dsdt_aml) - 1, pat, sizeof(pat)))
		return -1;
	return hit - dsdt_aml;
}

#define MCFG_LEN (36 + 8 + 16)

#define FADT_LEN 276
#define FACS_LEN 64

static size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }

/* Build everything into img (covering [BOOT_ACPI_ADDR, ACPI_AREA_END)). */
static int acpi_build(uint8_t *img, size_t img_len, unsigned ncpus, uint64_t ram_top)
{
	const uint64_t base = BOOT_ACPI_ADDR;
	size_t madt_len = 44 + 8 * (size_t)ncpus + 12 + 3 * 10 + 6;
	/* Layout: RSDP, RSDT, XSDT, FACS (64-byte aligned), FADT, DSDT, MADT, MCFG. */
	size_t rsdp = 0, rsdt = 0x40, xsdt = 0x80, facs = 0xc0, fadt = 0x100;
	size_t dsdt = align_up(fadt + FADT_LEN, 16);
	size_t dsdt_len = 36 + sizeof(dsdt_aml);
	size_t madt = align_up(dsdt + dsdt_len, 16);
	size_t mcfg = align_up(madt + madt_len, 16);
	long mmio64 = dsdt_mmio64_offset();
	if (mmio64 < 0)
		return err_set(EFAULT, "internal error: no 64-bit window placeholder in the DSDT AML");
	if (mcfg + MCFG_LEN > img_len)
		return err_set(ENOSPC, "ACPI tables for %u vCPUs do not fit below 0x%x", ncpus,
			       (unsigned)ACPI_AREA_END);

	/* RSDP (ACPI 2.0+, 36 bytes) */
	uint8_t *p = img + rsdp;
	memcpy(p, "RSD PTR ", 8);
	memcpy(p + 9, "VMSVC ", 6);
	put8(p, 15, 2);
	put32(p, 16, (uint32_t)(base + rsdt));
	put32(p, 20, 36);
	put64(p, 24, base + xsdt);
	put8(p, 8, checksum(p, 20));
	put8(p, 32, checksum(p, 36));

	/* RSDT and XSDT: FADT, MADT, MCFG (the RSDT for OSes told to ignore the XSDT) */
	sdt_header(img + rsdt, "RSDT", 36 + 3 * 4, 1);
	put32(img + rsdt, 36, (uint32_t)(base + fadt));
	put32(img + rsdt, 40, (uint32_t)(base + madt));
	put32(img + rsdt, 44, (uint32_t)(base + mcfg));
	sdt_finish(img + rsdt);
	sdt_header(img + xsdt, "XSDT", 36 + 3 * 8, 1);
	put64(img + xsdt, 36, base + fadt);
	put64(img + xsdt, 44, base + madt);
	put64(img + xsdt, 52, base + mcfg);
	sdt_finish(img + xsdt);

	/* FACS: required when not hardware-reduced; no checksum, no waking vector. */
	p = img + facs;
	memcpy(p, "FACS", 4);
	put32(p, 4, FACS_LEN);
	put8(p, 32, 2); /* version */

	/* FADT, revision 6 layout. Not hardware-reduced: PM1a event/control blocks
	 * at PM1A_*_PORT; SMI_CMD = 0 means the system is always in ACPI mode; no PM
	 * timer and no GPE block. */
	p = img + fadt;
	sdt_header(p, "FACP", FADT_LEN, 6);
	put32(p, 36, (uint32_t)(base + facs));   /* FIRMWARE_CTRL */
	put32(p, 40, (uint32_t)(base + dsdt));   /* DSDT */
	put16(p, 46, SCI_IRQ);                   /* SCI_INT */
	put32(p, 48, 0);                         /* SMI_CMD: none */
	put32(p, 56, PM1A_EVT_PORT);             /* PM1a_EVT_BLK */
	put32(p, 64, PM1A_CNT_PORT);             /* PM1a_CNT_BLK */
	put32(p, 76, 0);                         /* PM_TMR_BLK: none */
	put8(p, 88, 4);                          /* PM1_EVT_LEN */
	put8(p, 89, 2);                          /* PM1_CNT_LEN */
	put16(p, 96, 0x0fff);                    /* P_LVL2_LAT > 100: no C2 */
	put16(p, 98, 0x0fff);                    /* P_LVL3_LAT > 1000: no C3 */
	/* IAPC_BOOT_ARCH: legacy ISA devices (UART, RTC), 8042, no VGA; MSI allowed. */
	put16(p, 109, 1u << 0 | 1u << 1 | 1u << 2);
	/* Flags: WBINVD works; power/sleep buttons are not fixed features (we have
	 * none, so the OS need not enable their PM1 events); RESET_REG is valid. */
	put32(p, 112, 1u << 0 | 1u << 4 | 1u << 5 | 1u << 10);
	gas_io(p, 116, 8, 1, RESET_PORT);        /* RESET_REG */
	put8(p, 128, 0x06);                      /* RESET_VALUE */
	put8(p, 131, 0);                         /* FADT minor version (6.0) */
	put64(p, 140, base + dsdt);              /* X_DSDT */
	gas_io(p, 148, 32, 2, PM1A_EVT_PORT);    /* X_PM1a_EVT_BLK */
	gas_io(p, 172, 16, 2, PM1A_CNT_PORT);    /* X_PM1a_CNT_BLK */
	memcpy(p + 268, "VMSVC\0\0\0", 8);       /* hypervisor vendor identity */
	sdt_finish(p);

	/* DSDT */
	p = img + dsdt;
	sdt_header(p, "DSDT", (uint32_t)dsdt_len, 2); /* revision 2: 64-bit integers */
	memcpy(p + 36, dsdt_aml, sizeof(dsdt_aml));
	/* The 64-bit window follows RAM (pci.c allocates from the same place). */
	uint64_t w64 = pci_mmio64_base(ram_top);
	put64(p, 36 + (size_t)mmio64, w64);
	put64(p, 36 + (size_t)mmio64 + 8, w64 + PCI_MMIO64_SIZE - 1);
	put64(p, 36 + (size_t)mmio64 + 24, PCI_MMIO64_SIZE);
	sdt_finish(p);

	/* MADT */
	p = img + madt;
	sdt_header(p, "APIC", (uint32_t)madt_len, 5);
	put32(p, 36, LAPIC_ADDR);
	put32(p, 40, 1); /* PCAT_COMPAT: there are 8259 PICs too */
	size_t off = 44;
	for (unsigned i = 0; i < ncpus; i++, off += 8) {
		put8(p, off, 0);     /* Processor Local APIC */
		put8(p, off + 1, 8);
		put8(p, off + 2, (uint8_t)i); /* ACPI processor UID */
		put8(p, off + 3, (uint8_t)i); /* APIC ID */
		put32(p, off + 4, 1);          /* enabled */
	}
	put8(p, off, 1);          /* I/O APIC */
	put8(p, off + 1, 12);
	put8(p, off + 2, (uint8_t)ncpus); /* ID after the CPUs' */
	put32(p, off + 4, IOAPIC_ADDR);
	put32(p, off + 8, 0);     /* GSI base */
	off += 12;
	/* Interrupt Source Overrides: the PIT's IRQ0 arrives on pin 2; the SCI is
	 * level-triggered, active high; IRQ 11 is PCI INTx (GSI 11, level, active
	 * low, as the _PRT and the MP table say), not an edge-triggered ISA line. */
	static const struct { uint8_t irq; uint32_t gsi; uint16_t flags; } iso[3] = {
		{ 0, 2, 0 },
		{ SCI_IRQ, SCI_IRQ, 0x000d },
		{ PCI_INTX_GSI, PCI_INTX_GSI, 0x000f },
	};
	for (unsigned i = 0; i < 3; i++, off += 10) {
		put8(p, off, 2);
		put8(p, off + 1, 10);
		put8(p, off + 2, 0); /* bus: ISA */
		put8(p, off + 3, iso[i].irq);
		put32(p, off + 4, iso[i].gsi);
		put16(p, off + 8, iso[i].flags);
	}
	put8(p, off, 4);          /* Local APIC NMI: all processors, LINT1 */
	put8(p, off + 1, 6);
	put8(p, off + 2, 0xff);
	put16(p, off + 3, 0);
	put8(p, off + 5, 1);
	off += 6;
	sdt_finish(p);
	if (off != madt_len)
		return err_set(EFAULT, "internal error: MADT length mismatch");

	/* MCFG: one ECAM region, segment 0, buses 0..PCI_ECAM_BUSES-1. */
	p = img + mcfg;
	sdt_header(p, "MCFG", MCFG_LEN, 1);
	put64(p, 44, PCI_ECAM_BASE);
	put16(p, 52, 0);                          /* PCI segment group */
	put8(p, 54, 0);                           /* start bus */
	put8(p, 55, PCI_ECAM_BUSES - 1);          /* end bus */
	sdt_finish(p);
	return 0;
}

int platform_write_tables(struct guest_mem *mem, unsigned ncpus, uint64_t *rsdp)
{
	if (ncpus == 0 || ncpus > 254)
		return err_set(EINVAL, "%u vCPUs unsupported (1..254: APIC IDs are 8-bit and the IOAPIC takes the next one)",
			       ncpus);
	size_t len = ACPI_AREA_END - BOOT_ACPI_ADDR;
	uint8_t *img = calloc(1, len);
	if (!img)
		return err_set(ENOMEM, "ACPI tables: out of memory");
	int r = acpi_build(img, len, ncpus, mem_top(mem));
	if (r == 0 && mem_write(mem, BOOT_ACPI_ADDR, img, len) < 0)
		r = err_set(EFAULT, "guest RAM does not cover the BIOS area 0x%llx-0x%llx",
			    (unsigned long long)BOOT_ACPI_ADDR, (unsigned long long)ACPI_AREA_END - 1);
	free(img);
	if (r < 0)
		return r;
	r = mptable_write(mem, ncpus);
	if (r < 0)
		return r;
	*rsdp = BOOT_ACPI_ADDR;
	return 0;
}
