/* Service bus: VM exits, device requests and completions, interrupts and
 * lifecycle changes are published as typed events; services subscribe with a
 * type mask and an optional filter. docs/bus.md has the catalogue, the order
 * and the guarantees; in short:
 *
 *  - Publishing an event type nobody subscribed to costs one relaxed load and a
 *    branch (bus_wants); publishers build the payload only after it.
 *  - Subscribers come in three kinds, called in this order for every event:
 *    gates (synchronous, by priority, may DENY or REWRITE the action),
 *    observers (synchronous, in subscription order), async subscribers (the
 *    event is copied into a bounded per-subscriber ring; a bus thread or the
 *    subscriber's own thread drains it; a full ring drops and counts, the
 *    publisher never waits).
 *  - Subscribe and unsubscribe are safe at any time from any thread that is not
 *    inside a bus callback. When bus_unsubscribe returns, the callback is not
 *    running and will not be called again. */
#ifndef VMSVC_BUS_H
#define VMSVC_BUS_H
#include <pthread.h>
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
	BUS_EV_VM_SNAPSHOTTED, /* a snapshot or suspend image of the paused VM was written (u.snapshot) */
	BUS_EV_BLK_REQUEST,    /* virtio-blk request accepted, before the disk is touched (u.blk); gate-able */
	BUS_EV_BLK_DONE,       /* virtio-blk request completed (u.blk, status set) */
	BUS_EV_NET_TX,         /* virtio-net: guest frame about to be sent (u.net); gate-able */
	BUS_EV_NET_RX,         /* virtio-net: frame delivered to the guest (u.net) */
	BUS_EV_IRQ_MSIX,       /* MSI-X vector signalled (irqfd or direct MSI) (u.msix) */
	BUS_EV_IRQ_LINE,       /* legacy (ISA/IOAPIC) interrupt line raised (u.line) */
	BUS_EV_BUS_LOST,       /* async only: events dropped since the last delivery (u.lost) */
	BUS_EV__COUNT
};
#define BUS_MASK(t) (1ULL << (t))
#define BUS_MASK_ALL_EXITS ((1ULL << (BUS_EV_EXIT_OTHER + 1)) - 1)
#define BUS_MASK_ALL ((1ULL << BUS_EV__COUNT) - 1)
_Static_assert(BUS_EV__COUNT <= 64, "bus masks are 64-bit");

enum bus_blk_op { BUS_BLK_READ, BUS_BLK_WRITE, BUS_BLK_FLUSH, BUS_BLK_DISCARD, BUS_BLK_WRITE_ZEROES };

/* What the gates decided (also the field bus_event.verdict that later
 * subscribers see). */
enum bus_verdict {
	BUS_ALLOW = 0,     /* go on unchanged */
	BUS_REWRITTEN = 1, /* go on with the payload as the gate changed it */
	BUS_DENY = 2,      /* do not perform the action (each event type says what that means) */
};

struct bus_event {
	enum bus_event_type type;
	int vcpu;              /* vCPU index, -1 for VM-wide and device events */
	uint32_t exit_reason;  /* KVM_EXIT_* for exit events */
	uint8_t verdict;       /* set by the bus: the gates' decision (enum bus_verdict) */
	union {
		struct { uint16_t port; uint8_t size; bool write; uint32_t count; } io;
		struct { uint64_t gpa; uint8_t size; bool write; } mmio;
		/* mnemonic: a static string (valid forever, also in async copies). */
		struct { uint64_t rip; const char *mnemonic; uint8_t len; uint8_t bytes[15]; } emul;
		struct { int reason; int status; } end;   /* enum vm_end_reason, exit status */
		/* dev: the NIC's index among the VM's --net devices (0 = first); the
		 * resulting mode after the command (or after a device reset). I/O thread. */
		struct { int dev; bool promisc, allmulti; } net_rxmode;
		/* dev: index among the VM's --disk devices; op: enum bus_blk_op; sector and
		 * bytes of the request (discard/write-zeroes: first segment's sector, all
		 * segments' bytes); status: VIRTIO_BLK_S_* (BLK_DONE). I/O thread.
		 * Gates on BLK_REQUEST: DENY completes the request with VIRTIO_BLK_S_IOERR
		 * without touching the disk; REWRITTEN read/write requests go to the
		 * (range-checked again) rewritten sector. */
		struct { int dev; uint8_t op; uint8_t status; uint64_t sector; uint64_t bytes; } blk;
		/* dev: the NIC's index; len: frame bytes without the virtio-net header.
		 * Gates on NET_TX: DENY drops the frame (the guest sees it sent). */
		struct { int dev; uint32_t len; } net;
		/* bdf: PCI bus/device/function of the signalling function. Any thread. */
		struct { uint16_t bdf; uint16_t vector; uint32_t data; uint64_t addr; } msix;
		struct { unsigned gsi; } line;
		struct { bool stop; bool suspend; } snapshot;   /* --stop given / a suspend image */
		struct { uint64_t count; } lost;
	} u;
};

