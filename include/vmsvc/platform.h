/* CPUID and firmware tables (ACPI RSDP/XSDT/MADT/FADT/DSDT/MCFG and an MP table). */
#ifndef VMSVC_PLATFORM_H
#define VMSVC_PLATFORM_H
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <vmsvc/mem.h>

/* ---- CPUID ---- */
/* Parse a user feature spec: comma-separated "-name" (hide) items, or a preset name
 * ("emulator-safe": hide what KVM's instruction emulator cannot execute at CPL0).
 * Unknown names give -EINVAL with err_msg() naming them. */
struct cpuid_hide {
	unsigned n;
	struct { uint32_t leaf, subleaf; uint8_t reg; uint8_t bit; } item[64]; /* reg: 0 eax 1 ebx 2 ecx 3 edx */
};
int cpuid_parse_features(const char *spec, struct cpuid_hide *out);
/* Adjust a KVM_GET_SUPPORTED_CPUID result for vCPU `index` of `ncpus`:
 * APIC IDs (leaf 1 EBX, 0xb, 0x1f), topology (one core per vCPU, one thread each),
 * hypervisor bit + KVM signature leaves, hidden features. Pure: unit-tested. */
void cpuid_adjust(struct kvm_cpuid2 *c, unsigned index, unsigned ncpus, const struct cpuid_hide *hide);
/* Fetch supported CPUID from /dev/kvm (caller frees). */
int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out);
/* Complete a CPUID set with the leaf 0xb subleaves 0..2 (and 0x1f's when 0x1f is
 * present) that cpuid_adjust fills in; KVM may report only subleaf 0. cpuid_adjust
 * never adds entries (its buffer may be an exact-size copy), so this runs first:
 * cpuid_get_supported already calls it. May realloc *c. */
int cpuid_add_topology_leaves(struct kvm_cpuid2 **c);

/* ---- firmware tables ---- */
/* Write ACPI tables (RSDP at BOOT_ACPI_ADDR) describing ncpus CPUs (APIC IDs 0..n-1),
 * the IOAPIC at 0xfec00000 (GSI 0-23), ISA overrides (IRQ0 -> GSI2, IRQ 11 = PCI
 * INTx level/low), a FADT whose PM1a control port (0x604) gives poweroff via \_S5
 * and reset register (0xcf9), the PCI host bridge (DSDT; its 64-bit window follows
 * the top of `mem`) and the MCFG for the PCI ECAM window (include/vmsvc/pci.h).
 * Also an MP table (for acpi=off). Returns the RSDP address via *rsdp. */
int platform_write_tables(struct guest_mem *mem, unsigned ncpus, uint64_t *rsdp);
/* The MP table alone (floating pointer at MPTABLE_ADDR, in the BIOS area Linux
 * scans; config table right after it); platform_write_tables calls it. ACPI tables
 * live in [BOOT_ACPI_ADDR, MPTABLE_ADDR). */
#define MPTABLE_ADDR 0xf0000ULL
int mptable_write(struct guest_mem *mem, unsigned ncpus);

#define PM1A_EVT_PORT 0x600
#define PM1A_CNT_PORT 0x604
#define RESET_PORT 0xcf9

#endif
