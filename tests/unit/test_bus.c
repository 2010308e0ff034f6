/* Service bus: masks, filters, delivery order across gates / observers / async
 * subscribers, veto and rewrite, async delivery and overflow, and runtime
 * subscribe/unsubscribe while publisher threads run (ASan: a callback after
 * bus_unsubscribe returned would touch freed memory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/bus.h>

struct rec {
	int calls;
	int order[8];
	int n;
	int tag;
};
static int seq;
static int trace[32];
static int ntrace;

static void on_ev(void *opaque, const struct bus_event *ev)
{
	struct rec *r = opaque;
	r->calls++;
	if (r->n < 8)
		r->order[r->n++] = ++seq;
	if (ntrace < 32)
		trace[ntrace++] = r->tag;
	(void)ev;
}

static bool only_vcpu1(void *opaque, const struct bus_event *ev)
{
	(void)opaque;
	return ev->vcpu == 1;
}

static void test_mask_and_unsubscribe(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	struct rec r = { 0 };
	assert_false(bus_wants(&b, BUS_EV_EXIT_IO));
	int id = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, on_ev, &r);
	assert_true(id > 0);
	assert_true(bus_wants(&b, BUS_EV_EXIT_IO));
	assert_false(bus_wants(&b, BUS_EV_EXIT_MMIO));
	struct bus_event io = { .type = BUS_EV_EXIT_IO }, mmio = { .type = BUS_EV_EXIT_MMIO };
	assert_int_equal(bus_publish(&b, &io), BUS_ALLOW);
	bus_publish(&b, &mmio);
	assert_int_equal(r.calls, 1);
	/* The mask can change at run time. */
	assert_int_equal(bus_set_mask(&b, id, BUS_MASK(BUS_EV_EXIT_MMIO)), 0);
	assert_false(bus_wants(&b, BUS_EV_EXIT_IO));
	bus_publish(&b, &mmio);
	assert_int_equal(r.calls, 2);
	assert_int_equal(bus_set_mask(&b, 12345, 1), -ENOENT);
	bus_unsubscribe(&b, id);
	assert_false(bus_wants(&b, BUS_EV_EXIT_MMIO));
	bus_publish(&b, &mmio);
	assert_int_equal(r.calls, 2);
	bus_unsubscribe(&b, id);   /* stale: ignored */
	bus_cleanup(&b);
}

static void test_filter_and_order(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	struct rec a = { 0 }, f = { 0 };
	seq = 0;
	assert_true(bus_subscribe(&b, BUS_MASK_ALL_EXITS, NULL, on_ev, &a) > 0);
	assert_true(bus_subscribe(&b, BUS_MASK_ALL_EXITS, only_vcpu1, on_ev, &f) > 0);
	struct bus_event e0 = { .type = BUS_EV_EXIT_HLT, .vcpu = 0 }, e1 = { .type = BUS_EV_EXIT_HLT, .vcpu = 1 };
	bus_publish(&b, &e0);
	bus_publish(&b, &e1);
	assert_int_equal(a.calls, 2);
	assert_int_equal(f.calls, 1);
	/* observers in subscription order */
	assert_true(a.order[1] < f.order[0]);
	bus_cleanup(&b);
}

