/* Platform devices. Each file in src/devices/ owns one device's state struct and
 * registers itself on the VM's io bus; all take a struct vm so that nothing is global. */
#ifndef VMSVC_DEVICES_H
#define VMSVC_DEVICES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

/* ---- 16550A UART model (usable without a VM, for unit tests) ---- */
struct uart;
/* Called with the new level of the interrupt line (only on changes). Both callbacks
 * run with the uart's lock held: they must not call back into the same uart. */
typedef void (*uart_irq_fn)(void *opaque, bool level);
/* Called for each byte the guest transmits. */
typedef void (*uart_tx_fn)(void *opaque, uint8_t byte);
struct uart *uart_new(uart_irq_fn irq, uart_tx_fn tx, void *opaque);
void uart_free(struct uart *u);
/* Register access (offset 0..7 from the base port). Thread-safe. */
uint8_t uart_read(struct uart *u, unsigned offset);
void uart_write(struct uart *u, unsigned offset, uint8_t val);
/* Host side input: queue bytes for the guest; returns how many fit in the FIFO. */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);
/* How many more bytes uart_receive can take right now. */
size_t uart_rx_space(struct uart *u);
/* Back to power-on state (FIFOs emptied, interrupt line driven low). */
void uart_reset(struct uart *u);
/* Versioned register + FIFO state blob (caller frees *buf); load validates it and
 * re-drives the interrupt line. Used by the "uart" device's save/load ops. */
int uart_save(struct uart *u, void **buf, size_t *len);
int uart_load(struct uart *u, const void *buf, size_t len);

/* ---- attach to a VM ---- */
/* COM1: 0x3f8, IRQ 4; output to out_fd. The UART is stored in vm->uart. */
int uart_attach(struct vm *vm, uint16_t base, unsigned irq, int out_fd);
/* i8042: enough for reset (0xfe to port 0x64) and Linux's probe. */
int i8042_attach(struct vm *vm);
/* CMOS RTC at 0x70/0x71 with the host's time (UTC), IRQ 8. */
int rtc_attach(struct vm *vm);
/* QEMU isa-debug-exit compatible: iobase 0xf4, iosize 4; status = (value << 1) | 1. */
int debugexit_attach(struct vm *vm, uint16_t base, uint16_t size);
/* Port 0x80 (POST codes): ignored. */
int port80_attach(struct vm *vm);
/* Reset control register 0xcf9 (write 0x06/0x0e resets) and the ACPI PM
 * sleep/control ports used by the FADT (poweroff). */
int pm_attach(struct vm *vm);
/* The 0xcf9 register for a PCI bus that owns ports 0xcf8-0xcfb (pm_attach does
 * not register 0xcf9 when vm->pci exists): byte write / read of the VM's pm
 * device. -ENODEV (read: 0xff) if pm is not attached. */
int pm_reset_control_write(struct vm *vm, uint8_t val);
uint8_t pm_reset_control_read(struct vm *vm);

/* ---- PCI devices (include/vmsvc/pci.h, virtio.h) ---- */
/* virtio-rng on vm->pci: one queue filled from getrandom(2). */
int virtio_rng_attach(struct vm *vm);
/* Parse a --disk spec; spec's strings point into *buf (free() it). */
struct blk_spec;
int virtio_blk_parse_spec(const char *text, struct blk_spec *spec, char **buf);
/* virtio-blk on vm->pci for one --disk spec (see struct vm_config). */
int virtio_blk_attach(struct vm *vm, const char *spec);
/* Run fn(backend, arg) on the I/O thread of disk `index` (the index-th
 * virtio-blk, in --disk order) after the requests in flight completed; nothing
 * else drives the backend until fn returns. -ENOENT without such a disk. For
 * services that read or fill a disk's overlay (suspend, resume). */
struct blk;
int virtio_blk_with_backend(struct vm *vm, unsigned index, int (*fn)(struct blk *b, void *arg), void *arg);
/* virtio-net on vm->pci for one --net spec (see struct vm_config). */
int virtio_net_attach(struct vm *vm, const char *spec);

#endif
