/* Service bus: see include/vmsvc/bus.h and docs/bus.md.
 *
 * Concurrency. The subscriber list is an immutable table; subscribe and
 * unsubscribe build a new one under b->lock and swap the pointer. A publisher
 * (or a thread draining an async ring) brackets its use of a table with a
 * reader count: it increments one of two counter sets (chosen by b->epoch;
 * within a set, one cache line per thread slot so vCPUs do not share a line),
 * loads the table, delivers, decrements. A writer, after swapping, flips the
 * epoch and waits until the old set drains, twice, so both sets have been
 * seen empty after the swap: every reader that could still hold the old table
 * has left it. Only then is the old table (and a removed subscriber) freed —
 * which is what makes "after bus_unsubscribe returns, the callback is neither
 * running nor called again" hold. All counter and table accesses are seq_cst,
 * so a reader either is seen by the writer or sees the new table.
 *
 * Async rings are bounded multi-producer queues with a sequence number per
 * cell (a publisher claims a cell with one CAS and never waits; a full ring
 * drops the event and counts it). Consumers sleep on an eventfd and publishers
 * write it only when the consumer said it is going to sleep. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <vmsvc/bus.h>
#include <vmsvc/err.h>

struct bus_wake {
	int fd;        /* eventfd */
	int sleeping;  /* the consumer is (about to be) blocked on fd */
};

struct bus_cell {
	uint64_t seq;
	struct bus_event ev;
};

struct bus_sub {
	int id;
	enum bus_kind kind;
	uint64_t mask;          /* atomic: bus_set_mask changes it in place */
	bus_filter_fn filter;
	bus_fn fn;
	bus_gate_fn gate;
	void *opaque;
	int priority;
	/* async */
	bool own_thread;
	struct bus_cell *ring;
	uint64_t ring_mask;
	uint64_t tail;          /* producers (atomic) */
	uint64_t head;          /* consumer */
	uint64_t lost;          /* atomic */
	uint64_t lost_reported; /* consumer */
	struct bus_wake *wake;  /* &own_wake or the bus thread's */
	struct bus_wake own_wake;
	pthread_mutex_t drain_lock;   /* own_thread: one drainer at a time */
};

/* Gates (by priority, then id), observers (by id), async subscribers (by id). */
struct bus_table {
	struct bus_table *retired_next;   /* replaced tables waiting for a grace period */
	unsigned n;
	struct bus_sub *subs[BUS_MAX_SUBSCRIBERS];
};

/* Per-thread state: the reader slot, and how deep inside bus callbacks this
 * thread is (subscribe/unsubscribe from a callback would wait for itself). */
static __thread int tls_slot = -1;
static __thread int tls_in_callback;
static unsigned next_slot;

static unsigned my_slot(void)
{
	if (tls_slot < 0)
		tls_slot = (int)(__atomic_fetch_add(&next_slot, 1, __ATOMIC_RELAXED) % BUS_READER_SLOTS);
	return (unsigned)tls_slot;
}

struct reader {
	unsigned epoch, slot;
};

static struct bus_table *reader_enter(struct bus *b, struct reader *r)
{
	r->slot = my_slot();
	r->epoch = __atomic_load_n(&b->epoch, __ATOMIC_SEQ_CST) & 1;
	__atomic_add_fetch(&b->readers[r->epoch][r->slot].n, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&b->table, __ATOMIC_SEQ_CST);
}

static void reader_exit(struct bus *b, const struct reader *r)
{
	__atomic_sub_fetch(&b->readers[r->epoch][r->slot].n, 1, __ATOMIC_RELEASE);
}

static void wait_readers(struct bus *b, unsigned e)
{
	for (unsigned spins = 0;; spins++) {
		uint64_t sum = 0;
		for (unsigned s = 0; s < BUS_READER_SLOTS; s++)
			sum += __atomic_load_n(&b->readers[e][s].n, __ATOMIC_SEQ_CST);
		if (!sum)
			return;
		if (spins < 64) {
			sched_yield();
		} else {
			struct timespec ts = { 0, 50000 };
			nanosleep(&ts, NULL);
		}
	}
}

/* b->lock held; the new table is already published. */
static void synchronize(struct bus *b)
{
	for (int i = 0; i < 2; i++) {
		unsigned e = __atomic_load_n(&b->epoch, __ATOMIC_RELAXED) & 1;
		__atomic_store_n(&b->epoch, e ^ 1, __ATOMIC_SEQ_CST);
		wait_readers(b, e);
	}
}

