/* Just enough ACPI to count CPUs and find the IRQ0 override (RSDP -> XSDT/RSDT
 * -> MADT) and to find other tables by signature (MCFG). Every pointer and length comes from the VMM: stay inside the
 * identity-mapped 4 GiB and inside each table's declared length. */
#include "kit.h"

#define MAP_LIMIT 0x100000000ULL

static bool readable(uint64_t addr, uint64_t len)
{
	return addr != 0 && len < MAP_LIMIT && addr < MAP_LIMIT - len;
}

static bool checksum_ok(const uint8_t *p, uint32_t len)
{
	uint8_t sum = 0;
	for (uint32_t i = 0; i < len; i++)
		sum += p[i];
	return sum == 0;
}

static uint64_t find_rsdp(void)
{
	if (kit_rsdp_paddr)
		return kit_rsdp_paddr;
	/* QEMU's PVH option ROM may not pass it: scan the BIOS area. */
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
		if (memcmp((const void *)(uintptr_t)a, "RSD PTR ", 8) == 0)
			return a;
	return 0;
}

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Returns the table's address if it has a sane header and length. */
static const uint8_t *table_at(uint64_t addr)
{
	if (!readable(addr, 36))
		return NULL;
	const uint8_t *t = (const uint8_t *)(uintptr_t)addr;
	uint32_t len = rd32(t + 4);
	if (len < 36 || len > (1u << 20) || !readable(addr, len))
		return NULL;
	return t;
}

const uint8_t *kit_acpi_rsdp(void)
{
	uint64_t rsdp_addr = find_rsdp();
	if (!readable(rsdp_addr, 36))
		return NULL;
	const uint8_t *rsdp = (const uint8_t *)(uintptr_t)rsdp_addr;
	if (memcmp(rsdp, "RSD PTR ", 8) != 0 || !checksum_ok(rsdp, 20))
		return NULL;
	return rsdp;
}

const uint8_t *kit_acpi_table(const char sig[4])
{
	const uint8_t *rsdp = kit_acpi_rsdp();
	if (!rsdp)
		return NULL;
	const uint8_t *sdt = NULL;
	unsigned entry_size = 4;
	if (rsdp[15] >= 2 && rd64(rsdp + 24)) {
		sdt = table_at(rd64(rsdp + 24));
		entry_size = 8;
	}
	if (!sdt) {
		sdt = table_at(rd32(rsdp + 16));
		entry_size = 4;
	}
	if (!sdt)
		return NULL;
	uint32_t sdt_len = rd32(sdt + 4);
	for (uint32_t off = 36; off + entry_size <= sdt_len; off += entry_size) {
		uint64_t a = entry_size == 8 ? rd64(sdt + off) : rd32(sdt + off);
		const uint8_t *t = table_at(a);
		if (t && memcmp(t, sig, 4) == 0 && checksum_ok(t, rd32(t + 4)))
			return t;
	}
	return NULL;
}

int kit_acpi_madt(struct kit_madt *out)
{
	memset(out, 0, sizeof(*out));
	out->ioapic_addr = IOAPIC_BASE;
	const uint8_t *madt = kit_acpi_table("APIC");
	if (!madt)
		return -1;
	uint32_t len = rd32(madt + 4);
	bool irq0_overridden = false;
	for (uint32_t off = 44; off + 2 <= len;) {
		uint8_t type = madt[off], elen = madt[off + 1];
		if (elen < 2 || off + elen > len)
			break;
		const uint8_t *e = madt + off;
		if (type == 0 && elen >= 8 && (rd32(e + 4) & 1)) {         /* enabled local APIC */
			if (out->ncpus < KIT_MAX_CPUS)
				out->apic_id[out->ncpus] = e[3];
			out->ncpus++;
		} else if (type == 1 && elen >= 12) {                      /* IOAPIC */
			if (rd32(e + 8) == 0)
				out->ioapic_addr = rd32(e + 4);
		} else if (type == 2 && elen >= 10 && e[3] == 0) {         /* override for ISA IRQ0 */
			out->irq0_gsi = rd32(e + 4);
			irq0_overridden = true;
		}
		off += elen;
	}
	if (!irq0_overridden)
		out->irq0_gsi = 0;
	out->found = true;
	return 0;
}
