/* Built-in control commands (hello, info, pause, resume, stats, stop, and
 * placeholders for snapshot/suspend) and the JSON form of bus events. */
#ifdef HAVE_JSONC
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include "services/control_internal.h"

struct json_object *ctl_command_list(struct control *ctl);

uint64_t ctl_now_ns(int clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double uptime_s(const struct control *ctl)
{
	return (double)(ctl_now_ns(CLOCK_MONOTONIC) - ctl->start_mono_ns) / 1e9;
}

/* A number with a fixed number of decimals ("1.864", not "1.8643291140000001"). */
static struct json_object *json_fixed(double v, int decimals)
{
	char buf[48];
	snprintf(buf, sizeof(buf), "%.*f", decimals, v);
	return json_object_new_double_s(v, buf);
}

static const char *vm_state(struct vm *vm)
{
	if (__atomic_load_n(&vm->ending, __ATOMIC_ACQUIRE))
		return "stopping";
	return vm_is_paused(vm) ? "paused" : "running";
}

static int cmd_hello(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	struct json_object *r = json_object_new_object();
	json_object_object_add(r, "protocol", json_object_new_int(CONTROL_PROTOCOL_VERSION));
	json_object_object_add(r, "vmsvc", json_object_new_string(VMSVC_VERSION));
	json_object_object_add(r, "name", json_object_new_string(ctl->name));
	json_object_object_add(r, "commands", ctl_command_list(ctl));
	*result = r;
	return 0;
}

static int cmd_info(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	struct vm *vm = ctl->vm;
	struct json_object *r = json_object_new_object();
	json_object_object_add(r, "name", json_object_new_string(ctl->name));
	json_object_object_add(r, "pid", json_object_new_int((int)getpid()));
	json_object_object_add(r, "state", json_object_new_string(vm_state(vm)));
	json_object_object_add(r, "vcpus", json_object_new_int(vm->ncpus));
	json_object_object_add(r, "memory", json_object_new_int64((int64_t)vm->cfg.mem_size));
	json_object_object_add(r, "kernel", json_object_new_string(vm->cfg.kernel ? vm->cfg.kernel : ""));
	if (vm->cfg.cmdline)
		json_object_object_add(r, "cmdline", json_object_new_string(vm->cfg.cmdline));
	json_object_object_add(r, "uptime", json_fixed(uptime_s(ctl), 3));
	json_object_object_add(r, "socket", json_object_new_string(ctl->path));
	struct json_object *devs = json_object_new_array();
	for (unsigned i = 0; i < vm->ndevices && i < VM_MAX_DEVICES; i++)
		if (vm->devices[i].ops && vm->devices[i].ops->name)
			json_object_array_add(devs, json_object_new_string(vm->devices[i].ops->name));
	json_object_object_add(r, "devices", devs);
	struct json_object *disks = json_object_new_array();
	for (unsigned i = 0; i < vm->cfg.ndisks && i < VM_MAX_DISKS; i++)
		json_object_array_add(disks, json_object_new_string(vm->cfg.disks[i]));
	json_object_object_add(r, "disks", disks);
	struct json_object *nets = json_object_new_array();
	for (unsigned i = 0; i < vm->cfg.nnets && i < VM_MAX_NETS; i++)
		json_object_array_add(nets, json_object_new_string(vm->cfg.nets[i]));
	json_object_object_add(r, "nets", nets);
	*result = r;
	return 0;
}

static struct json_object *state_result(struct control *ctl)
{
	struct json_object *r = json_object_new_object();
	json_object_object_add(r, "state", json_object_new_string(vm_state(ctl->vm)));
	return r;
}

/* pause/resume from the control socket are not nested: pausing a paused VM is a
 * no-op, so `vmsvc resume` always undoes `vmsvc pause`. A pause taken by another
 * service (a snapshot in progress) is not undone by resume: we only release our own. */

static int cmd_pause(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	if (!__atomic_load_n(&ctl->pause_held, __ATOMIC_ACQUIRE)) {
		int r = vm_pause(ctl->vm);
		if (r < 0)
			return r;
		__atomic_store_n(&ctl->pause_held, 1, __ATOMIC_RELEASE);
	}
	*result = state_result(ctl);
	return 0;
}

static int cmd_resume(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	if (__atomic_exchange_n(&ctl->pause_held, 0, __ATOMIC_ACQ_REL))
		vm_resume(ctl->vm);
	*result = state_result(ctl);
	return 0;
}

static int cmd_stats(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	struct vm *vm = ctl->vm;
	struct json_object *r = json_object_new_object();
	struct json_object *exits = json_object_new_object();
	struct json_object *events = json_object_new_object();
	/* Exits: the vCPUs' own counters (read racily: each is written by one
	 * thread only); other events: what the control service's subscription
	 * counted (lifecycle), and the assists the vCPUs counted. */
	uint64_t by_type[BUS_EV__COUNT] = { 0 }, assists = 0;
	struct json_object *cpus = json_object_new_array();
	for (int i = 0; i < vm->ncpus && i < VM_MAX_CPUS; i++) {
		uint64_t cpu_exits = 0;
		for (int t = 0; t <= BUS_EV_EXIT_OTHER; t++) {
			uint64_t n = __atomic_load_n(&vm->cpu[i].exits[t], __ATOMIC_RELAXED);
			by_type[t] += n;
			cpu_exits += n;
		}
		uint64_t a = __atomic_load_n(&vm->cpu[i].assists, __ATOMIC_RELAXED);
		assists += a;
		struct json_object *c = json_object_new_object();
		json_object_object_add(c, "index", json_object_new_int(i));
		json_object_object_add(c, "exits", json_object_new_int64((int64_t)cpu_exits));
		json_object_object_add(c, "assists", json_object_new_int64((int64_t)a));
		json_object_array_add(cpus, c);
	}
	uint64_t total = 0;
	for (int t = 0; t < BUS_EV__COUNT; t++) {
		if (BUS_MASK(t) & BUS_MASK_ALL_EXITS) {
			total += by_type[t];
			json_object_object_add(exits, bus_event_name(t), json_object_new_int64((int64_t)by_type[t]));
		} else if (t == BUS_EV_EMUL_ASSIST) {
			json_object_object_add(events, bus_event_name(t), json_object_new_int64((int64_t)assists));
		} else if (!(ctl->hf_mask & BUS_MASK(t)) && (BUS_MASK(t) & ctl_all_events_mask())) {
			uint64_t n = __atomic_load_n(&ctl->counts[t], __ATOMIC_RELAXED);
			json_object_object_add(events, bus_event_name(t), json_object_new_int64((int64_t)n));
		}
	}
	json_object_object_add(r, "exits_total", json_object_new_int64((int64_t)total));
	json_object_object_add(r, "exits", exits);
	json_object_object_add(r, "events", events);
	json_object_object_add(r, "vcpus", cpus);
	json_object_object_add(r, "unassigned_pio", json_object_new_int64((int64_t)vm->io.pio.unhandled));
	json_object_object_add(r, "unassigned_mmio", json_object_new_int64((int64_t)vm->io.mmio.unhandled));
	json_object_object_add(r, "uptime", json_fixed(uptime_s(ctl), 3));
	*result = r;
	return 0;
}

static int cmd_stop(void *opaque, struct json_object *req, struct json_object **result)
{
	struct control *ctl = opaque;
	/* A paused VM must see the end: vm_request_end wakes parked vCPUs. */
	vm_request_end(ctl->vm, VM_END_USER, 0, "stopped through the control socket");
	*result = state_result(ctl);
	return 0;
}

static int cmd_not_implemented(void *opaque, struct json_object *req, struct json_object **result)
{
	return err_set(ENOSYS, "%s: not implemented yet", (const char *)opaque);
}

void ctl_register_builtins(struct control *ctl)
{
	control_register_command(ctl, "hello", cmd_hello, ctl);
	control_register_command(ctl, "snapshot", cmd_not_implemented, "snapshot");
	control_register_command(ctl, "suspend", cmd_not_implemented, "suspend");
	if (!ctl->vm)
		return;
	control_register_command(ctl, "info", cmd_info, ctl);
	control_register_command(ctl, "pause", cmd_pause, ctl);
	control_register_command(ctl, "resume", cmd_resume, ctl);
	control_register_command(ctl, "stats", cmd_stats, ctl);
	control_register_command(ctl, "stop", cmd_stop, ctl);
	ctl_register_regs(ctl);
}

/* ---- events ---- */

uint64_t ctl_high_frequency_mask(void)
{
	uint64_t low = BUS_MASK(BUS_EV_VM_STARTED) | BUS_MASK(BUS_EV_VM_STOPPED) | BUS_MASK(BUS_EV_VM_PAUSED) |
		       BUS_MASK(BUS_EV_VM_RESUMED) | BUS_MASK(BUS_EV_GUEST_END) | BUS_MASK(BUS_EV_NET_RXMODE);
	uint64_t all = ctl_all_events_mask();
	/* Types added later named "vm.*" are lifecycle events: low frequency. */
	for (int t = 0; t < BUS_EV__COUNT; t++)
		if (!strncmp(bus_event_name(t), "vm.", 3))
			low |= BUS_MASK(t);
	return all & ~low;
}

/* "events": ["vm.*", "exit.io", "*", ...]. "*" and "PREFIX.*" match only
 * low-frequency events unless the prefix itself names high-frequency ones
 * ("exit.*", "emul.*"): exits are streamed only when asked for by name. */
int ctl_parse_event_filter(struct json_object *req, uint64_t *mask)
{
	uint64_t hf = ctl_high_frequency_mask();
	uint64_t all = ctl_all_events_mask();
	struct json_object *list = NULL;
	if (!json_object_object_get_ex(req, "events", &list) || !list) {
		*mask = all & ~hf;
		return 0;
	}
	if (!json_object_is_type(list, json_type_array))
		return err_set(EINVAL, "\"events\" must be an array of event names");
	size_t n = json_object_array_length(list);
	if (n > 64)
		return err_set(EINVAL, "\"events\": at most 64 names");
	uint64_t m = 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(list, i);
		if (!json_object_is_type(e, json_type_string))
			return err_set(EINVAL, "\"events\" must be an array of event names");
		const char *s = json_object_get_string(e);
		size_t len = strlen(s);
		uint64_t hit = 0;
		if (!strcmp(s, "*")) {
			hit = all & ~hf;
		} else if (len >= 2 && s[len - 1] == '*' && s[len - 2] == '.') {
			for (int t = 0; t < BUS_EV__COUNT; t++)
				if (!strncmp(bus_event_name(t), s, len - 1))
					hit |= BUS_MASK(t);
		} else {
			for (int t = 0; t < BUS_EV__COUNT; t++)
				if (!strcmp(bus_event_name(t), s))
					hit |= BUS_MASK(t);
		}
		if (!hit) {
			char name[48];
			snprintf(name, sizeof(name), "%s", s);
			return err_set(EINVAL, "unknown event '%s'", name);
		}
		m |= hit;
	}
	*mask = m;
	return 0;
}