static void test_capacity_and_args(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	struct rec r = { 0 };
	int ids[BUS_MAX_SUBSCRIBERS];
	for (int i = 0; i < BUS_MAX_SUBSCRIBERS; i++)
		assert_true((ids[i] = bus_subscribe(&b, BUS_MASK(BUS_EV_VM_STARTED), NULL, on_ev, &r)) > 0);
	assert_int_equal(bus_subscribe(&b, BUS_MASK(BUS_EV_VM_STARTED), NULL, on_ev, &r), -ENOSPC);
	bus_unsubscribe(&b, ids[5]);
	int again = bus_subscribe(&b, BUS_MASK(BUS_EV_VM_STARTED), NULL, on_ev, &r);
	assert_true(again > 0);
	for (int i = 0; i < BUS_MAX_SUBSCRIBERS; i++)
		assert_true(again != ids[i]);   /* ids are never reused: a stale id cannot hit a newcomer */
	assert_int_equal(bus_subscribe(&b, 0, NULL, on_ev, &r), -EINVAL);
	assert_int_equal(bus_subscribe(&b, 1, NULL, NULL, &r), -EINVAL);
	assert_int_equal(bus_subscribe_gate(&b, 1, 0, NULL, &r), -EINVAL);
	assert_int_equal(bus_subscribe_async(&b, 1, NULL, on_ev, &r, BUS_ASYNC_RING_MAX + 1), -EINVAL);
	bus_unsubscribe(&b, -1);
	bus_unsubscribe(&b, 1000);
	struct bus_event ev = { .type = BUS_EV_VM_STARTED };
	bus_publish(&b, &ev);
	assert_int_equal(r.calls, BUS_MAX_SUBSCRIBERS);
	assert_string_equal(bus_event_name(BUS_EV_EXIT_IO), "exit.io");
	assert_string_equal(bus_event_name(BUS_EV_BLK_REQUEST), "blk.request");
	assert_string_equal(bus_event_name(BUS_EV_VM_SNAPSHOTTED), "vm.snapshotted");
	assert_string_equal(bus_event_name((enum bus_event_type)999), "unknown");
	for (int t = 0; t < BUS_EV__COUNT; t++)
		assert_string_not_equal(bus_event_name((enum bus_event_type)t), "unknown");
	bus_cleanup(&b);
}

/* ---- gates ---- */

struct gate {
	int tag;
	enum bus_verdict verdict;
	uint64_t set_sector;   /* rewrite u.blk.sector to this when non-zero */
	int calls;
	uint8_t saw_verdict;
	uint64_t saw_sector;
};

static enum bus_verdict on_gate(void *opaque, struct bus_event *ev)
{
	struct gate *g = opaque;
	g->calls++;
	g->saw_verdict = ev->verdict;
	g->saw_sector = ev->u.blk.sector;
	if (ntrace < 32)
		trace[ntrace++] = g->tag;
	if (g->set_sector)
		ev->u.blk.sector = g->set_sector;
	return g->verdict;
}

struct seen {
	int tag;
	int calls;
	uint8_t verdict;
	uint64_t sector;
};

static void on_seen(void *opaque, const struct bus_event *ev)
{
	struct seen *s = opaque;
	s->calls++;
	s->verdict = ev->verdict;
	s->sector = ev->u.blk.sector;
	if (ntrace < 32)
		trace[ntrace++] = s->tag;
}

