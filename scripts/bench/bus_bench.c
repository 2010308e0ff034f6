/* Micro-benchmark of the service bus publish path (scripts/bench/bus.sh):
 * nanoseconds per bus_publish() with no subscriber, with subscribers of
 * each kind, and with several publishing threads. Printed, not asserted. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <vmsvc/bus.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t shared_count;
static __thread uint64_t own_count;

static void count_shared(void *o, const struct bus_event *ev)
{
	(void)o;
	(void)ev;
	__atomic_add_fetch(&shared_count, 1, __ATOMIC_RELAXED);
}
static void count_own(void *o, const struct bus_event *ev)
{
	(void)o;
	(void)ev;
	own_count++;
}
static enum bus_verdict allow(void *o, struct bus_event *ev)
{
	(void)o;
	(void)ev;
	return BUS_ALLOW;
}

struct run {
	struct bus *b;
	uint64_t n;
	uint64_t ns;
};

static void *publisher(void *arg)
{
	struct run *r = arg;
	struct bus_event ev = { .type = BUS_EV_EXIT_IO, .vcpu = 0 };
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < r->n; i++) {
		ev.u.io.port = (uint16_t)i;
		bus_publish(r->b, &ev);
	}
	r->ns = now_ns() - t0;
	return NULL;
}

static void measure(const char *what, struct bus *b, int threads, uint64_t n)
{
	struct run r[8];
	pthread_t t[8];
	for (int i = 0; i < threads; i++) {
		r[i] = (struct run){ .b = b, .n = n };
		pthread_create(&t[i], NULL, publisher, &r[i]);
	}
	double worst = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		double per = (double)r[i].ns / (double)n;
		if (per > worst)
			worst = per;
	}
	printf("  %-58s %d thread%s %8.2f ns/publish\n", what, threads, threads > 1 ? "s" : " ", worst);
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000ull;
	struct bus b;
	bus_init(&b);
	printf("bus_publish cost (%llu publishes per thread; slowest thread shown):\n", (unsigned long long)n);
	measure("no subscriber (fast path: one load + branch)", &b, 1, n);
	measure("no subscriber", &b, 2, n);
	int other = bus_subscribe(&b, BUS_MASK(BUS_EV_VM_PAUSED), NULL, count_own, NULL);
	measure("subscriber for another type only", &b, 1, n);
	int obs = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, count_own, NULL);
	measure("1 observer (thread-local count)", &b, 1, n / 4);
	measure("1 observer (thread-local count)", &b, 2, n / 4);
	bus_unsubscribe(&b, obs);
	obs = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, count_shared, NULL);
	measure("1 observer with a shared atomic add (old control service)", &b, 2, n / 4);
	bus_unsubscribe(&b, obs);
	int gate = bus_subscribe_gate(&b, BUS_MASK(BUS_EV_EXIT_IO), 0, allow, NULL);
	obs = bus_subscribe(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, count_own, NULL);
	measure("1 gate + 1 observer", &b, 1, n / 4);
	bus_unsubscribe(&b, gate);
	bus_unsubscribe(&b, obs);
	int as = bus_subscribe_async(&b, BUS_MASK(BUS_EV_EXIT_IO), NULL, count_own, NULL, 65536);
	measure("1 async subscriber (bus thread drains)", &b, 1, n / 8);
	printf("  async events lost to a full ring: %lld\n", (long long)bus_async_lost(&b, as));
	bus_unsubscribe(&b, as);
	bus_unsubscribe(&b, other);
	bus_cleanup(&b);
	return 0;
}
