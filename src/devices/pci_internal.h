/* Private to pci.c and pci_msix.c: the bus and device structures. */
#ifndef VMSVC_PCI_INTERNAL_H
#define VMSVC_PCI_INTERNAL_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <vmsvc/pci.h>

struct pci_bar {
	struct pci_device *dev;
	unsigned index;
	enum pci_bar_type type;   /* NONE for unused and for the upper half of a 64-bit BAR */
	bool upper_half;
	bool is_msix;             /* handled by pci_msix.c, not the device */
	unsigned flags;
	uint64_t size;
	bool mapped;              /* registered on the io bus at mapped_addr */
	uint64_t mapped_addr;
	unsigned overlap_logged;
};

struct msix_vec {
	uint32_t addr_lo, addr_hi, data, ctrl;   /* the table entry as the guest wrote it */
	bool pending;                            /* PBA bit */
	int efd;                                 /* irqfd eventfd, -1 if none */
	bool routed;                             /* gsi allocated and efd bound to it */
	bool route_failed;                       /* no MSI routes: use signal_msi instead */
	unsigned gsi;
	uint64_t route_addr;                     /* what the KVM route currently says */
	uint32_t route_data;
};

struct pci_device {
	struct pci_bus *bus;
	unsigned slot;
	struct pci_device_info info;
	const struct pci_device_ops *ops;
	void *opaque;
	pthread_mutex_t lock;
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];
	uint8_t cfg_reset[PCI_CFG_SIZE];   /* as realized: restored on VM reset */
	unsigned next_cap, last_cap;
	struct pci_bar bar[PCI_NUM_BARS];
	bool realized;
	/* INTx */
	bool intx_level;   /* what the device drives */
	bool intx_out;     /* what it contributes to the shared line */
	/* MSI-X (pci_msix.c) */
	unsigned msix_cap;         /* config offset of the capability, 0 if none */
	unsigned msix_bar, msix_nvec;
	uint64_t msix_pba_off;
	bool msix_enabled, msix_func_masked;
	struct msix_vec *vec;
};

struct pci_bus {
	struct vm *vm;
	pthread_mutex_t lock;
	uint32_t config_address;   /* 0xcf8 latch */
	struct pci_device *slot[PCI_MAX_SLOTS];
	uint64_t mmio32_next, io_next, mmio64_next, mmio64_end;
	pthread_mutex_t intx_lock;
	unsigned intx_count;       /* devices asserting the shared INTx line */
};

uint16_t pci_cfg_get16(const struct pci_device *d, unsigned off);
/* Recompute INTx output (takes dev->lock). */
void pci_intx_update(struct pci_device *d);
/* pci_msix.c */
void pci_msix_bar_rw(struct pci_device *d, uint64_t offset, void *data, unsigned size, bool is_write);
void pci_msix_control_written(struct pci_device *d);
void pci_msix_reset(struct pci_device *d);
void pci_msix_free(struct pci_device *d);
void pci_msix_set_vectors(struct pci_device *d, const struct msix_vec *src);

#endif