static void wake_consumer(struct bus_wake *w)
{
	/* Pairs with the consumer's store of sleeping before its last look at the ring. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&w->sleeping, __ATOMIC_RELAXED) && __atomic_exchange_n(&w->sleeping, 0, __ATOMIC_ACQ_REL)) {
		uint64_t one = 1;
		ssize_t n = write(w->fd, &one, sizeof(one));   /* EAGAIN: counter full, already readable */
		(void)n;
	}
}

static void async_push(struct bus_sub *s, const struct bus_event *ev)
{
	uint64_t pos = __atomic_load_n(&s->tail, __ATOMIC_RELAXED);
	struct bus_cell *c;
	for (;;) {
		c = &s->ring[pos & s->ring_mask];
		uint64_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
		int64_t dif = (int64_t)(seq - pos);
		if (dif == 0) {
			if (__atomic_compare_exchange_n(&s->tail, &pos, pos + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				break;
		} else if (dif < 0) {
			__atomic_add_fetch(&s->lost, 1, __ATOMIC_RELAXED);
			wake_consumer(s->wake);
			return;
		} else {
			pos = __atomic_load_n(&s->tail, __ATOMIC_RELAXED);
		}
	}
	c->ev = *ev;
	__atomic_store_n(&c->seq, pos + 1, __ATOMIC_RELEASE);
	wake_consumer(s->wake);
}

static bool async_pending(struct bus_sub *s)
{
	struct bus_cell *c = &s->ring[s->head & s->ring_mask];
	return __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) == s->head + 1 ||
	       __atomic_load_n(&s->lost, __ATOMIC_RELAXED) != s->lost_reported;
}

/* Consumer side (one thread at a time, inside a reader section). */
static unsigned async_drain(struct bus_sub *s, unsigned max)
{
	unsigned n = 0;
	uint64_t lost = __atomic_load_n(&s->lost, __ATOMIC_RELAXED);
	if (lost != s->lost_reported) {
		struct bus_event ev = { .type = BUS_EV_BUS_LOST, .vcpu = -1, .u.lost.count = lost - s->lost_reported };
		s->lost_reported = lost;
		s->fn(s->opaque, &ev);
		n++;
	}
	while (!max || n < max) {
		struct bus_cell *c = &s->ring[s->head & s->ring_mask];
		if (__atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) != s->head + 1)
			break;
		struct bus_event ev = c->ev;
		__atomic_store_n(&c->seq, s->head + s->ring_mask + 1, __ATOMIC_RELEASE);
		s->head++;
		s->fn(s->opaque, &ev);
		n++;
	}
	return n;
}

enum bus_verdict bus_dispatch(struct bus *b, struct bus_event *ev)
{
	struct reader r;
	struct bus_table *t = reader_enter(b, &r);
	ev->verdict = BUS_ALLOW;
	if (t && (unsigned)ev->type < BUS_EV__COUNT) {
		uint64_t bit = BUS_MASK(ev->type);
		tls_in_callback++;
		for (unsigned i = 0; i < t->n; i++) {
			struct bus_sub *s = t->subs[i];
			if (!(__atomic_load_n(&s->mask, __ATOMIC_RELAXED) & bit))
				continue;
			if (s->kind == BUS_GATE && ev->verdict == BUS_DENY)
				continue;   /* decided: later gates are not asked */
			if (s->filter && !s->filter(s->opaque, ev))
				continue;
			switch (s->kind) {
			case BUS_GATE: {
				enum bus_verdict v = s->gate(s->opaque, ev);
				if (v == BUS_DENY || (v == BUS_REWRITTEN && ev->verdict == BUS_ALLOW))
					ev->verdict = (uint8_t)v;
				break;
			}
			case BUS_OBSERVER:
				s->fn(s->opaque, ev);
				break;
			case BUS_ASYNC:
				async_push(s, ev);
				break;
			}
		}
		tls_in_callback--;
	}
	reader_exit(b, &r);
	return (enum bus_verdict)ev->verdict;
}

/* ---- the bus thread: drains async subscribers that have no thread of their own ---- */

