/* MSI-X: capability, table and PBA (in a BAR of their own), per-vector and
 * function masking, and delivery through KVM MSI routes + irqfd.
 *
 * Each vector owns an eventfd. While the vector is deliverable (MSI-X enabled,
 * function and vector unmasked) its eventfd is bound by irqfd to a GSI whose MSI
 * route carries the table entry's address/data, so pci_msix_notify is one
 * write(). Routes are (re)written when the guest unmasks a vector or changes an
 * unmasked entry, never in the notify path. A notify on a masked vector sets the
 * PBA bit; the interrupt is sent when the vector is unmasked. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/pci.h>
#include <vmsvc/vm.h>
#include "devices/pci_internal.h"

#define MSIX_ENTRY_SIZE 16
#define MSIX_CTRL_MASKED 1u
#define MSIX_FLAGS_ENABLE 0x8000u
#define MSIX_FLAGS_MASKALL 0x4000u

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static bool vec_deliverable(const struct pci_device *d, const struct msix_vec *v)
{
	return d->msix_enabled && !d->msix_func_masked && !(v->ctrl & MSIX_CTRL_MASKED);
}

/* Make the vector's KVM route match its table entry. dev->lock held. */
static void vec_sync_route(struct pci_device *d, struct msix_vec *v)
{
	struct irqchip *irq = &d->bus->vm->irq;
	uint64_t addr = v->addr_lo | (uint64_t)v->addr_hi << 32;
	if (v->route_failed || v->efd < 0 || !irq->ops->msi_route_add || !irq->ops->irqfd) {
		v->route_failed = true;
		return;
	}
	if (v->routed) {
		if (v->route_addr == addr && v->route_data == v->data)
			return;
		if (irq->ops->msi_route_set(irq, v->gsi, addr, v->data) == 0) {
			v->route_addr = addr;
			v->route_data = v->data;
			return;
		}
		irq->ops->irqfd(irq, v->gsi, v->efd, false);
		irq->ops->msi_route_del(irq, v->gsi);
		v->routed = false;
	}
	unsigned gsi;
	if (irq->ops->msi_route_add(irq, addr, v->data, &gsi) < 0) {
		log_warn("pci %s: no MSI route available; delivering MSI-X without irqfd", d->info.name);
		v->route_failed = true;
		return;
	}
	if (irq->ops->irqfd(irq, gsi, v->efd, true) < 0) {
		irq->ops->msi_route_del(irq, gsi);
		v->route_failed = true;
		return;
	}
	v->routed = true;
	v->gsi = gsi;
	v->route_addr = addr;
	v->route_data = v->data;
}

static void vec_unroute(struct pci_device *d, struct msix_vec *v)
{
	struct irqchip *irq = &d->bus->vm->irq;
	if (v->routed) {
		irq->ops->irqfd(irq, v->gsi, v->efd, false);
		irq->ops->msi_route_del(irq, v->gsi);
		v->routed = false;
	}
	v->route_failed = false;
}

/* Send the vector's message now. dev->lock held, vector deliverable. */
static void vec_fire(struct pci_device *d, struct msix_vec *v)
{
	struct bus *bus = &d->bus->vm->bus;
	if (bus_wants(bus, BUS_EV_IRQ_MSIX)) {
		struct bus_event ev = { .type = BUS_EV_IRQ_MSIX, .vcpu = -1 };
		ev.u.msix = (typeof(ev.u.msix)){ .bdf = (uint16_t)(d->slot << 3), .vector = (uint16_t)(v - d->vec),
						 .data = v->data, .addr = v->addr_lo | (uint64_t)v->addr_hi << 32 };
		bus_dispatch(bus, &ev);
	}
	if (!v->routed && !v->route_failed)
		vec_sync_route(d, v);
	if (v->routed) {
		uint64_t one = 1;
		if (write(v->efd, &one, sizeof(one)) == sizeof(one))
			return;
	}
	struct irqchip *irq = &d->bus->vm->irq;
	if (irq->ops->signal_msi)
		irq->ops->signal_msi(irq, v->addr_lo | (uint64_t)v->addr_hi << 32, v->data);
}

/* After an unmask or enable: bring routes up to date and send what is pending. */
static void vec_unmasked(struct pci_device *d, struct msix_vec *v)
{
	if (!vec_deliverable(d, v))
		return;
	vec_sync_route(d, v);
	if (v->pending) {
		v->pending = false;
		vec_fire(d, v);
	}
}

