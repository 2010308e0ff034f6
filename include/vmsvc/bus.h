/* Service bus: every VM exit and device event is published as a typed event;
 * services subscribe with a type mask (and an optional predicate). Publishing
 * costs one load and a branch when nobody subscribed to that type.
 * Subscriptions are made while the VM is not running (or from its own threads
 * before vCPUs start); delivery is synchronous, in subscription order, on the
 * publishing thread. */
#ifndef VMSVC_BUS_H
#define VMSVC_BUS_H
#include <stdbool.h>
#include <stdint.h>

enum bus_event_type {
	BUS_EV_EXIT_IO,        /* port I/O exit */
	BUS_EV_EXIT_MMIO,      /* MMIO exit */
	BUS_EV_EXIT_HLT,
	BUS_EV_EXIT_SHUTDOWN,  /* triple fault */
	BUS_EV_EXIT_INTERNAL,  /* KVM_EXIT_INTERNAL_ERROR (incl. emulation failure) */
	BUS_EV_EXIT_FAIL_ENTRY,
	BUS_EV_EXIT_SYSTEM,    /* KVM_EXIT_SYSTEM_EVENT */
	BUS_EV_EXIT_INTR,      /* KVM_RUN interrupted by a signal (EINTR / KVM_EXIT_INTR) */
	BUS_EV_EXIT_OTHER,     /* any other exit reason */
	BUS_EV_EMUL_ASSIST,    /* the VMM completed an instruction KVM could not emulate */
	BUS_EV_VM_STARTED,
	BUS_EV_VM_STOPPED,
	BUS_EV_VM_PAUSED,
	BUS_EV_VM_RESUMED,
	BUS_EV_GUEST_END,      /* guest asked to end: poweroff, reset, debug-exit */
	BUS_EV_NET_RXMODE,     /* virtio-net: the guest set promiscuous/all-multicast (u.net_rxmode) */
	BUS_EV__COUNT
};
#define BUS_MASK(t) (1ULL << (t))
#define BUS_MASK_ALL_EXITS ((1ULL << (BUS_EV_EXIT_OTHER + 1)) - 1)

struct bus_event {
	enum bus_event_type type;
	int vcpu;              /* vCPU index, -1 for VM-wide events */
	uint32_t exit_reason;  /* KVM_EXIT_* for exit events */
	union {
		struct { uint16_t port; uint8_t size; bool write; uint32_t count; } io;
		struct { uint64_t gpa; uint8_t size; bool write; } mmio;
		struct { uint64_t rip; const char *mnemonic; uint8_t len; uint8_t bytes[15]; } emul;
		struct { int reason; int status; } end;   /* enum vm_end_reason, exit status */
		/* dev: the NIC's index among the VM's --net devices (0 = first); the
		 * resulting mode after the command (or after a device reset). I/O thread. */
		struct { int dev; bool promisc, allmulti; } net_rxmode;
	} u;
};

typedef void (*bus_fn)(void *opaque, const struct bus_event *ev);
typedef bool (*bus_filter_fn)(void *opaque, const struct bus_event *ev);

#define BUS_MAX_SUBSCRIBERS 32

struct bus_subscriber {
	uint64_t mask;
	bus_filter_fn filter;   /* NULL = accept every event in mask */
	bus_fn fn;
	void *opaque;
};

struct bus {
	uint64_t mask;          /* union of all subscriber masks: the fast-path test */
	unsigned nsubs;
	struct bus_subscriber subs[BUS_MAX_SUBSCRIBERS];
};

void bus_init(struct bus *b);
/* Returns a subscription id >= 0 or -ENOSPC/-EINVAL. */
int bus_subscribe(struct bus *b, uint64_t mask, bus_filter_fn filter, bus_fn fn, void *opaque);
void bus_unsubscribe(struct bus *b, int id);
void bus_dispatch(const struct bus *b, const struct bus_event *ev);

static inline bool bus_wants(const struct bus *b, enum bus_event_type t)
{
	return (__atomic_load_n(&b->mask, __ATOMIC_RELAXED) & BUS_MASK(t)) != 0;
}
static inline void bus_publish(const struct bus *b, const struct bus_event *ev)
{
	if (bus_wants(b, ev->type))
		bus_dispatch(b, ev);
}
const char *bus_event_name(enum bus_event_type t);

#endif
