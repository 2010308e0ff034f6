/* Service bus: see include/vmsvc/bus.h. */
#include <errno.h>
#include <string.h>
#include <vmsvc/bus.h>

void bus_init(struct bus *b) { memset(b, 0, sizeof(*b)); }

static void bus_recompute_mask(struct bus *b)
{
	uint64_t mask = 0;
	for (unsigned i = 0; i < b->nsubs; i++)
		if (b->subs[i].fn)
			mask |= b->subs[i].mask;
	__atomic_store_n(&b->mask, mask, __ATOMIC_RELEASE);
}

int bus_subscribe(struct bus *b, uint64_t mask, bus_filter_fn filter, bus_fn fn, void *opaque)
{
	if (!fn || !mask)
		return -EINVAL;
	unsigned slot = b->nsubs;
	for (unsigned i = 0; i < b->nsubs; i++)
		if (!b->subs[i].fn) {
			slot = i;
			break;
		}
	if (slot == BUS_MAX_SUBSCRIBERS)
		return -ENOSPC;
	b->subs[slot] = (struct bus_subscriber){ .mask = mask, .filter = filter, .fn = fn, .opaque = opaque };
	if (slot == b->nsubs)
		b->nsubs++;
	bus_recompute_mask(b);
	return (int)slot;
}

void bus_unsubscribe(struct bus *b, int id)
{
	if (id < 0 || (unsigned)id >= b->nsubs)
		return;
	b->subs[id].fn = NULL;
	b->subs[id].mask = 0;
	bus_recompute_mask(b);
}

void bus_dispatch(const struct bus *b, const struct bus_event *ev)
{
	uint64_t bit = BUS_MASK(ev->type);
	for (unsigned i = 0; i < b->nsubs; i++) {
		const struct bus_subscriber *s = &b->subs[i];
		if (!(s->mask & bit) || !s->fn)
			continue;
		if (s->filter && !s->filter(s->opaque, ev))
			continue;
		s->fn(s->opaque, ev);
	}
}

const char *bus_event_name(enum bus_event_type t)
{
	static const char *const names[BUS_EV__COUNT] = {
		[BUS_EV_EXIT_IO] = "exit.io",
		[BUS_EV_EXIT_MMIO] = "exit.mmio",
		[BUS_EV_EXIT_HLT] = "exit.hlt",
		[BUS_EV_EXIT_SHUTDOWN] = "exit.shutdown",
		[BUS_EV_EXIT_INTERNAL] = "exit.internal-error",
		[BUS_EV_EXIT_FAIL_ENTRY] = "exit.fail-entry",
		[BUS_EV_EXIT_SYSTEM] = "exit.system-event",
		[BUS_EV_EXIT_INTR] = "exit.intr",
		[BUS_EV_EXIT_OTHER] = "exit.other",
		[BUS_EV_EMUL_ASSIST] = "emul.assist",
		[BUS_EV_VM_STARTED] = "vm.started",
		[BUS_EV_VM_STOPPED] = "vm.stopped",
		[BUS_EV_VM_PAUSED] = "vm.paused",
		[BUS_EV_VM_RESUMED] = "vm.resumed",
		[BUS_EV_GUEST_END] = "guest.end",
		[BUS_EV_NET_RXMODE] = "net.rxmode",
	};
	return (unsigned)t < BUS_EV__COUNT && names[t] ? names[t] : "unknown";
}
