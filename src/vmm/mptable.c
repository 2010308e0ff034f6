/* Intel MultiProcessor Specification 1.4 table, for guests booted with acpi=off
 * (or too old for ACPI): floating pointer at MPTABLE_ADDR (Linux scans
 * 0xf0000-0xfffff for it) and the configuration table right after it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/pci.h>
#include <vmsvc/platform.h>

#define MP_AREA_END 0x100000ULL
#define IOAPIC_ADDR 0xfec00000u
#define LAPIC_ADDR 0xfee00000u
#define LAPIC_VERSION 0x14
#define IOAPIC_VERSION 0x11

enum { MP_PROC = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINT = 3, MP_LINT = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };
/* Bus IDs: Linux matches a PCI interrupt entry's source bus against the PCI bus
 * number, so PCI bus 0 must be MP bus 0; ISA comes after it (as with SeaBIOS). */
enum { MP_BUS_PCI = 0, MP_BUS_ISA = 1 };
#define MP_PCI_SLOTS (PCI_MAX_SLOTS - 1)   /* slots 1..31; 0 is the host bridge */
#define MP_IRQ_LEVEL_LOW 0x000f            /* trigger level, polarity active low */

static void put16(uint8_t *p, size_t off, uint16_t v) { memcpy(p + off, &v, 2); }
static void put32(uint8_t *p, size_t off, uint32_t v) { memcpy(p + off, &v, 4); }

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += p[i];
	return (uint8_t)-sum;
}

/* ISA IRQs routed to IOAPIC pins: identity, except the PIT's IRQ0 on pin 2
 * (matching the ACPI override); IRQ2 (the PIC cascade) has no pin, and pin 11
 * belongs to PCI INTx (an ISA entry for it would make Linux program the pin
 * edge-triggered: it takes the first entry naming a pin). */
static int isa_irq_pin(unsigned irq)
{
	if (irq == 2 || irq == PCI_INTX_GSI)
		return -1;
	return irq == 0 ? 2 : (int)irq;
}

static size_t mp_config_len(unsigned ncpus)
{
	size_t n = 44 + 20 * (size_t)ncpus + 2 * 8 + 8; /* header, CPUs, 2 buses, IOAPIC */
	for (unsigned irq = 0; irq < 16; irq++)
		if (isa_irq_pin(irq) >= 0)
			n += 8;
	n += 8 * MP_PCI_SLOTS;   /* INTA of every slot */
	return n + 2 * 8; /* two local interrupt entries */
}

