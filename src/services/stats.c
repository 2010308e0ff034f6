/* Statistics service: counts exits by type (and I/O ports, MMIO pages, assisted
 * instructions) from the service bus; printed with --stats. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/services.h>
#include <vmsvc/vm.h>

#define STATS_MAX_MNEMONICS 32

struct stats {
	int sub;
	uint64_t by_type[BUS_EV__COUNT];
	uint64_t by_port[65536];
	struct { const char *name; uint64_t n; } assist[STATS_MAX_MNEMONICS];
	pthread_mutex_t lock;   /* only for the (rare) assist table */
};

static void stats_on_event(void *opaque, const struct bus_event *ev)
{
	struct stats *s = opaque;
	__atomic_add_fetch(&s->by_type[ev->type], 1, __ATOMIC_RELAXED);
	if (ev->type == BUS_EV_EXIT_IO)
		__atomic_add_fetch(&s->by_port[ev->u.io.port], 1, __ATOMIC_RELAXED);
	else if (ev->type == BUS_EV_EMUL_ASSIST) {
		const char *name = ev->u.emul.mnemonic ? ev->u.emul.mnemonic : "?";
		pthread_mutex_lock(&s->lock);
		for (int i = 0; i < STATS_MAX_MNEMONICS; i++) {
			if (!s->assist[i].name)
				s->assist[i].name = name;
			if (s->assist[i].name == name || !strcmp(s->assist[i].name, name)) {
				s->assist[i].n++;
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
	}
}

int stats_attach(struct vm *vm, struct stats **out)
{
	struct stats *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(ENOMEM, "out of memory");
	pthread_mutex_init(&s->lock, NULL);
	s->sub = bus_subscribe(&vm->bus, BUS_MASK_ALL_EXITS | BUS_MASK(BUS_EV_EMUL_ASSIST), NULL, stats_on_event, s);
	if (s->sub < 0) {
		int e = -s->sub;
		free(s);
		return err_set(e, "cannot subscribe the statistics service");
	}
	*out = s;
	return 0;
}

void stats_print(const struct stats *s, FILE *f)
{
	uint64_t total = 0;
	for (int t = 0; t <= BUS_EV_EXIT_OTHER; t++)
		total += s->by_type[t];
	fprintf(f, "exit statistics (%llu exits):\n", (unsigned long long)total);
	for (int t = 0; t < BUS_EV__COUNT; t++)
		if (s->by_type[t])
			fprintf(f, "  %-22s %12llu\n", bus_event_name(t), (unsigned long long)s->by_type[t]);
	/* Top five ports. */
	int top[5] = { -1, -1, -1, -1, -1 };
	for (int p = 0; p < 65536; p++) {
		if (!s->by_port[p])
			continue;
		for (int i = 0; i < 5; i++)
			if (top[i] < 0 || s->by_port[p] > s->by_port[top[i]]) {
				memmove(&top[i + 1], &top[i], (4 - i) * sizeof(int));
				top[i] = p;
				break;
			}
	}
	for (int i = 0; i < 5 && top[i] >= 0; i++)
		fprintf(f, "  port %#06x            %12llu\n", top[i], (unsigned long long)s->by_port[top[i]]);
	for (int i = 0; i < STATS_MAX_MNEMONICS && s->assist[i].name; i++)
		fprintf(f, "  assisted %-13s %12llu\n", s->assist[i].name, (unsigned long long)s->assist[i].n);
}

void stats_detach(struct vm *vm, struct stats *s)
{
	if (!s)
		return;
	bus_unsubscribe(&vm->bus, s->sub);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
