/* Interrupt controller interface. The default implementation uses KVM's in-kernel
 * irqchip (PIC + IOAPIC + LAPIC) and PIT; a userspace controller (needed for
 * deterministic record/replay) can be added behind the same ops. */
#ifndef VMSVC_IRQ_H
#define VMSVC_IRQ_H
#include <stdbool.h>
#include <stdint.h>
#include <vmsvc/bus.h>

struct irqchip;
struct irqchip_ops {
	const char *name;
	/* Drive an ISA/IOAPIC line (GSI) to level (edge devices pulse 1 then 0). */
	int (*set_level)(struct irqchip *c, unsigned gsi, bool level);
	/* Deliver an MSI message. */
	int (*signal_msi)(struct irqchip *c, uint64_t addr, uint32_t data);
	/* MSI routes (for MSI-X vectors delivered through irqfd): allocate a GSI routed
	 * to (addr, data), change it, free it. Thread-safe. */
	int (*msi_route_add)(struct irqchip *c, uint64_t addr, uint32_t data, unsigned *gsi);
	int (*msi_route_set)(struct irqchip *c, unsigned gsi, uint64_t addr, uint32_t data);
	void (*msi_route_del)(struct irqchip *c, unsigned gsi);
	/* Bind (assign=true) or unbind an eventfd to a GSI: a write to the eventfd
	 * raises the interrupt without a trip through the VMM. */
	int (*irqfd)(struct irqchip *c, unsigned gsi, int eventfd, bool assign);
	void (*destroy)(struct irqchip *c);
};
struct irqchip {
	const struct irqchip_ops *ops;
	int vm_fd;
	void *priv;
	struct bus *bus;    /* where BUS_EV_IRQ_LINE is published (NULL: nowhere) */
};

/* Create KVM's in-kernel irqchip on vm_fd (before vCPUs exist); then, before
 * the VM runs, irqchip_kvm_finish: the ISA routes and PIT2. The second part may
 * run on another thread while vCPUs and devices are set up (restore does, to
 * hide KVM's PIT creation). */
int irqchip_kvm_create(struct irqchip *c, int vm_fd);
int irqchip_kvm_finish(struct irqchip *c);

/* Every legacy line assertion, whatever the controller, passes here. */
static inline void irq_publish_line(struct irqchip *c, unsigned gsi)
{
	if (c->bus && bus_wants(c->bus, BUS_EV_IRQ_LINE)) {
		struct bus_event ev = { .type = BUS_EV_IRQ_LINE, .vcpu = -1, .u.line.gsi = gsi };
		bus_dispatch(c->bus, &ev);
	}
}
static inline int irq_set_level(struct irqchip *c, unsigned gsi, bool level)
{
	if (level)
		irq_publish_line(c, gsi);
	return c->ops->set_level(c, gsi, level);
}
static inline int irq_pulse(struct irqchip *c, unsigned gsi)
{
	irq_publish_line(c, gsi);
	int r = c->ops->set_level(c, gsi, true);
	if (r == 0)
		r = c->ops->set_level(c, gsi, false);
	return r;
}

#endif