int pci_msix_notify(struct pci_device *d, unsigned vector)
{
	if (vector >= d->msix_nvec)
		return -EINVAL;
	int r = 0;
	pthread_mutex_lock(&d->lock);
	struct msix_vec *v = &d->vec[vector];
	if (!d->msix_enabled)
		r = -ENODEV;
	else if (!vec_deliverable(d, v))
		v->pending = true;
	else
		vec_fire(d, v);
	pthread_mutex_unlock(&d->lock);
	return r;
}

int pci_msix_eventfd(struct pci_device *d, unsigned vector)
{
	return vector < d->msix_nvec ? d->vec[vector].efd : -1;
}

bool pci_msix_enabled(struct pci_device *d)
{
	pthread_mutex_lock(&d->lock);
	bool e = d->msix_enabled;
	pthread_mutex_unlock(&d->lock);
	return e;
}

static void entry_bytes(const struct msix_vec *v, uint8_t out[MSIX_ENTRY_SIZE])
{
	const uint32_t w[4] = { v->addr_lo, v->addr_hi, v->data, v->ctrl };
	for (unsigned i = 0; i < 16; i++)
		out[i] = (uint8_t)(w[i / 4] >> (8 * (i % 4)));
}

void pci_msix_bar_rw(struct pci_device *d, uint64_t offset, void *data, unsigned size, bool is_write)
{
	uint8_t *bytes = data;
	uint64_t table_len = (uint64_t)d->msix_nvec * MSIX_ENTRY_SIZE;
	pthread_mutex_lock(&d->lock);
	if (offset < table_len) {
		/* An access may touch at most two entries (size <= 8). */
		unsigned first = (unsigned)(offset / MSIX_ENTRY_SIZE);
		unsigned last = (unsigned)((offset + size - 1) / MSIX_ENTRY_SIZE);
		for (unsigned e = first; e <= last && e < d->msix_nvec; e++) {
			struct msix_vec *v = &d->vec[e];
			uint8_t img[MSIX_ENTRY_SIZE];
			entry_bytes(v, img);
			for (unsigned i = 0; i < size; i++) {
				uint64_t off = offset + i;
				if (off / MSIX_ENTRY_SIZE != e)
					continue;
				if (is_write)
					img[off % MSIX_ENTRY_SIZE] = bytes[i];
				else
					bytes[i] = img[off % MSIX_ENTRY_SIZE];
			}
			if (!is_write)
				continue;
			uint32_t w[4];
			for (unsigned k = 0; k < 4; k++)
				w[k] = img[4 * k] | img[4 * k + 1] << 8 | img[4 * k + 2] << 16 | (uint32_t)img[4 * k + 3] << 24;
			v->addr_lo = w[0];
			v->addr_hi = w[1];
			v->data = w[2];
			v->ctrl = (v->ctrl & ~MSIX_CTRL_MASKED) | (w[3] & MSIX_CTRL_MASKED);   /* other bits reserved */
			/* If deliverable now: route changes (a guest may rewrite an unmasked
			 * entry) take effect and a pending interrupt goes out. */
			vec_unmasked(d, v);
		}
	} else if (offset >= d->msix_pba_off && !is_write) {
		for (unsigned i = 0; i < size; i++) {
			uint64_t bit = (offset + i - d->msix_pba_off) * 8;
			uint8_t b = 0;
			for (unsigned k = 0; k < 8; k++)
				if (bit + k < d->msix_nvec && d->vec[bit + k].pending)
					b |= (uint8_t)(1u << k);
			bytes[i] = b;
		}
	} else if (!is_write) {
		memset(bytes, 0, size);   /* gap between table and PBA */
	}
	pthread_mutex_unlock(&d->lock);
}

void pci_msix_control_written(struct pci_device *d)
{
	pthread_mutex_lock(&d->lock);
	uint16_t ctl = pci_cfg_get16(d, d->msix_cap + 2);
	bool was_enabled = d->msix_enabled;
	d->msix_enabled = (ctl & MSIX_FLAGS_ENABLE) != 0;
	d->msix_func_masked = (ctl & MSIX_FLAGS_MASKALL) != 0;
	for (unsigned i = 0; i < d->msix_nvec; i++)
		vec_unmasked(d, &d->vec[i]);   /* no-op unless deliverable */
	pthread_mutex_unlock(&d->lock);
	if (was_enabled != d->msix_enabled)
		pci_intx_update(d);   /* MSI-X enabled: INTx is off */
}

