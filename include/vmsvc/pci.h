/* PCI: one host bridge (00:00.0) and up to 31 devices on bus 0 (function 0 only),
 * configuration space through the type-1 mechanism (0xcf8 address, 0xcfc-0xcff
 * data) and through ECAM (memory-mapped, PCI_ECAM_BASE, described by the ACPI
 * MCFG table); both end in pci_config_read/write. The bus assigns BAR addresses
 * at device creation (as firmware would) and re-registers a BAR's handler on
 * the VM's io bus whenever the guest moves it or toggles COMMAND memory/io
 * enable. MSI-X (table + PBA in a BAR of their own) is
 * implemented here: each vector has a KVM MSI route and an eventfd bound with
 * irqfd, so a device thread raises an interrupt with one write(). Layout and
 * choices: docs/devices.md.
 *
 * Threads: config space and BAR accesses arrive on vCPU threads; pci_msix_notify
 * and pci_intx_set may be called from any thread. Every device has a lock for its
 * config space and MSI-X state; device callbacks below are called WITHOUT it. */
#ifndef VMSVC_PCI_H
#define VMSVC_PCI_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct pci_bus;
struct pci_device;

#define PCI_CFG_SIZE 256
#define PCI_MAX_SLOTS 32          /* slot 0 is the host bridge */
#define PCI_NUM_BARS 6
#define PCI_MSIX_MAX_VECTORS 256

/* Standard config space offsets used by devices. */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_SUBSYSTEM_ID 0x2e
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_INTERRUPT_PIN 0x3d

#define PCI_COMMAND_IO 0x0001
#define PCI_COMMAND_MEMORY 0x0002
#define PCI_COMMAND_MASTER 0x0004
#define PCI_COMMAND_INTX_DISABLE 0x0400
#define PCI_STATUS_INTERRUPT 0x0008
#define PCI_STATUS_CAP_LIST 0x0010

#define PCI_CAP_ID_MSIX 0x11
#define PCI_CAP_ID_VNDR 0x09

/* Legacy INTx: every device uses pin A, routed to this ISA IRQ / IOAPIC GSI
 * (shared, level-triggered; the line is the OR of all devices' INTx). */
#define PCI_INTX_GSI 11

/* Host bridge identity: QEMU's generic "PCIe host bridge" id (Red Hat 1b36:0008),
 * class 06.00.00; neutral, and every guest OS accepts it. */
#define PCI_HOST_VENDOR 0x1b36
#define PCI_HOST_DEVICE 0x0008

/* ECAM (PCIe enhanced configuration access): bus b, device d, function f,
 * register r at PCI_ECAM_BASE + (b << 20 | d << 15 | f << 12 | r). Buses
 * 0..PCI_ECAM_BUSES-1 are decoded (only bus 0 has devices). 256 MiB-aligned, at
 * the top of the 32-bit BAR window; reserved in the e820 map and by a PNP0C02
 * device in the DSDT (Linux ignores an MCFG region reserved by neither). */
#define PCI_ECAM_BASE 0xF0000000ULL
#define PCI_ECAM_BUSES 16
#define PCI_ECAM_SIZE ((uint64_t)PCI_ECAM_BUSES << 20)

/* Address windows the bus allocates BARs from (naturally aligned); the ACPI
 * host bridge _CRS declares the same windows. */
#define PCI_MMIO32_BASE 0xC0000000ULL   /* = MEM_HOLE_START */
#define PCI_MMIO32_END PCI_ECAM_BASE
#define PCI_IO_BASE 0xC000
#define PCI_IO_END 0x10000
/* 64-bit prefetchable window: starts at max(4 GiB, RAM top) rounded up to 1 GiB. */
#define PCI_MMIO64_ALIGN (1ULL << 30)
#define PCI_MMIO64_SIZE (64ULL << 30)
/* 64-bit prefetchable BARs at least this large go above 4 GiB (as do others
 * when the 32-bit window is full); smaller ones stay below, where guests that
 * map only 4 GiB (the test kit) reach them. */
#define PCI_MMIO64_MIN_HIGH (256ULL << 20)
static inline uint64_t pci_mmio64_base(uint64_t ram_top)
{
	uint64_t a = ram_top > 0x100000000ULL ? ram_top : 0x100000000ULL;
	return (a + PCI_MMIO64_ALIGN - 1) & ~(PCI_MMIO64_ALIGN - 1);
}

enum pci_bar_type {
	PCI_BAR_NONE = 0,
	PCI_BAR_IO,      /* I/O ports, size 4..256 bytes */
	PCI_BAR_MEM32,   /* 32-bit MMIO */
	PCI_BAR_MEM64,   /* 64-bit MMIO: takes BAR n and n+1; placed in the 32-bit hole
	                  * unless prefetchable and large (PCI_MMIO64_MIN_HIGH), or
	                  * PCI_BAR_HIGH is given, or the hole is full */
};
#define PCI_BAR_PREFETCH 0x1u
/* MEM64 + PREFETCH only: allocate in the 64-bit window (which the host bridge
 * declares prefetchable, so Linux keeps only prefetchable BARs there). */
#define PCI_BAR_HIGH 0x2u

struct pci_device_info {
	const char *name;       /* for logs and io bus range names; must outlive the device */
	uint16_t vendor, device;
	uint16_t subsys_vendor, subsys_id;
	uint8_t revision;
	uint32_t class_code;    /* class << 16 | subclass << 8 | prog-if */
	bool intx;              /* interrupt pin A wired (PCI_INTX_GSI) */
};