static void test_order_across_kinds(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	uint64_t m = BUS_MASK(BUS_EV_BLK_REQUEST);
	struct seen obs1 = { .tag = 10 }, obs2 = { .tag = 11 }, as = { .tag = 20 };
	struct gate g5 = { .tag = 5 }, g1 = { .tag = 1 }, g1b = { .tag = 2 };
	/* Subscribed out of delivery order on purpose. */
	struct bus_sub_config ac = { .kind = BUS_ASYNC, .mask = m, .fn = on_seen, .opaque = &as, .own_thread = true };
	int aid = bus_subscribe_cfg(&b, &ac);
	assert_true(aid > 0);
	assert_true(bus_subscribe(&b, m, NULL, on_seen, &obs1) > 0);
	assert_true(bus_subscribe_gate(&b, m, 5, on_gate, &g5) > 0);
	assert_true(bus_subscribe(&b, m, NULL, on_seen, &obs2) > 0);
	assert_true(bus_subscribe_gate(&b, m, 1, on_gate, &g1) > 0);
	assert_true(bus_subscribe_gate(&b, m, 1, on_gate, &g1b) > 0);
	ntrace = 0;
	struct bus_event ev = { .type = BUS_EV_BLK_REQUEST, .vcpu = -1 };
	assert_int_equal(bus_publish(&b, &ev), BUS_ALLOW);
	assert_int_equal(bus_async_drain(&b, aid, 0), 1);
	int want[] = { 1, 2, 5, 10, 11, 20 };
	assert_int_equal(ntrace, 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(trace[i], want[i]);
	bus_cleanup(&b);
}

static void test_veto(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	uint64_t m = BUS_MASK(BUS_EV_BLK_REQUEST);
	struct gate deny = { .tag = 1, .verdict = BUS_DENY }, later = { .tag = 2 };
	struct seen obs = { .tag = 3 };
	assert_true(bus_subscribe_gate(&b, m, 0, on_gate, &deny) > 0);
	assert_true(bus_subscribe_gate(&b, m, 10, on_gate, &later) > 0);
	assert_true(bus_subscribe(&b, m, NULL, on_seen, &obs) > 0);
	struct bus_event ev = { .type = BUS_EV_BLK_REQUEST, .vcpu = -1, .u.blk = { .op = BUS_BLK_WRITE, .sector = 8 } };
	assert_int_equal(bus_publish(&b, &ev), BUS_DENY);
	assert_int_equal(ev.verdict, BUS_DENY);
	assert_int_equal(deny.calls, 1);
	assert_int_equal(later.calls, 0);       /* decided: not asked */
	assert_int_equal(obs.calls, 1);         /* observers still see it, with the verdict */
	assert_int_equal(obs.verdict, BUS_DENY);
	/* Other types are not gated. */
	struct bus_event other = { .type = BUS_EV_BLK_DONE };
	assert_int_equal(bus_publish(&b, &other), BUS_ALLOW);
	assert_int_equal(deny.calls, 1);
	bus_cleanup(&b);
}

static void test_rewrite(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	uint64_t m = BUS_MASK(BUS_EV_BLK_REQUEST);
	struct gate rw = { .tag = 1, .verdict = BUS_REWRITTEN, .set_sector = 99 }, pass = { .tag = 2 };
	struct seen obs = { .tag = 3 };
	int rid = bus_subscribe_gate(&b, m, 0, on_gate, &rw);
	assert_true(bus_subscribe_gate(&b, m, 1, on_gate, &pass) > 0);
	assert_true(bus_subscribe(&b, m, NULL, on_seen, &obs) > 0);
	struct bus_event ev = { .type = BUS_EV_BLK_REQUEST, .vcpu = -1, .u.blk = { .op = BUS_BLK_READ, .sector = 8 } };
	assert_int_equal(bus_publish(&b, &ev), BUS_REWRITTEN);
	assert_int_equal(ev.u.blk.sector, 99);
	assert_int_equal(pass.saw_sector, 99);          /* later gates see the rewrite */
	assert_int_equal(pass.saw_verdict, BUS_REWRITTEN);
	assert_int_equal(obs.sector, 99);
	/* A later DENY wins over an earlier rewrite. */
	pass.verdict = BUS_DENY;
	ev = (struct bus_event){ .type = BUS_EV_BLK_REQUEST, .vcpu = -1, .u.blk.sector = 8 };
	assert_int_equal(bus_publish(&b, &ev), BUS_DENY);
	/* Gate gone: plain allow. */
	bus_unsubscribe(&b, rid);
	pass.verdict = BUS_ALLOW;
	ev = (struct bus_event){ .type = BUS_EV_BLK_REQUEST, .vcpu = -1, .u.blk.sector = 8 };
	assert_int_equal(bus_publish(&b, &ev), BUS_ALLOW);
	assert_int_equal(ev.u.blk.sector, 8);
	bus_cleanup(&b);
}

/* A subscriber cannot unsubscribe or subscribe from inside a callback (it
 * would wait for itself). */
static struct bus *cb_bus;
static int cb_result;
static void on_ev_subscribe(void *opaque, const struct bus_event *ev)
{
	(void)ev;
	cb_result = bus_subscribe(cb_bus, 1, NULL, on_ev, opaque);
	bus_unsubscribe(cb_bus, 1);   /* ignored with a warning, does not hang */
}

static void test_no_subscribe_from_callback(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	cb_bus = &b;
	struct rec r = { 0 };
	assert_int_equal(bus_subscribe(&b, BUS_MASK(BUS_EV_VM_PAUSED), NULL, on_ev_subscribe, &r), 1);
	struct bus_event ev = { .type = BUS_EV_VM_PAUSED };
	bus_publish(&b, &ev);
	assert_int_equal(cb_result, -EDEADLK);
	assert_true(bus_wants(&b, BUS_EV_VM_PAUSED));
	bus_cleanup(&b);
}

/* ---- async ---- */

struct counter {
	uint64_t n;          /* atomic */
	uint64_t lost;
	uint64_t last_port;
	bool in_order;
};

static void on_count(void *opaque, const struct bus_event *ev)
{
	struct counter *c = opaque;
	if (ev->type == BUS_EV_BUS_LOST) {
		c->lost += ev->u.lost.count;
		return;
	}
	if (ev->u.io.port != c->last_port + 1)
		c->in_order = false;
	c->last_port = ev->u.io.port;
	__atomic_add_fetch(&c->n, 1, __ATOMIC_RELAXED);
}

static void test_async_bus_thread(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	struct counter c = { .in_order = true };
	int id = bus_subscribe_async(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, on_count, &c, 4096);
	assert_true(id > 0);
	for (unsigned i = 1; i <= 3000; i++) {
		struct bus_event ev = { .type = BUS_EV_EXIT_IO, .u.io.port = (uint16_t)i };
		bus_publish(&b, &ev);
		if (i % 500 == 0)
			usleep(1000);   /* let the thread go to sleep and be woken again */
	}
	for (int i = 0; i < 5000 && __atomic_load_n(&c.n, __ATOMIC_RELAXED) < 3000; i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&c.n, __ATOMIC_RELAXED), 3000);
	assert_true(c.in_order);   /* one publisher: its events arrive in order */
	assert_int_equal(bus_async_lost(&b, id), 0);
	bus_unsubscribe(&b, id);
	assert_int_equal(bus_async_lost(&b, id), -ENOENT);
	bus_cleanup(&b);
}