void pci_msix_reset(struct pci_device *d)
{
	if (!d->msix_nvec)
		return;
	pthread_mutex_lock(&d->lock);
	d->msix_enabled = d->msix_func_masked = false;
	for (unsigned i = 0; i < d->msix_nvec; i++) {
		struct msix_vec *v = &d->vec[i];
		vec_unroute(d, v);
		v->addr_lo = v->addr_hi = v->data = 0;
		v->ctrl = MSIX_CTRL_MASKED;
		v->pending = false;
	}
	pthread_mutex_unlock(&d->lock);
	pci_intx_update(d);
}

void pci_msix_free(struct pci_device *d)
{
	if (!d->vec)
		return;
	for (unsigned i = 0; i < d->msix_nvec; i++) {
		vec_unroute(d, &d->vec[i]);
		if (d->vec[i].efd >= 0)
			close(d->vec[i].efd);
	}
	free(d->vec);
	d->vec = NULL;
	d->msix_nvec = 0;
}

int pci_msix_init(struct pci_device *d, unsigned bar, unsigned nvec)
{
	if (d->realized || d->msix_cap || nvec == 0 || nvec > PCI_MSIX_MAX_VECTORS)
		return err_set(EINVAL, "pci %s: bad MSI-X setup (%u vectors)", d->info.name, nvec);
	uint64_t table_len = (uint64_t)nvec * MSIX_ENTRY_SIZE;
	uint64_t pba_off = align_up(table_len, 2048);
	uint64_t size = 4096;
	while (size < pba_off + align_up((nvec + 7) / 8, 8))
		size <<= 1;
	int r = pci_add_bar(d, bar, PCI_BAR_MEM32, size, 0);
	if (r < 0)
		return r;
	d->bar[bar].is_msix = true;
	d->vec = calloc(nvec, sizeof(*d->vec));
	if (!d->vec)
		return err_set(ENOMEM, "pci: out of memory");
	for (unsigned i = 0; i < nvec; i++) {
		d->vec[i].ctrl = MSIX_CTRL_MASKED;
		d->vec[i].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (d->vec[i].efd < 0) {
			int e = errno;
			d->msix_nvec = i;
			pci_msix_free(d);
			return err_set(e, "pci %s: eventfd: %s", d->info.name, strerror(e));
		}
	}
	d->msix_nvec = nvec;
	d->msix_bar = bar;
	d->msix_pba_off = pba_off;
	uint8_t cap[12] = { PCI_CAP_ID_MSIX, 0 }, wm[12] = { 0 };
	uint16_t ctl = (uint16_t)(nvec - 1);
	cap[2] = (uint8_t)ctl;
	cap[3] = (uint8_t)(ctl >> 8);
	uint32_t table = 0 | bar, pba = (uint32_t)pba_off | bar;
	for (unsigned i = 0; i < 4; i++) {
		cap[4 + i] = (uint8_t)(table >> (8 * i));
		cap[8 + i] = (uint8_t)(pba >> (8 * i));
	}
	wm[3] = (MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL) >> 8;
	int off = pci_add_capability(d, cap, sizeof(cap), wm);
	if (off < 0) {
		pci_msix_free(d);
		return off;
	}
	d->msix_cap = (unsigned)off;
	return 0;
}

/* Replace the vector table (state load): drop all routes, take the new entries,
 * then let the control register logic re-route what is deliverable. */
void pci_msix_set_vectors(struct pci_device *d, const struct msix_vec *src)
{
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->msix_nvec; i++) {
		struct msix_vec *v = &d->vec[i];
		vec_unroute(d, v);
		v->addr_lo = src[i].addr_lo;
		v->addr_hi = src[i].addr_hi;
		v->data = src[i].data;
		v->ctrl = src[i].ctrl & MSIX_CTRL_MASKED;
		v->pending = src[i].pending;
	}
	pthread_mutex_unlock(&d->lock);
	if (d->msix_cap)
		pci_msix_control_written(d);
}