char *ctl_format_event(const struct ctl_event *e, size_t *len)
{
	const struct bus_event *ev = &e->ev;
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "event", json_object_new_string(bus_event_name(ev->type)));
	json_object_object_add(o, "time", json_fixed((double)e->time_ns / 1e9, 6));
	if (ev->vcpu >= 0)
		json_object_object_add(o, "vcpu", json_object_new_int(ev->vcpu));
	switch (ev->type) {
	case BUS_EV_EXIT_IO:
		json_object_object_add(o, "port", json_object_new_int(ev->u.io.port));
		json_object_object_add(o, "size", json_object_new_int(ev->u.io.size));
		json_object_object_add(o, "write", json_object_new_boolean(ev->u.io.write));
		json_object_object_add(o, "count", json_object_new_int64(ev->u.io.count));
		break;
	case BUS_EV_EXIT_MMIO:
		json_object_object_add(o, "gpa", json_object_new_uint64(ev->u.mmio.gpa));
		json_object_object_add(o, "size", json_object_new_int(ev->u.mmio.size));
		json_object_object_add(o, "write", json_object_new_boolean(ev->u.mmio.write));
		break;
	case BUS_EV_EMUL_ASSIST:
		json_object_object_add(o, "rip", json_object_new_uint64(ev->u.emul.rip));
		json_object_object_add(o, "mnemonic", json_object_new_string(e->mnemonic));
		break;
	case BUS_EV_GUEST_END:
		json_object_object_add(o, "reason", json_object_new_string(vm_end_reason_name(ev->u.end.reason)));
		json_object_object_add(o, "status", json_object_new_int(ev->u.end.status));
		break;
	case BUS_EV_NET_RXMODE:
		json_object_object_add(o, "dev", json_object_new_int(ev->u.net_rxmode.dev));
		json_object_object_add(o, "promisc", json_object_new_boolean(ev->u.net_rxmode.promisc));
		json_object_object_add(o, "allmulti", json_object_new_boolean(ev->u.net_rxmode.allmulti));
		break;
	case BUS_EV_VM_SNAPSHOTTED:
		json_object_object_add(o, "stop", json_object_new_boolean(ev->u.snapshot.stop));
		json_object_object_add(o, "suspend", json_object_new_boolean(ev->u.snapshot.suspend));
		break;
	case BUS_EV_BLK_REQUEST:
	case BUS_EV_BLK_DONE: {
		static const char *const ops[] = { "read", "write", "flush", "discard", "write-zeroes" };
		json_object_object_add(o, "dev", json_object_new_int(ev->u.blk.dev));
		json_object_object_add(o, "op", json_object_new_string(ev->u.blk.op < 5 ? ops[ev->u.blk.op] : "?"));
		json_object_object_add(o, "sector", json_object_new_uint64(ev->u.blk.sector));
		json_object_object_add(o, "bytes", json_object_new_uint64(ev->u.blk.bytes));
		if (ev->type == BUS_EV_BLK_DONE)
			json_object_object_add(o, "status", json_object_new_int(ev->u.blk.status));
		else if (ev->verdict == BUS_DENY)
			json_object_object_add(o, "denied", json_object_new_boolean(1));
		break;
	}
	case BUS_EV_NET_TX:
	case BUS_EV_NET_RX:
		json_object_object_add(o, "dev", json_object_new_int(ev->u.net.dev));
		json_object_object_add(o, "len", json_object_new_int64(ev->u.net.len));
		if (ev->verdict == BUS_DENY)
			json_object_object_add(o, "denied", json_object_new_boolean(1));
		break;
	case BUS_EV_IRQ_MSIX:
		json_object_object_add(o, "bdf", json_object_new_int(ev->u.msix.bdf));
		json_object_object_add(o, "vector", json_object_new_int(ev->u.msix.vector));
		break;
	case BUS_EV_IRQ_LINE:
		json_object_object_add(o, "gsi", json_object_new_int((int)ev->u.line.gsi));
		break;
	default:
		if (BUS_MASK(ev->type) & BUS_MASK_ALL_EXITS)
			json_object_object_add(o, "exit_reason", json_object_new_int64(ev->exit_reason));
		break;
	}
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	char *out = NULL;
	if (s && asprintf(&out, "%s\n", s) < 0)
		out = NULL;
	json_object_put(o);
	if (out)
		*len = strlen(out);
	return out;
}

#endif /* HAVE_JSONC */
