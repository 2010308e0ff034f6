/* Service bus with a real guest: a gate subscriber that denies virtio-blk
 * writes (what an IDS does) makes the guest's writes fail with IOERR and
 * leaves the disk untouched, while reads pass; observers see the requests,
 * the completions and the MSI-X interrupts; and an exit observer is
 * subscribed and unsubscribed over and over while the vCPU runs.
 * usage: bus_gate_test VIRTIO_BLK.elf */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vmsvc/bus.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

#define DISK_BYTES (64u << 20)

struct gate_stats {
	uint64_t writes_denied, reads_allowed, other;   /* atomic */
};

static enum bus_verdict deny_writes(void *opaque, struct bus_event *ev)
{
	struct gate_stats *g = opaque;
	if (ev->u.blk.op == BUS_BLK_WRITE || ev->u.blk.op == BUS_BLK_WRITE_ZEROES || ev->u.blk.op == BUS_BLK_DISCARD) {
		__atomic_add_fetch(&g->writes_denied, 1, __ATOMIC_RELAXED);
		return BUS_DENY;
	}
	__atomic_add_fetch(ev->u.blk.op == BUS_BLK_READ ? &g->reads_allowed : &g->other, 1, __ATOMIC_RELAXED);
	return BUS_ALLOW;
}

struct observed {
	uint64_t write_ioerr, write_ok, read_ok, msix, denied_seen, exits;   /* atomic */
};

static void observe(void *opaque, const struct bus_event *ev)
{
	struct observed *o = opaque;
	switch (ev->type) {
	case BUS_EV_BLK_DONE:
		if (ev->u.blk.op == BUS_BLK_WRITE)
			__atomic_add_fetch(ev->u.blk.status == 1 ? &o->write_ioerr : &o->write_ok, 1, __ATOMIC_RELAXED);
		else if (ev->u.blk.op == BUS_BLK_READ && ev->u.blk.status == 0)
			__atomic_add_fetch(&o->read_ok, 1, __ATOMIC_RELAXED);
		break;
	case BUS_EV_BLK_REQUEST:
		if (ev->verdict == BUS_DENY)
			__atomic_add_fetch(&o->denied_seen, 1, __ATOMIC_RELAXED);
		break;
	case BUS_EV_IRQ_MSIX:
		__atomic_add_fetch(&o->msix, 1, __ATOMIC_RELAXED);
		break;
	default:
		__atomic_add_fetch(&o->exits, 1, __ATOMIC_RELAXED);
	}
}

struct churn {
	struct vm *vm;
	struct observed *obs;
	int stop;
	unsigned rounds;
	int error;
};

/* Runtime subscribe/unsubscribe while the vCPU and the I/O thread publish. */
static void *churn_thread(void *arg)
{
	struct churn *c = arg;
	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		int id = bus_subscribe(&c->vm->bus, BUS_MASK_ALL_EXITS, NULL, observe, c->obs);
		if (id < 0) {
			c->error = id;
			break;
		}
		usleep(2000);
		bus_unsubscribe(&c->vm->bus, id);
		c->rounds++;
		usleep(1000);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s VIRTIO_BLK.elf\n", argv[0]);
		return 2;
	}
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		fprintf(stderr, "no /dev/kvm: skipped\n");
		return 77;
	}
	char disk[] = "/tmp/vmsvc-bus-gate-disk.XXXXXX";
	int dfd = mkstemp(disk);
	if (dfd < 0 || ftruncate(dfd, DISK_BYTES) < 0) {
		perror("disk");
		return 1;
	}
	char serial[] = "/tmp/vmsvc-bus-gate-serial.XXXXXX";
	int sfd = mkstemp(serial);
	if (sfd < 0) {
		perror("serial");
		return 1;
	}
	struct vm_config cfg = { .kernel = argv[1], .cmdline = "blk.denied=1", .mem_size = 128ULL << 20, .ncpus = 1,
				 .serial_out_fd = sfd, .serial_in_fd = -1, .ndisks = 1, .disks = { disk } };
	struct vm *vm;
	int ok = 0;
	if (vm_create(&cfg, &vm) < 0) {
		fprintf(stderr, "vm_create: %s\n", err_msg());
		goto out;
	}
	struct gate_stats g = { 0 };
	struct observed obs = { 0 };
	int gid = bus_subscribe_gate(&vm->bus, BUS_MASK(BUS_EV_BLK_REQUEST), 0, deny_writes, &g);
	int oid = bus_subscribe(&vm->bus, BUS_MASK(BUS_EV_BLK_REQUEST) | BUS_MASK(BUS_EV_BLK_DONE) | BUS_MASK(BUS_EV_IRQ_MSIX),
				NULL, observe, &obs);
	if (gid <= 0 || oid <= 0) {
		fprintf(stderr, "subscribe: %s\n", err_msg());
		goto out_vm;
	}
	struct churn ch = { .vm = vm, .obs = &obs };
	pthread_t t;
	pthread_create(&t, NULL, churn_thread, &ch);
	int status = vm_run(vm);
	__atomic_store_n(&ch.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	bus_unsubscribe(&vm->bus, gid);
	bus_unsubscribe(&vm->bus, oid);
	uint64_t exits = 0;
	for (int i = 0; i < vm->ncpus; i++)
		for (int k = 0; k <= BUS_EV_EXIT_OTHER; k++)
			exits += vm->cpu[i].exits[k];

	/* The guest's own verdict. */
	char out[8192] = { 0 };
	ssize_t n = pread(sfd, out, sizeof(out) - 1, 0);
	bool passed = n > 0 && strstr(out, "denied-writes test passed") && strstr(out, "PASS");
	/* The disk was never written. */
	bool untouched = true;
	static uint8_t buf[1 << 20];
	for (off_t off = 0; off < DISK_BYTES && untouched; off += sizeof(buf)) {
		if (pread(dfd, buf, sizeof(buf), off) != (ssize_t)sizeof(buf)) {
			untouched = false;
			break;
		}
		for (size_t i = 0; i < sizeof(buf); i++)
			if (buf[i]) {
				untouched = false;
				break;
			}
	}
	printf("status %d (%s); gate: %llu writes denied, %llu reads allowed, %llu other; observed: %llu write IOERR, "
	       "%llu write OK, %llu reads OK, %llu denials, %llu MSI-X; exit observer %u times subscribed (%llu exits "
	       "seen of %llu counted by the vCPU); disk %s\n",
	       status, vm->end_msg, (unsigned long long)g.writes_denied, (unsigned long long)g.reads_allowed,
	       (unsigned long long)g.other, (unsigned long long)obs.write_ioerr, (unsigned long long)obs.write_ok,
	       (unsigned long long)obs.read_ok, (unsigned long long)obs.denied_seen, (unsigned long long)obs.msix,
	       ch.rounds, (unsigned long long)obs.exits, (unsigned long long)exits, untouched ? "untouched" : "WRITTEN");
	if (!passed)
		fprintf(stderr, "guest output:\n%s\n", out);
	ok = status == 1 && passed && untouched && ch.error == 0 && g.writes_denied >= 1 &&
	     obs.write_ioerr == g.writes_denied && obs.write_ok == 0 && obs.denied_seen == g.writes_denied &&
	     g.reads_allowed > 0 && obs.read_ok == g.reads_allowed && obs.msix > 0 && ch.rounds > 0 &&
	     obs.exits <= exits && exits > 0;
out_vm:
	vm_destroy(vm);
out:
	close(sfd);
	close(dfd);
	unlink(serial);
	unlink(disk);
	return ok ? 0 : 1;
}