static void test_async_overflow(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	struct counter c = { .in_order = true };
	struct bus_sub_config cfg = { .kind = BUS_ASYNC, .mask = BUS_MASK(BUS_EV_EXIT_IO), .fn = on_count, .opaque = &c,
				      .ring_size = 8, .own_thread = true };
	int id = bus_subscribe_cfg(&b, &cfg);
	assert_true(id > 0);
	int fd = bus_async_fd(&b, id);
	assert_true(fd >= 0);
	assert_int_equal(bus_async_drain(&b, id, 0), 0);   /* empty: now asks to be woken */
	for (unsigned i = 1; i <= 20; i++) {
		struct bus_event ev = { .type = BUS_EV_EXIT_IO, .u.io.port = (uint16_t)i };
		assert_int_equal(bus_publish(&b, &ev), BUS_ALLOW);   /* never blocks */
	}
	struct pollfd p = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 0), 1);
	uint64_t v;
	assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));
	assert_int_equal(bus_async_lost(&b, id), 12);
	assert_int_equal(bus_async_drain(&b, id, 0), 9);   /* the loss report, then 8 events */
	assert_int_equal(c.lost, 12);
	assert_int_equal(c.n, 8);
	assert_true(c.in_order);
	assert_int_equal(c.last_port, 8);
	/* Nothing new: nothing reported again. */
	assert_int_equal(bus_async_drain(&b, id, 0), 0);
	struct bus_event ev = { .type = BUS_EV_EXIT_IO, .u.io.port = 9 };
	bus_publish(&b, &ev);
	assert_int_equal(poll(&p, 1, 0), 1);
	assert_int_equal(bus_async_drain(&b, id, 0), 1);
	assert_int_equal(bus_async_drain(&b, 4242, 0), -ENOENT);
	bus_unsubscribe(&b, id);
	bus_cleanup(&b);
}

/* ---- runtime subscribe/unsubscribe under load ---- */

#define STRESS_PUBLISHERS 3
#define STRESS_ROUNDS 300
#define LIVE 0x11feULL

struct victim {
	uint64_t magic;     /* LIVE while subscribed; callbacks check it */
	int in_cb;          /* atomic: callbacks running now */
	uint64_t calls;     /* atomic */
	int bad;            /* atomic: a callback saw a dead victim */
};

static void victim_touch(struct victim *v)
{
	__atomic_add_fetch(&v->in_cb, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&v->magic, __ATOMIC_SEQ_CST) != LIVE)
		__atomic_store_n(&v->bad, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&v->calls, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&v->in_cb, 1, __ATOMIC_SEQ_CST);
}

static void stress_obs(void *opaque, const struct bus_event *ev)
{
	(void)ev;
	victim_touch(opaque);
}

static enum bus_verdict stress_gate(void *opaque, struct bus_event *ev)
{
	victim_touch(opaque);
	ev->u.io.count++;
	return BUS_REWRITTEN;
}