static void *bus_thread(void *arg)
{
	struct bus *b = arg;
	struct bus_wake *w = b->thread_wake;
	while (!__atomic_load_n(&b->thread_stop, __ATOMIC_ACQUIRE)) {
		struct reader r;
		struct bus_table *t = reader_enter(b, &r);
		unsigned got = 0;
		tls_in_callback++;
		for (unsigned i = 0; t && i < t->n; i++)
			if (t->subs[i]->kind == BUS_ASYNC && !t->subs[i]->own_thread)
				got += async_drain(t->subs[i], 256);
		tls_in_callback--;
		reader_exit(b, &r);
		if (got)
			continue;
		__atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
		bool pending = false;
		t = reader_enter(b, &r);
		for (unsigned i = 0; t && i < t->n && !pending; i++)
			if (t->subs[i]->kind == BUS_ASYNC && !t->subs[i]->own_thread)
				pending = async_pending(t->subs[i]);
		reader_exit(b, &r);
		if (pending || __atomic_load_n(&b->thread_stop, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
			continue;
		}
		struct pollfd p = { .fd = w->fd, .events = POLLIN };
		if (poll(&p, 1, -1) > 0) {
			uint64_t v;
			ssize_t n = read(w->fd, &v, sizeof(v));
			(void)n;
		}
	}
	return NULL;
}

/* b->lock held. */
static int start_thread(struct bus *b)
{
	if (b->thread_started)
		return 0;
	struct bus_wake *w = calloc(1, sizeof(*w));
	if (!w)
		return err_set(ENOMEM, "bus: out of memory");
	w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->fd < 0) {
		int e = errno;
		free(w);
		return err_set(e, "bus: eventfd: %s", strerror(e));
	}
	b->thread_wake = w;
	b->thread_stop = 0;
	/* Process signals belong to the CLI's signal thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&b->thread, NULL, bus_thread, b);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		close(w->fd);
		free(w);
		b->thread_wake = NULL;
		return err_set(r, "bus thread: %s", strerror(r));
	}
	pthread_setname_np(b->thread, "bus");
	b->thread_started = true;
	return 0;
}

/* ---- subscriptions ---- */

void bus_init(struct bus *b)
{
	memset(b, 0, sizeof(*b));
	pthread_mutex_init(&b->lock, NULL);
}

static void sub_free(struct bus_sub *s)
{
	if (!s)
		return;
	if (s->kind == BUS_ASYNC) {
		free(s->ring);
		if (s->own_thread) {
			if (s->own_wake.fd >= 0)
				close(s->own_wake.fd);
			pthread_mutex_destroy(&s->drain_lock);
		}
	}
	free(s);
}

/* b->lock held, after a grace period. */
static void free_retired(struct bus *b)
{
	while (b->retired) {
		struct bus_table *t = b->retired;
		b->retired = t->retired_next;
		free(t);
	}
}

static uint64_t table_mask(const struct bus_table *t)
{
	uint64_t m = 0;
	for (unsigned i = 0; t && i < t->n; i++)
		m |= __atomic_load_n(&t->subs[i]->mask, __ATOMIC_RELAXED);
	return m;
}

static unsigned rank(const struct bus_sub *s)
{
	return s->kind == BUS_GATE ? 0 : s->kind == BUS_OBSERVER ? 1 : 2;
}

/* Does a run before b in delivery order? */
static bool before(const struct bus_sub *a, const struct bus_sub *b)
{
	if (rank(a) != rank(b))
		return rank(a) < rank(b);
	if (a->kind == BUS_GATE && a->priority != b->priority)
		return a->priority < b->priority;
	return a->id < b->id;
}

static struct bus_sub *sub_new(const struct bus_sub_config *cfg)
{
	struct bus_sub *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->kind = cfg->kind;
	s->mask = cfg->mask;
	s->filter = cfg->filter;
	s->fn = cfg->fn;
	s->gate = cfg->gate;
	s->opaque = cfg->opaque;
	s->priority = cfg->priority;
	s->own_wake.fd = -1;
	if (cfg->kind != BUS_ASYNC)
		return s;
	uint64_t size = 2;
	unsigned want = cfg->ring_size ? cfg->ring_size : BUS_ASYNC_RING_DEFAULT;
	while (size < want)
		size <<= 1;
	s->ring = calloc(size, sizeof(*s->ring));
	if (!s->ring) {
		free(s);
		return NULL;
	}
	for (uint64_t i = 0; i < size; i++)
		s->ring[i].seq = i;
	s->ring_mask = size - 1;
	s->own_thread = cfg->own_thread;
	if (s->own_thread) {
		s->own_wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		pthread_mutex_init(&s->drain_lock, NULL);
		s->wake = &s->own_wake;
		if (s->own_wake.fd < 0) {
			sub_free(s);
			return NULL;
		}
	}
	return s;
}

int bus_subscribe_cfg(struct bus *b, const struct bus_sub_config *cfg)
{
	if (!cfg || !(cfg->mask & BUS_MASK_ALL) || (cfg->mask & ~BUS_MASK_ALL) ||
	    (cfg->kind == BUS_GATE ? !cfg->gate : !cfg->fn) || (unsigned)cfg->kind > BUS_ASYNC ||
	    (cfg->kind == BUS_ASYNC && cfg->ring_size > BUS_ASYNC_RING_MAX))
		return err_set(EINVAL, "bus: invalid subscription");
	if (tls_in_callback)
		return err_set(EDEADLK, "bus: subscribe from inside a bus callback");
	struct bus_sub *s = sub_new(cfg);
	if (!s)
		return err_set(ENOMEM, "bus: cannot allocate a subscriber");
	pthread_mutex_lock(&b->lock);
	int r;
	struct bus_table *old = b->table, *t = NULL;
	if (old && old->n >= BUS_MAX_SUBSCRIBERS) {
		r = err_set(ENOSPC, "bus: more than %d subscribers", BUS_MAX_SUBSCRIBERS);
		goto fail;
	}
	if (s->kind == BUS_ASYNC && !s->own_thread) {
		if ((r = start_thread(b)) < 0)
			goto fail;
		s->wake = b->thread_wake;
	}
	if (!(t = calloc(1, sizeof(*t)))) {
		r = err_set(ENOMEM, "bus: out of memory");
		goto fail;
	}
	if (++b->next_id <= 0)
		b->next_id = 1;
	s->id = b->next_id;
	unsigned k = 0;
	bool placed = false;
	for (unsigned i = 0; old && i < old->n; i++) {
		if (!placed && before(s, old->subs[i])) {
			t->subs[k++] = s;
			placed = true;
		}
		t->subs[k++] = old->subs[i];
	}
	if (!placed)
		t->subs[k++] = s;
	t->n = k;
	__atomic_store_n(&b->table, t, __ATOMIC_SEQ_CST);
	__atomic_store_n(&b->mask, table_mask(t), __ATOMIC_SEQ_CST);
	/* The old table holds only subscribers that stay: no need to wait for
	 * its readers now; it is freed after the next grace period. */
	if (old) {
		old->retired_next = b->retired;
		b->retired = old;
	}
	r = s->id;
	pthread_mutex_unlock(&b->lock);
	return r;
fail:
	pthread_mutex_unlock(&b->lock);
	sub_free(s);
	return r;
}

int bus_subscribe(struct bus *b, uint64_t mask, bus_filter_fn filter, bus_fn fn, void *opaque)
{
	struct bus_sub_config c = { .kind = BUS_OBSERVER, .mask = mask, .filter = filter, .fn = fn, .opaque = opaque };
	return bus_subscribe_cfg(b, &c);
}

int bus_subscribe_gate(struct bus *b, uint64_t mask, int priority, bus_gate_fn gate, void *opaque)
{
	struct bus_sub_config c = { .kind = BUS_GATE, .mask = mask, .gate = gate, .opaque = opaque, .priority = priority };
	return bus_subscribe_cfg(b, &c);
}

int bus_subscribe_async(struct bus *b, uint64_t mask, bus_filter_fn filter, bus_fn fn, void *opaque,
			unsigned ring_size)
{
	struct bus_sub_config c = { .kind = BUS_ASYNC, .mask = mask, .filter = filter, .fn = fn, .opaque = opaque,
				    .ring_size = ring_size };
	return bus_subscribe_cfg(b, &c);
}

/* b->lock held. */
static struct bus_sub *find_locked(struct bus *b, int id)
{
	struct bus_table *t = b->table;
	for (unsigned i = 0; t && i < t->n; i++)
		if (t->subs[i]->id == id)
			return t->subs[i];
	return NULL;
}

void bus_unsubscribe(struct bus *b, int id)
{
	if (id <= 0)
		return;
	if (tls_in_callback) {
		/* Waiting for readers would wait for ourselves. */
		log_warn("bus: unsubscribe of %d from inside a bus callback ignored", id);
		return;
	}
	pthread_mutex_lock(&b->lock);
	struct bus_table *old = b->table;
	struct bus_sub *s = find_locked(b, id);
	if (!s) {
		pthread_mutex_unlock(&b->lock);
		return;
	}
	struct bus_table *t = NULL;
	if (old->n > 1) {
		t = calloc(1, sizeof(*t));
		if (!t) {
			/* Cannot build the smaller table: silence the subscriber instead and
			 * leave it in place (it is freed by bus_destroy). */
			__atomic_store_n(&s->mask, 0, __ATOMIC_SEQ_CST);
			__atomic_store_n(&b->mask, table_mask(old), __ATOMIC_SEQ_CST);
			synchronize(b);
			pthread_mutex_unlock(&b->lock);
			return;
		}
		for (unsigned i = 0; i < old->n; i++)
			if (old->subs[i] != s)
				t->subs[t->n++] = old->subs[i];
	}
	__atomic_store_n(&b->mask, table_mask(t), __ATOMIC_SEQ_CST);
	__atomic_store_n(&b->table, t, __ATOMIC_SEQ_CST);
	synchronize(b);
	free(old);
	free_retired(b);
	sub_free(s);
	pthread_mutex_unlock(&b->lock);
}

int bus_set_mask(struct bus *b, int id, uint64_t mask)
{
	if (tls_in_callback)
		return err_set(EDEADLK, "bus: set_mask from inside a bus callback");
	pthread_mutex_lock(&b->lock);
	struct bus_sub *s = find_locked(b, id);
	if (s) {
		__atomic_store_n(&s->mask, mask & BUS_MASK_ALL, __ATOMIC_SEQ_CST);
		__atomic_store_n(&b->mask, table_mask(b->table), __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&b->lock);
	return s ? 0 : -ENOENT;
}

/* Looked up inside a reader section (not under b->lock), so that these are
 * safe from bus callbacks too. */
static struct bus_sub *find_async(struct bus_table *t, int id)
{
	for (unsigned i = 0; t && i < t->n; i++)
		if (t->subs[i]->id == id)
			return t->subs[i]->kind == BUS_ASYNC ? t->subs[i] : NULL;
	return NULL;
}

int bus_async_fd(struct bus *b, int id)
{
	struct reader r;
	struct bus_sub *s = find_async(reader_enter(b, &r), id);
	int fd = s && s->own_thread ? s->own_wake.fd : -ENOENT;
	reader_exit(b, &r);
	return fd;
}

int bus_async_drain(struct bus *b, int id, unsigned max)
{
	struct reader r;
	struct bus_sub *s = find_async(reader_enter(b, &r), id);
	if (!s || !s->own_thread) {
		reader_exit(b, &r);
		return -ENOENT;
	}
	pthread_mutex_lock(&s->drain_lock);
	tls_in_callback++;
	unsigned n = 0;
	for (;;) {
		n += async_drain(s, max ? max - n : 0);
		if (max && n >= max)
			break;
		/* Empty: ask for a wake-up, then look once more (a publisher that
		 * missed the flag has made its event visible by now). */
		__atomic_store_n(&s->own_wake.sleeping, 1, __ATOMIC_SEQ_CST);
		if (!async_pending(s))
			break;
		__atomic_store_n(&s->own_wake.sleeping, 0, __ATOMIC_RELAXED);
	}
	tls_in_callback--;
	pthread_mutex_unlock(&s->drain_lock);
	reader_exit(b, &r);
	return (int)n;
}

int64_t bus_async_lost(struct bus *b, int id)
{
	struct reader r;
	struct bus_sub *s = find_async(reader_enter(b, &r), id);
	int64_t n = s ? (int64_t)__atomic_load_n(&s->lost, __ATOMIC_RELAXED) : -ENOENT;
	reader_exit(b, &r);
	return n;
}

void bus_cleanup(struct bus *b)
{
	pthread_mutex_lock(&b->lock);
	struct bus_table *t = b->table;
	__atomic_store_n(&b->mask, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&b->table, NULL, __ATOMIC_SEQ_CST);
	synchronize(b);
	free_retired(b);
	bool started = b->thread_started;
	b->thread_started = false;
	pthread_mutex_unlock(&b->lock);
	if (started) {
		__atomic_store_n(&b->thread_stop, 1, __ATOMIC_RELEASE);
		uint64_t one = 1;
		ssize_t n = write(b->thread_wake->fd, &one, sizeof(one));
		(void)n;
		pthread_join(b->thread, NULL);
		close(b->thread_wake->fd);
		free(b->thread_wake);
		b->thread_wake = NULL;
	}
	for (unsigned i = 0; t && i < t->n; i++)
		sub_free(t->subs[i]);
	free(t);
	pthread_mutex_destroy(&b->lock);
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
		[BUS_EV_VM_SNAPSHOTTED] = "vm.snapshotted",
		[BUS_EV_BLK_REQUEST] = "blk.request",
		[BUS_EV_BLK_DONE] = "blk.done",
		[BUS_EV_NET_TX] = "net.tx",
		[BUS_EV_NET_RX] = "net.rx",
		[BUS_EV_IRQ_MSIX] = "irq.msix",
		[BUS_EV_IRQ_LINE] = "irq.line",
		[BUS_EV_BUS_LOST] = "bus.lost",
	};
	return (unsigned)t < BUS_EV__COUNT && names[t] ? names[t] : "unknown";
}
