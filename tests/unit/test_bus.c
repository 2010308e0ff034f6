/* Service bus: subscription masks, filters, order, unsubscribe, capacity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <vmsvc/bus.h>

struct rec {
	int calls;
	int order[8];
	int n;
};
static int seq;

static void on_ev(void *opaque, const struct bus_event *ev)
{
	struct rec *r = opaque;
	r->calls++;
	if (r->n < 8)
		r->order[r->n++] = ++seq;
	(void)ev;
}

static bool only_vcpu1(void *opaque, const struct bus_event *ev)
{
	(void)opaque;
	return ev->vcpu == 1;
}

static void test_mask_and_fastpath(void **state)
{
	struct bus b;
	bus_init(&b);
	struct rec r = { 0 };
	assert_false(bus_wants(&b, BUS_EV_EXIT_IO));
	int id = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, on_ev, &r);
	assert_true(id >= 0);
	assert_true(bus_wants(&b, BUS_EV_EXIT_IO));
	assert_false(bus_wants(&b, BUS_EV_EXIT_MMIO));
	struct bus_event io = { .type = BUS_EV_EXIT_IO }, mmio = { .type = BUS_EV_EXIT_MMIO };
	bus_publish(&b, &io);
	bus_publish(&b, &mmio);
	assert_int_equal(r.calls, 1);
	bus_unsubscribe(&b, id);
	assert_false(bus_wants(&b, BUS_EV_EXIT_IO));
	bus_publish(&b, &io);
	assert_int_equal(r.calls, 1);
}

static void test_filter_and_order(void **state)
{
	struct bus b;
	bus_init(&b);
	struct rec a = { 0 }, f = { 0 };
	seq = 0;
	assert_true(bus_subscribe(&b, BUS_MASK_ALL_EXITS, NULL, on_ev, &a) >= 0);
	assert_true(bus_subscribe(&b, BUS_MASK_ALL_EXITS, only_vcpu1, on_ev, &f) >= 0);
	struct bus_event e0 = { .type = BUS_EV_EXIT_HLT, .vcpu = 0 }, e1 = { .type = BUS_EV_EXIT_HLT, .vcpu = 1 };
	bus_publish(&b, &e0);
	bus_publish(&b, &e1);
	assert_int_equal(a.calls, 2);
	assert_int_equal(f.calls, 1);
	/* Subscription order is delivery order: a saw events 1 and 2, f saw event 3. */
	assert_int_equal(a.order[0], 1);
	assert_int_equal(a.order[1], 2);
	assert_int_equal(f.order[0], 3);
}

static void test_capacity_and_reuse(void **state)
{
	struct bus b;
	bus_init(&b);
	struct rec r = { 0 };
	int ids[BUS_MAX_SUBSCRIBERS];
	for (int i = 0; i < BUS_MAX_SUBSCRIBERS; i++)
		assert_int_equal(ids[i] = bus_subscribe(&b, BUS_MASK(BUS_EV_VM_STARTED), NULL, on_ev, &r), i);
	assert_true(bus_subscribe(&b, BUS_MASK(BUS_EV_VM_STARTED), NULL, on_ev, &r) < 0);
	bus_unsubscribe(&b, ids[5]);
	assert_int_equal(bus_subscribe(&b, BUS_MASK(BUS_EV_VM_STARTED), NULL, on_ev, &r), 5);
	assert_true(bus_subscribe(&b, 0, NULL, on_ev, &r) < 0);
	assert_true(bus_subscribe(&b, 1, NULL, NULL, &r) < 0);
	bus_unsubscribe(&b, -1);
	bus_unsubscribe(&b, 1000);
	assert_string_equal(bus_event_name(BUS_EV_EXIT_IO), "exit.io");
	assert_string_equal(bus_event_name((enum bus_event_type)999), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mask_and_fastpath),
		cmocka_unit_test(test_filter_and_order),
		cmocka_unit_test(test_capacity_and_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