struct publisher {
	struct bus *b;
	int stop;
	uint64_t published;
};

static void *publish_loop(void *arg)
{
	struct publisher *p = arg;
	while (!__atomic_load_n(&p->stop, __ATOMIC_RELAXED)) {
		struct bus_event ev = { .type = BUS_EV_EXIT_IO, .vcpu = 0 };
		bus_publish(p->b, &ev);
		p->published++;
	}
	return NULL;
}

static void test_stress_runtime_subscribe(void **state)
{
	(void)state;
	struct bus b;
	bus_init(&b);
	struct publisher pub[STRESS_PUBLISHERS];
	pthread_t t[STRESS_PUBLISHERS];
	for (int i = 0; i < STRESS_PUBLISHERS; i++) {
		pub[i] = (struct publisher){ .b = &b };
		assert_int_equal(pthread_create(&t[i], NULL, publish_loop, &pub[i]), 0);
	}
	/* One long-lived observer keeps the table non-trivial throughout. */
	struct victim *keeper = calloc(1, sizeof(*keeper));
	keeper->magic = LIVE;
	int kid = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, stress_obs, keeper);
	assert_true(kid > 0);
	uint64_t total_calls = 0;
	/* Bounded in time too: with more busy threads than CPUs every grace
	 * period waits for a preempted publisher. */
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rounds = 0;
	for (int round = 0; round < STRESS_ROUNDS; round++, rounds++) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (round >= 20 && (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > 3000)
			break;
		struct victim *v[3];
		int id[3];
		for (int k = 0; k < 3; k++) {
			v[k] = calloc(1, sizeof(*v[k]));
			v[k]->magic = LIVE;
		}
		id[0] = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, stress_obs, v[0]);
		id[1] = bus_subscribe_gate(&b, BUS_MASK(BUS_EV_EXIT_IO), round % 3, stress_gate, v[1]);
		id[2] = bus_subscribe_async(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, stress_obs, v[2], 64);
		for (int k = 0; k < 3; k++)
			assert_true(id[k] > 0);
		if (round % 16 == 0)
			usleep(200);
		else
			sched_yield();
		/* Unsubscribe in a varying order; after each return the callback
		 * must be idle, and freeing its state must be safe. */
		for (int k = 0; k < 3; k++) {
			int j = (k + round) % 3;
			bus_unsubscribe(&b, id[j]);
			assert_int_equal(__atomic_load_n(&v[j]->in_cb, __ATOMIC_SEQ_CST), 0);
			assert_int_equal(__atomic_load_n(&v[j]->bad, __ATOMIC_SEQ_CST), 0);
			total_calls += v[j]->calls;
			v[j]->magic = 0;
			free(v[j]);   /* ASan: any later callback is a use after free */
		}
	}
	for (int i = 0; i < STRESS_PUBLISHERS; i++) {
		__atomic_store_n(&pub[i].stop, 1, __ATOMIC_RELAXED);
		pthread_join(t[i], NULL);
	}
	bus_unsubscribe(&b, kid);
	assert_int_equal(keeper->bad, 0);
	uint64_t published = 0;
	for (int i = 0; i < STRESS_PUBLISHERS; i++)
		published += pub[i].published;
	print_message("stress: %d rounds, %llu events published, %llu deliveries to short-lived subscribers, keeper saw %llu\n",
		      rounds, (unsigned long long)published, (unsigned long long)total_calls, (unsigned long long)keeper->calls);
	assert_true(published > 0);
	assert_true(keeper->calls > 0);
	free(keeper);
	assert_false(bus_wants(&b, BUS_EV_EXIT_IO));
	bus_cleanup(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mask_and_unsubscribe),
		cmocka_unit_test(test_filter_and_order),
		cmocka_unit_test(test_capacity_and_args),
		cmocka_unit_test(test_order_across_kinds),
		cmocka_unit_test(test_veto),
		cmocka_unit_test(test_rewrite),
		cmocka_unit_test(test_no_subscribe_from_callback),
		cmocka_unit_test(test_async_bus_thread),
		cmocka_unit_test(test_async_overflow),
		cmocka_unit_test(test_stress_runtime_subscribe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