typedef void (*bus_fn)(void *opaque, const struct bus_event *ev);
typedef bool (*bus_filter_fn)(void *opaque, const struct bus_event *ev);
/* A gate may change *ev (then it returns BUS_REWRITTEN). */
typedef enum bus_verdict (*bus_gate_fn)(void *opaque, struct bus_event *ev);

#define BUS_MAX_SUBSCRIBERS 32
#define BUS_READER_SLOTS 16       /* publisher counters, one cache line each */
#define BUS_ASYNC_RING_DEFAULT 1024u
#define BUS_ASYNC_RING_MAX 65536u

enum bus_kind { BUS_OBSERVER = 0, BUS_GATE, BUS_ASYNC };

struct bus_sub_config {
	enum bus_kind kind;
	uint64_t mask;          /* event types (BUS_MASK) */
	bus_filter_fn filter;   /* NULL = every event in mask (not called for BUS_EV_BUS_LOST) */
	bus_fn fn;              /* observers and async subscribers */
	bus_gate_fn gate;       /* gates */
	void *opaque;
	int priority;           /* gates: lower runs first; equal ones in subscription order */
	unsigned ring_size;     /* async: events queued (rounded up to a power of two; 0 = default) */
	bool own_thread;        /* async: the subscriber drains with bus_async_drain on its own
	                         * thread (waiting on bus_async_fd); else the bus thread does */
};

struct bus_table;
struct bus_reader_slot {
	uint64_t n;
	char pad[64 - sizeof(uint64_t)];
};

struct bus {
	uint64_t mask;          /* union of all subscriber masks: the fast-path test */
	struct bus_table *table;     /* current subscribers (immutable; swapped under lock) */
	struct bus_table *retired;   /* replaced tables not yet freed (under lock) */
	unsigned epoch;              /* which reader counters new publishers use */
	struct bus_reader_slot readers[2][BUS_READER_SLOTS];
	pthread_mutex_t lock;        /* subscribe/unsubscribe; initialised by bus_init */
	int next_id;
	/* The bus thread (started with the first async subscriber it serves). */
	pthread_t thread;
	bool thread_started;
	int thread_stop;
	struct bus_wake *thread_wake;
};

void bus_init(struct bus *b);
/* Unsubscribes everything, stops the bus thread. The bus can be reused after bus_init. */
void bus_cleanup(struct bus *b);
/* Returns a subscription id > 0, or -EINVAL / -ENOSPC / -ENOMEM / -EDEADLK
 * (called from inside a bus callback) with err_set. */
int bus_subscribe_cfg(struct bus *b, const struct bus_sub_config *cfg);
/* An observer (synchronous, publishing thread). */
int bus_subscribe(struct bus *b, uint64_t mask, bus_filter_fn filter, bus_fn fn, void *opaque);
int bus_subscribe_gate(struct bus *b, uint64_t mask, int priority, bus_gate_fn gate, void *opaque);
/* Drained by the bus thread. */
int bus_subscribe_async(struct bus *b, uint64_t mask, bus_filter_fn filter, bus_fn fn, void *opaque,
			unsigned ring_size);
/* After it returns the subscriber's callbacks are not running and are never
 * called again; an async subscriber's queued events are discarded. Unknown or
 * stale ids are ignored. Must not be called from inside a bus callback. */
void bus_unsubscribe(struct bus *b, int id);
/* Change a subscription's mask (events already being delivered may still
 * arrive once). 0 on success, -ENOENT. */
int bus_set_mask(struct bus *b, int id, uint64_t mask);
/* Own-thread async subscribers: an eventfd that becomes readable when events
 * are queued after a drain found the ring empty (read it, then drain; the bus
 * closes it in bus_unsubscribe), and the drain itself: delivers up to max
 * queued events (0 = all) to fn on the calling thread. Returns the number
 * delivered or -ENOENT. */
int bus_async_fd(struct bus *b, int id);
int bus_async_drain(struct bus *b, int id, unsigned max);
/* Events an async subscriber lost to a full ring so far (-ENOENT: no such id). */
int64_t bus_async_lost(struct bus *b, int id);

/* Deliver ev to gates, observers, async subscribers; returns the verdict
 * (also in ev->verdict). */
enum bus_verdict bus_dispatch(struct bus *b, struct bus_event *ev);

static inline bool bus_wants(const struct bus *b, enum bus_event_type t)
{
	return (__atomic_load_n(&b->mask, __ATOMIC_RELAXED) & BUS_MASK(t)) != 0;
}
static inline enum bus_verdict bus_publish(struct bus *b, struct bus_event *ev)
{
	if (!bus_wants(b, ev->type))
		return BUS_ALLOW;
	return bus_dispatch(b, ev);
}
const char *bus_event_name(enum bus_event_type t);

#endif
