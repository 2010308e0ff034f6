/* Guest PCI library: type-1 configuration access (ports 0xcf8/0xcfc, so CPL0
 * only), bus 0 scan, BAR sizing and placement, capability walk, MSI-X.
 *
 * BARs: a firmware (SeaBIOS under QEMU -M pc) or the VMM (vmsvc) normally
 * assigns them before the guest runs; pci_setup_bars() keeps such addresses
 * and only places BARs that read as unassigned (or lie above 4 GiB, which the
 * kit's page tables do not map) into a free window of the 32-bit hole. */
#ifndef KIT_PCI_H
#define KIT_PCI_H
#include "kit.h"

#define PCI_MAX_BARS 6

#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_CMD_IO 0x1
#define PCI_CMD_MEM 0x2
#define PCI_CMD_MASTER 0x4
#define PCI_CMD_INTX_DISABLE 0x400
#define PCI_STATUS_CAPS 0x10
#define PCI_CAP_PTR 0x34
#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VENDOR 0x09

struct pci_dev {
	uint8_t bus, dev, fn;
	uint16_t vendor, device;
	uint16_t subsys_vendor, subsys_id;
	uint8_t class_code, subclass, header_type;
	uint64_t bar[PCI_MAX_BARS];       /* base address (0 = none) */
	uint64_t bar_size[PCI_MAX_BARS];
	bool bar_io[PCI_MAX_BARS];
	bool bar_64[PCI_MAX_BARS];        /* low half of a 64-bit pair */
};

uint32_t pci_cfg_read32(const struct pci_dev *d, unsigned off);
uint16_t pci_cfg_read16(const struct pci_dev *d, unsigned off);
uint8_t pci_cfg_read8(const struct pci_dev *d, unsigned off);
void pci_cfg_write32(const struct pci_dev *d, unsigned off, uint32_t v);
void pci_cfg_write16(const struct pci_dev *d, unsigned off, uint16_t v);
void pci_cfg_write8(const struct pci_dev *d, unsigned off, uint8_t v);

/* Calls fn for every function on bus 0 (identity only, BARs not read);
 * stops early and returns 1 when fn returns true, else 0. */
int pci_scan_bus0(bool (*fn)(const struct pci_dev *d, void *ctx), void *ctx);
/* First function on bus 0 matching vendor and (device_a or device_b);
 * 0 on success, -1 if none. */
int pci_find(uint16_t vendor, uint16_t device_a, uint16_t device_b, struct pci_dev *out);
/* Read, size and (if unassigned) place every BAR; prints what it did. 0 / -1. */
int pci_setup_bars(struct pci_dev *d);
/* Test aid: decoding off and every BAR zeroed ("unassigned"), so that
 * pci_setup_bars has to place them (exercises BAR moves in the VMM). */
void pci_clear_bars(const struct pci_dev *d);
/* Memory space + bus master on, legacy INTx off (I/O space as the BARs need). */
void pci_enable(const struct pci_dev *d);
/* Offset of the first capability with this id at or after `after`'s successor
 * (after = 0 starts from the list head); 0 if none. Loops are bounded. */
unsigned pci_find_cap(const struct pci_dev *d, uint8_t id, unsigned after);

struct pci_msix {
	unsigned cap;          /* config offset of the MSI-X capability */
	unsigned entries;      /* table size */
	uintptr_t table;       /* guest-physical (identity-mapped) table address */
};
int pci_msix_init(const struct pci_dev *d, struct pci_msix *m);   /* 0 / -1 */
/* Entry -> fixed delivery of `vector` to the LAPIC with this APIC ID; unmasked. */
void pci_msix_set(const struct pci_msix *m, unsigned entry, uint8_t vector, uint8_t apic_id);
void pci_msix_mask(const struct pci_msix *m, unsigned entry, bool masked);
void pci_msix_enable(const struct pci_dev *d, const struct pci_msix *m, bool on);

#endif