int mptable_write(struct guest_mem *mem, unsigned ncpus)
{
	if (ncpus == 0 || ncpus > 254)
		return err_set(EINVAL, "MP table: %u vCPUs unsupported (1..254)", ncpus);
	size_t cfg_len = mp_config_len(ncpus);
	size_t total = 16 + cfg_len;
	if (cfg_len > 0xffff || MPTABLE_ADDR + total > MP_AREA_END)
		return err_set(ENOSPC, "MP table for %u vCPUs does not fit below 1 MiB", ncpus);
	uint8_t *img = calloc(1, total);
	if (!img)
		return err_set(ENOMEM, "MP table: out of memory");

	/* Floating pointer structure (16 bytes) */
	uint8_t *fp = img;
	memcpy(fp, "_MP_", 4);
	put32(fp, 4, (uint32_t)(MPTABLE_ADDR + 16)); /* configuration table */
	fp[8] = 1;  /* length in 16-byte units */
	fp[9] = 4;  /* spec revision 1.4 */
	fp[11] = 0; /* feature 1: 0 = configuration table present */
	fp[12] = 0; /* feature 2: no IMCR, virtual wire mode */
	fp[10] = checksum(fp, 16);

	/* Configuration table header (44 bytes) */
	uint8_t *t = img + 16;
	memcpy(t, "PCMP", 4);
	put16(t, 4, (uint16_t)cfg_len);
	t[6] = 4;
	memcpy(t + 8, "VMSVC   ", 8);         /* OEM ID */
	memcpy(t + 16, "VMSVC MP    ", 12);   /* product ID */
	put32(t, 36, LAPIC_ADDR);

	size_t off = 44;
	unsigned count = 0;
	for (unsigned i = 0; i < ncpus; i++, off += 20, count++) {
		t[off] = MP_PROC;
		t[off + 1] = (uint8_t)i;                 /* local APIC ID */
		t[off + 2] = LAPIC_VERSION;
		t[off + 3] = 1u | (i == 0 ? 2u : 0u);    /* enabled, BSP */
		put32(t, off + 4, 0x600);                /* signature: family 6 (informational) */
		put32(t, off + 8, 1u << 0 | 1u << 9);    /* feature flags: FPU, APIC */
	}
	t[off] = MP_BUS;
	t[off + 1] = MP_BUS_PCI;
	memcpy(t + off + 2, "PCI   ", 6);
	off += 8, count++;
	t[off] = MP_BUS;
	t[off + 1] = MP_BUS_ISA;
	memcpy(t + off + 2, "ISA   ", 6);
	off += 8, count++;
	uint8_t ioapic_id = (uint8_t)ncpus;
	t[off] = MP_IOAPIC;
	t[off + 1] = ioapic_id;
	t[off + 2] = IOAPIC_VERSION;
	t[off + 3] = 1; /* enabled */
	put32(t, off + 4, IOAPIC_ADDR);
	off += 8, count++;
	for (unsigned irq = 0; irq < 16; irq++) {
		int pin = isa_irq_pin(irq);
		if (pin < 0)
			continue;
		t[off] = MP_IOINT;
		t[off + 1] = MP_INT;
		/* IRQ9 is the ACPI SCI: level, active high (as in the MADT); the rest
		 * conform to the ISA bus (edge, active high). */
		put16(t, off + 2, irq == 9 ? 0x000d : 0);
		t[off + 4] = MP_BUS_ISA;
		t[off + 5] = (uint8_t)irq;
		t[off + 6] = ioapic_id;
		t[off + 7] = (uint8_t)pin;
		off += 8, count++;
	}
	/* PCI: INTA# of every slot to PCI_INTX_GSI, level, active low, like the
	 * DSDT's _PRT (all slots, present or not, so the two never disagree).
	 * Source IRQ: device number in bits 6:2, pin (0 = INTA#) in bits 1:0. */
	for (unsigned slot = 1; slot <= MP_PCI_SLOTS; slot++, off += 8, count++) {
		t[off] = MP_IOINT;
		t[off + 1] = MP_INT;
		put16(t, off + 2, MP_IRQ_LEVEL_LOW);
		t[off + 4] = MP_BUS_PCI;
		t[off + 5] = (uint8_t)(slot << 2 | 0);
		t[off + 6] = ioapic_id;
		t[off + 7] = PCI_INTX_GSI;
	}
	static const uint8_t lint[2][2] = { { MP_EXTINT, 0 }, { MP_NMI, 1 } };
	for (unsigned i = 0; i < 2; i++, off += 8, count++) {
		t[off] = MP_LINT;
		t[off + 1] = lint[i][0];
		put16(t, off + 2, 0);
		t[off + 4] = 0;
		t[off + 5] = 0;
		t[off + 6] = 0xff; /* all local APICs */
		t[off + 7] = lint[i][1];
	}
	put16(t, 34, (uint16_t)count);
	t[7] = checksum(t, cfg_len);

	int r = 0;
	if (off != cfg_len)
		r = err_set(EFAULT, "internal error: MP table length mismatch");
	else if (mem_write(mem, MPTABLE_ADDR, img, total) < 0)
		r = err_set(EFAULT, "MP table: guest RAM does not cover 0x%llx-0x%llx",
			    (unsigned long long)MPTABLE_ADDR, (unsigned long long)(MPTABLE_ADDR + total - 1));
	free(img);
	return r;
}