struct pci_device_ops {
	/* A guest access to a BAR declared with pci_add_bar (never the MSI-X BAR).
	 * `offset` is inside the BAR; `size` is 1, 2, 4 or 8. vCPU thread. */
	void (*bar_rw)(void *opaque, unsigned bar, uint64_t offset, void *data, unsigned size, bool is_write);
	/* Optional: BAR `bar` became reachable at `addr` (mapped) or stopped being
	 * reachable (!mapped, addr = old address). Devices (un)register ioeventfds here.
	 * Called on the thread that moved it (vCPU, or the creator). */
	void (*bar_remap)(void *opaque, unsigned bar, uint64_t addr, bool mapped);
	/* Optional: the guest wrote config space [offset, offset + size) (after the
	 * write mask was applied); e.g. a capability the device interprets. */
	void (*config_write)(void *opaque, unsigned offset, unsigned size);
	/* Optional: called before a config read of [offset, offset+size) so the device
	 * can refresh bytes it owns (pci_config_set). */
	void (*config_read)(void *opaque, unsigned offset, unsigned size);
};

/* ---- bus ---- */
/* Create the VM's bus (vm->pci), register ports 0xcf8-0xcff, the ECAM window
 * and the host bridge, and add the bus as a VM device (destroyed after the
 * devices created later; its save/load carry the 0xcf8 latch and the host
 * bridge's config space).
 * One-byte accesses at 0xcf9 go to pm_reset_control_write/read (devices.h). */
int pci_bus_create(struct vm *vm);
/* Config space access as the guest sees it (used by the port and ECAM handlers
 * and tests): bdf = bus << 8 | slot << 3 | function; offset + size must stay in
 * one dword. Offsets 256..4095 (ECAM extended space) read 0 on a present
 * function (no extended capabilities) and all-ones on an absent one. */
uint32_t pci_config_read(struct pci_bus *b, unsigned bdf, unsigned offset, unsigned size);
void pci_config_write(struct pci_bus *b, unsigned bdf, unsigned offset, unsigned size, uint32_t val);

/* ---- devices ---- */
/* Add a device in the first free slot (or -ENOSPC). `ops`/`opaque` receive BAR
 * accesses. The device is not reachable by the guest until pci_device_realize. */
int pci_device_add(struct pci_bus *b, const struct pci_device_info *info, const struct pci_device_ops *ops,
		   void *opaque, struct pci_device **out);
/* Declare BAR `bar` (size a power of two; MMIO >= 4096 is enforced by rounding up). */
int pci_add_bar(struct pci_device *d, unsigned bar, enum pci_bar_type type, uint64_t size, unsigned flags);
/* Append a capability: `body` is the whole capability including its 2-byte header
 * (id, next; next is filled in here), `len` bytes, at a 4-byte aligned offset.
 * `wmask` (len bytes, or NULL = read-only) says which bits the guest may write.
 * Returns the config offset (>= 0x40) or negative errno. */
int pci_add_capability(struct pci_device *d, const void *body, unsigned len, const uint8_t *wmask);
/* MSI-X with `nvec` vectors, table at offset 0 and PBA after it in BAR `bar` (a
 * 32-bit MMIO BAR of its own, created here). */
int pci_msix_init(struct pci_device *d, unsigned bar, unsigned nvec);
/* Assign BAR addresses, enable COMMAND io/memory as firmware would, and map the
 * BARs. After this the guest sees the device. */
int pci_device_realize(struct pci_device *d);
/* Unmap the device's BARs, free MSI-X routes/eventfds, free the slot. */
void pci_device_remove(struct pci_device *d);

/* Direct access to config bytes for the device model (under the device lock). */
void pci_config_set(struct pci_device *d, unsigned offset, const void *src, unsigned len);
void pci_config_get(struct pci_device *d, unsigned offset, void *dst, unsigned len);
/* Current address of a BAR (0 if not declared). */
uint64_t pci_bar_addr(struct pci_device *d, unsigned bar);
struct vm *pci_device_vm(struct pci_device *d);
/* The device's slot on bus 0 (its address is 00:SLOT.0). */
unsigned pci_device_slot(const struct pci_device *d);
const char *pci_device_name(struct pci_device *d);

/* Versioned state of a device's PCI function: the guest-writable config bits
 * (BAR addresses, COMMAND, capability bits), the MSI-X table and PBA, the INTx
 * level. Load (VM paused) keeps read-only bytes from the device's own setup,
 * re-maps BARs and re-routes MSI-X. Caller frees *buf. */
int pci_device_save(struct pci_device *d, void **buf, size_t *len);
int pci_device_load(struct pci_device *d, const void *buf, size_t len);

/* ---- interrupts ---- */
/* True when the guest enabled MSI-X (enable bit set). */
bool pci_msix_enabled(struct pci_device *d);
/* Raise MSI-X `vector`: when enabled and unmasked, one write() to its irqfd
 * eventfd; when masked (per vector or function), set its PBA bit and fire on
 * unmask. Thread-safe. -EINVAL for a vector out of range, -ENODEV when MSI-X is
 * disabled (the caller then uses INTx). */
int pci_msix_notify(struct pci_device *d, unsigned vector);
/* The irqfd eventfd behind `vector` (fires the vector directly: do not use it
 * while the vector may be masked; pci_msix_notify handles masking). -1 if none. */
int pci_msix_eventfd(struct pci_device *d, unsigned vector);
/* Drive the device's INTx line (pin A). Ignored when COMMAND.INTX_DISABLE is set
 * (and re-driven when it is cleared). Thread-safe. */
void pci_intx_set(struct pci_device *d, bool level);

#endif
