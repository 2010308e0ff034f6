/* KVM in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT behind struct irqchip_ops. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <vmsvc/err.h>
#include <vmsvc/irq.h>

static int kvm_irq_set_level(struct irqchip *c, unsigned gsi, bool level)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level };
	if (ioctl(c->vm_fd, KVM_IRQ_LINE, &l) < 0)
		return -errno;
	return 0;
}

static int kvm_irq_signal_msi(struct irqchip *c, uint64_t addr, uint32_t data)
{
	struct kvm_msi msi = { .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data };
	int r = ioctl(c->vm_fd, KVM_SIGNAL_MSI, &msi);
	return r < 0 ? -errno : 0;
}

static void kvm_irq_destroy(struct irqchip *c) { (void)c; /* goes with the VM fd */ }

static const struct irqchip_ops kvm_irqchip_ops = {
	.name = "kvm-in-kernel",
	.set_level = kvm_irq_set_level,
	.signal_msi = kvm_irq_signal_msi,
	.destroy = kvm_irq_destroy,
};

/* ISA IRQ n -> PIC pin n and IOAPIC pin n, except that IRQ0 (the PIT) goes to
 * IOAPIC pin 2, as the MADT's interrupt source override and the MP table say (and
 * as on real PCs); IRQ2 is the PIC cascade. IOAPIC pins 16-23 are GSIs 16-23. */
static int kvm_irq_set_routing(int vm_fd)
{
	enum { MAX = 48 };
	struct kvm_irq_routing *rt = calloc(1, sizeof(*rt) + MAX * sizeof(rt->entries[0]));
	if (!rt)
		return err_set(ENOMEM, "out of memory");
	unsigned n = 0;
	for (unsigned irq = 0; irq < 16; irq++) {
		if (irq == 2)
			continue;
		rt->entries[n++] = (struct kvm_irq_routing_entry){
			.gsi = irq, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, .pin = irq % 8 } };
	}
	for (unsigned gsi = 0; gsi < 24; gsi++) {
		if (gsi == 2)
			continue;
		rt->entries[n++] = (struct kvm_irq_routing_entry){
			.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi == 0 ? 2 : gsi } };
	}
	rt->nr = n;
	int r = ioctl(vm_fd, KVM_SET_GSI_ROUTING, rt);
	free(rt);
	if (r < 0)
		return err_set(errno, "KVM_SET_GSI_ROUTING: %s", strerror(errno));
	return 0;
}

int irqchip_kvm_create(struct irqchip *c, int vm_fd)
{
	memset(c, 0, sizeof(*c));
	c->vm_fd = vm_fd;
	c->ops = &kvm_irqchip_ops;
	if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return err_set(errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	int r = kvm_irq_set_routing(vm_fd);
	if (r < 0)
		return r;
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return err_set(errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}
