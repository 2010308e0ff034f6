/* KVM in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT behind struct irqchip_ops. */
#include <errno.h>
#include <pthread.h>
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

/* The full GSI routing table: KVM_SET_GSI_ROUTING replaces it as a whole, so the
 * ISA routes and every MSI route live here and are re-sent on each change. */
#define MSI_GSI_BASE 24
#define MSI_GSI_MAX 1024
struct kvm_irq_priv {
	pthread_mutex_t lock;
	unsigned nisa;
	struct kvm_irq_routing_entry isa[48];
	bool used[MSI_GSI_MAX];
	struct kvm_irq_routing_entry msi[MSI_GSI_MAX];
};

static int kvm_irq_commit(struct irqchip *c)
{
	struct kvm_irq_priv *p = c->priv;
	unsigned n = p->nisa;
	for (unsigned i = 0; i < MSI_GSI_MAX; i++)
		n += p->used[i];
	struct kvm_irq_routing *rt = calloc(1, sizeof(*rt) + n * sizeof(rt->entries[0]));
	if (!rt)
		return -ENOMEM;
	memcpy(rt->entries, p->isa, p->nisa * sizeof(p->isa[0]));
	n = p->nisa;
	for (unsigned i = 0; i < MSI_GSI_MAX; i++)
		if (p->used[i])
			rt->entries[n++] = p->msi[i];
	rt->nr = n;
	int r = ioctl(c->vm_fd, KVM_SET_GSI_ROUTING, rt);
	free(rt);
	return r < 0 ? -errno : 0;
}

static void msi_entry(struct kvm_irq_routing_entry *e, unsigned gsi, uint64_t addr, uint32_t data)
{
	*e = (struct kvm_irq_routing_entry){ .gsi = gsi, .type = KVM_IRQ_ROUTING_MSI,
		.u.msi = { .address_lo = (uint32_t)addr, .address_hi = (uint32_t)(addr >> 32), .data = data } };
}

static int kvm_irq_msi_route_add(struct irqchip *c, uint64_t addr, uint32_t data, unsigned *gsi)
{
	struct kvm_irq_priv *p = c->priv;
	int r = -ENOSPC;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = MSI_GSI_BASE; i < MSI_GSI_MAX; i++)
		if (!p->used[i]) {
			p->used[i] = true;
			msi_entry(&p->msi[i], i, addr, data);
			r = kvm_irq_commit(c);
			if (r < 0)
				p->used[i] = false;
			else
				*gsi = i;
			break;
		}
	pthread_mutex_unlock(&p->lock);
	return r;
}

static int kvm_irq_msi_route_set(struct irqchip *c, unsigned gsi, uint64_t addr, uint32_t data)
{
	struct kvm_irq_priv *p = c->priv;
	if (gsi >= MSI_GSI_MAX || gsi < MSI_GSI_BASE)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	int r = -ENOENT;
	if (p->used[gsi]) {
		msi_entry(&p->msi[gsi], gsi, addr, data);
		r = kvm_irq_commit(c);
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

static void kvm_irq_msi_route_del(struct irqchip *c, unsigned gsi)
{
	struct kvm_irq_priv *p = c->priv;
	if (gsi >= MSI_GSI_MAX || gsi < MSI_GSI_BASE)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->used[gsi]) {
		p->used[gsi] = false;
		kvm_irq_commit(c);
	}
	pthread_mutex_unlock(&p->lock);
}

static int kvm_irq_irqfd(struct irqchip *c, unsigned gsi, int efd, bool assign)
{
	struct kvm_irqfd f = { .fd = (uint32_t)efd, .gsi = gsi, .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN };
	return ioctl(c->vm_fd, KVM_IRQFD, &f) < 0 ? -errno : 0;
}

static void kvm_irq_destroy(struct irqchip *c)
{
	struct kvm_irq_priv *p = c->priv;
	if (p) {
		pthread_mutex_destroy(&p->lock);
		free(p);
	}
	c->priv = NULL;
}

static const struct irqchip_ops kvm_irqchip_ops = {
	.name = "kvm-in-kernel",
	.set_level = kvm_irq_set_level,
	.signal_msi = kvm_irq_signal_msi,
	.msi_route_add = kvm_irq_msi_route_add,
	.msi_route_set = kvm_irq_msi_route_set,
	.msi_route_del = kvm_irq_msi_route_del,
	.irqfd = kvm_irq_irqfd,
	.destroy = kvm_irq_destroy,
};

/* ISA IRQ n -> PIC pin n and IOAPIC pin n, except that IRQ0 (the PIT) goes to
 * IOAPIC pin 2, as the MADT's interrupt source override and the MP table say (and
 * as on real PCs); IRQ2 is the PIC cascade. IOAPIC pins 16-23 are GSIs 16-23. */
static void kvm_irq_isa_routes(struct kvm_irq_priv *p)
{
	unsigned n = 0;
	for (unsigned irq = 0; irq < 16; irq++) {
		if (irq == 2)
			continue;
		p->isa[n++] = (struct kvm_irq_routing_entry){
			.gsi = irq, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, .pin = irq % 8 } };
	}
	for (unsigned gsi = 0; gsi < 24; gsi++) {
		if (gsi == 2)
			continue;
		p->isa[n++] = (struct kvm_irq_routing_entry){
			.gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi == 0 ? 2 : gsi } };
	}
	p->nisa = n;
}

int irqchip_kvm_create(struct irqchip *c, int vm_fd)
{
	memset(c, 0, sizeof(*c));
	c->vm_fd = vm_fd;
	c->ops = &kvm_irqchip_ops;
	if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return err_set(errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	struct kvm_irq_priv *p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(ENOMEM, "out of memory");
	pthread_mutex_init(&p->lock, NULL);
	c->priv = p;
	kvm_irq_isa_routes(p);
	return 0;
}

int irqchip_kvm_finish(struct irqchip *c)
{
	struct kvm_irq_priv *p = c->priv;
	/* Under the lock: MSI routes may be added meanwhile (a restore loading
	 * devices on another thread); every commit sends the whole table. */
	pthread_mutex_lock(&p->lock);
	int r = kvm_irq_commit(c);
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		return err_set(-r, "KVM_SET_GSI_ROUTING: %s", strerror(-r));
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(c->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return err_set(errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}
