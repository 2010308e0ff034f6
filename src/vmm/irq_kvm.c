/* KVM in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT behind struct irqchip_ops. */
#include <errno.h>
#include <linux/kvm.h>
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

int irqchip_kvm_create(struct irqchip *c, int vm_fd)
{
	memset(c, 0, sizeof(*c));
	c->vm_fd = vm_fd;
	c->ops = &kvm_irqchip_ops;
	if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return err_set(errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return err_set(errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}
