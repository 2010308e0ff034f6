/* virtio-net end to end: a fake driver programs the device through the virtio-pci
 * transport (config space, common config, rings in fake guest RAM) and talks to the
 * host side of a real tap through an AF_PACKET socket. Each test runs in a forked
 * child inside a fresh network namespace (unshare(CLONE_NEWNET)); skipped with a
 * message when namespaces or /dev/net/tun are not available (not root). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <cmocka.h>

#include <vmsvc/bus.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/net.h>
#include <vmsvc/pci.h>
#include <vmsvc/virtio.h>
#include <vmsvc/vm.h>

#define SKIP_CODE 77
#define CHECK(c)                                                                              \
	do {                                                                                  \
		if (!(c)) {                                                                   \
			fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d, err_msg '%s')\n", \
				__FILE__, __LINE__, #c, errno, err_msg());                    \
			_exit(1);                                                             \
		}                                                                             \
	} while (0)

#define F_CSUM 0
#define F_GUEST_CSUM 1
#define F_MAC 5
#define F_MRG_RXBUF 15
#define F_STATUS 16
#define F_CTRL_VQ 17
#define F_CTRL_RX 18
#define F_CTRL_MAC_ADDR 23
#define BIT(b) (1ULL << (b))
#define BASE_FEATURES (BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_F_RING_EVENT_IDX) | BIT(F_MAC) | BIT(F_STATUS))

#define TAP "vnt0"
#define ETH_TEST 0x88b5
static const uint8_t guest_mac[6] = { 0x0e, 0x76, 0x6d, 0x00, 0x00, 0x01 };
static const uint8_t host_mac[6] = { 0x0e, 0x76, 0x6d, 0x00, 0x00, 0x02 };
static const uint8_t other_mac[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x99 };
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* ---- fake VM (no /dev/kvm): RAM, io bus, INTx-only interrupt controller ---- */
#define RAM_SIZE (16u << 20)

static int fake_set_level(struct irqchip *c, unsigned gsi, bool level)
{
	(void)c;
	(void)gsi;
	(void)level;
	return 0;
}
static int fake_signal_msi(struct irqchip *c, uint64_t addr, uint32_t data)
{
	(void)c;
	(void)addr;
	(void)data;
	return 0;
}
static const struct irqchip_ops fake_irq_ops = { .name = "fake", .set_level = fake_set_level,
						  .signal_msi = fake_signal_msi };

struct fx {
	struct vm *vm;
	uint8_t *ram;
	int sock, ifindex;
	uint64_t common, notify, device;
	uint32_t notify_mult;
};

struct dq {
	unsigned index;
	uint16_t size;
	uint64_t desc, avail, used;
	uint16_t avail_idx, used_seen, next_desc;
};

static struct fx F;

static void outl(uint16_t port, uint32_t v) { io_pio(&F.vm->io, port, &v, 4, true); }
static uint32_t cfg_read(unsigned off, unsigned size)
{
	outl(0xcf8, 0x80000000u | 1u << 11 | (off & 0xfc));
	uint32_t v = 0;
	io_pio(&F.vm->io, (uint16_t)(0xcfc + (off & 3)), &v, size, false);
	return v;
}
static uint64_t mmio_read(uint64_t gpa, unsigned size)
{
	uint64_t v = 0;
	io_mmio(&F.vm->io, gpa, &v, size, false);
	return v;
}
static void mmio_write(uint64_t gpa, unsigned size, uint64_t v) { io_mmio(&F.vm->io, gpa, &v, size, true); }
static void cw(unsigned off, unsigned size, uint64_t v) { mmio_write(F.common + off, size, v); }
static uint64_t cr(unsigned off, unsigned size) { return mmio_read(F.common + off, size); }

static void find_device(void)
{
	CHECK(cfg_read(0, 2) == 0x1af4);
	CHECK(cfg_read(2, 2) == 0x1040 + VIRTIO_ID_NET);
	CHECK(cfg_read(0x08, 4) >> 8 == 0x020000);   /* class: Ethernet */
	uint64_t bar4 = (cfg_read(0x20, 4) & ~0xfu) | (uint64_t)cfg_read(0x24, 4) << 32;
	for (unsigned off = cfg_read(PCI_CAPABILITY_LIST, 1), k = 0; off && k < 48; k++) {
		if (cfg_read(off, 1) == PCI_CAP_ID_VNDR) {
			unsigned type = cfg_read(off + 3, 1);
			uint64_t where = bar4 + cfg_read(off + 8, 4);
			if (type == 1)
				F.common = where;
			else if (type == 2) {
				F.notify = where;
				F.notify_mult = cfg_read(off + 16, 4);
			} else if (type == 4)
				F.device = where;
		}
		off = cfg_read(off + 1, 1);
	}
	CHECK(F.common && F.notify && F.device);
}

/* Create the VM, the tap (through the device) and the host-side socket. */
static void fx_setup(const char *extra)
{
	/* No IPv6 chatter from the kernel on the tap. */
	int fd = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY);
	if (fd >= 0) {
		CHECK(write(fd, "1", 1) == 1);
		close(fd);
	}
	struct vm *vm = calloc(1, sizeof(*vm));
	F.ram = calloc(1, RAM_SIZE);
	CHECK(vm && F.ram);
	io_bus_init(&vm->io);
	bus_init(&vm->bus);
	pthread_mutex_init(&vm->end_lock, NULL);
	vm->kvm_fd = vm->vm_fd = -1;
	vm->irq.ops = &fake_irq_ops;
	vm->mem.nregions = 1;
	vm->mem.region[0] = (struct mem_region){ 0, RAM_SIZE, 0, F.ram };
	vm->mem.ram_size = RAM_SIZE;
	vm->cfg.mem_size = RAM_SIZE;
	F.vm = vm;
	CHECK(pci_bus_create(vm) == 0);
	char spec[256];
	snprintf(spec, sizeof(spec), "tap=" TAP ",create=on,mac=0e:76:6d:00:00:01%s", extra ? extra : "");
	CHECK(virtio_net_attach(vm, spec) == 0);
	find_device();
	F.ifindex = (int)if_nametoindex(TAP);
	CHECK(F.ifindex > 0);
	F.sock = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
	CHECK(F.sock >= 0);
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = F.ifindex };
	CHECK(bind(F.sock, (struct sockaddr *)&sll, sizeof(sll)) == 0);
}

static void fx_teardown(void)
{
	close(F.sock);
	for (int i = (int)F.vm->ndevices - 1; i >= 0; i--)
		F.vm->devices[i].ops->destroy(F.vm->devices[i].dev);
	CHECK(F.vm->pci == NULL);
	io_bus_destroy(&F.vm->io);
	bus_cleanup(&F.vm->bus);
	free(F.vm);
	free(F.ram);
}

static void run_in_netns(void (*body)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0) {
			fprintf(stderr, "test_virtio_net: unshare(CLONE_NEWNET): %s\n", strerror(errno));
			_exit(SKIP_CODE);
		}
		if (access("/dev/net/tun", R_OK | W_OK) < 0) {
			fprintf(stderr, "test_virtio_net: /dev/net/tun: %s\n", strerror(errno));
			_exit(SKIP_CODE);
		}
		body();
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == SKIP_CODE) {
		print_message("no network namespace or tun here (needs root): skipped\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- fake driver ---- */

static bool negotiate(uint64_t want)
{
	cw(0x14, 1, 0);
	cw(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	cw(0x00, 4, 0);
	uint64_t offered = cr(0x04, 4);
	cw(0x00, 4, 1);
	offered |= cr(0x04, 4) << 32;
	CHECK((offered & want) == want);
	cw(0x08, 4, 0);
	cw(0x0c, 4, (uint32_t)want);
	cw(0x08, 4, 1);
	cw(0x0c, 4, (uint32_t)(want >> 32));
	cw(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	return cr(0x14, 1) & VIRTIO_STATUS_FEATURES_OK;
}

static void queue_setup(struct dq *q, unsigned index, uint16_t size)
{
	memset(q, 0, sizeof(*q));
	q->index = index;
	q->size = size;
	q->desc = 0x100000 + 0x10000 * index;
	q->avail = q->desc + 0x4000;
	q->used = q->desc + 0x8000;
	memset(F.ram + q->desc, 0, 0x10000);
	cw(0x16, 2, index);
	cw(0x18, 2, size);
	cw(0x1a, 2, VIRTIO_MSI_NO_VECTOR);
	cw(0x20, 8, q->desc);
	cw(0x28, 8, q->avail);
	cw(0x30, 8, q->used);
	cw(0x1c, 2, 1);
	CHECK(cr(0x1c, 2) == 1);
}

static void driver_ok(void)
{
	cw(0x14, 1, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
			    VIRTIO_STATUS_DRIVER_OK);
}

static bool needs_reset(void) { return cr(0x14, 1) & VIRTIO_STATUS_NEEDS_RESET; }

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool writable;
};

/* A direct chain of `n` segments made available; returns its head. */
static uint16_t add_chain(struct dq *q, const struct seg *s, unsigned n)
{
	uint16_t head = q->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t id = (uint16_t)((head + i) % q->size);
		uint16_t flags = (uint16_t)((s[i].writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		uint16_t next = (uint16_t)((id + 1) % q->size);
		uint8_t *p = F.ram + q->desc + 16 * id;
		memcpy(p, &s[i].gpa, 8);
		memcpy(p + 8, &s[i].len, 4);
		memcpy(p + 12, &flags, 2);
		memcpy(p + 14, &next, 2);
	}
	q->next_desc = (uint16_t)((head + n) % q->size);
	uint16_t *avail = (uint16_t *)(F.ram + q->avail);
	avail[2 + q->avail_idx % q->size] = head;
	q->avail_idx++;
	__atomic_store_n(&avail[1], q->avail_idx, __ATOMIC_RELEASE);
	return head;
}

static void kick(struct dq *q) { mmio_write(F.notify + F.notify_mult * q->index, 2, q->index); }

/* Next used entry within `ms`; false on timeout. */
static bool get_used(struct dq *q, uint32_t *id, uint32_t *len, int ms)
{
	volatile uint16_t *uidx = (volatile uint16_t *)(F.ram + q->used + 2);
	for (int i = 0; i < ms; i++) {
		if (__atomic_load_n(uidx, __ATOMIC_ACQUIRE) != q->used_seen) {
			uint32_t *e = (uint32_t *)(F.ram + q->used + 4 + 8 * (q->used_seen % q->size));
			*id = e[0];
			*len = e[1];
			q->used_seen++;
			return true;
		}
		usleep(1000);
	}
	return false;
}

static uint16_t used_idx(struct dq *q) { return __atomic_load_n((uint16_t *)(F.ram + q->used + 2), __ATOMIC_ACQUIRE); }

/* ---- host side ---- */

static size_t make_frame(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], size_t payload, uint8_t seed)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = ETH_TEST >> 8;
	f[13] = ETH_TEST & 0xff;
	for (size_t i = 0; i < payload; i++)
		f[14 + i] = (uint8_t)(seed + i * 7);
	return 14 + payload;
}

static void host_send(const uint8_t *f, size_t len)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = F.ifindex, .sll_halen = 6 };
	memcpy(sll.sll_addr, f, 6);
	CHECK(sendto(F.sock, f, len, 0, (struct sockaddr *)&sll, sizeof(sll)) == (ssize_t)len);
}

static size_t host_recv(uint8_t *buf, size_t cap)
{
	for (int tries = 0; tries < 100; tries++) {
		struct pollfd pfd = { .fd = F.sock, .events = POLLIN };
		CHECK(poll(&pfd, 1, 2000) == 1);
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(F.sock, buf, cap, 0, (struct sockaddr *)&from, &fl);
		CHECK(n >= 0);
		if (from.sll_pkttype == PACKET_OUTGOING || n < 14)
			continue;
		if ((buf[12] << 8 | buf[13]) == ETH_TEST)
			return (size_t)n;
	}
	CHECK(!"frame never arrived");
	return 0;
}

/* No test frame from the guest reaches the host within ms. */
static bool host_quiet(int ms)
{
	uint8_t buf[2048];
	struct pollfd pfd = { .fd = F.sock, .events = POLLIN };
	while (poll(&pfd, 1, ms) == 1) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(F.sock, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n >= 14 && from.sll_pkttype != PACKET_OUTGOING && (buf[12] << 8 | buf[13]) == ETH_TEST)
			return false;
	}
	return true;
}

/* A service-bus gate on net.tx (docs/bus.md): denies while deny_tx is set. */
static int deny_tx;
static uint32_t gated_len;
static enum bus_verdict tx_gate(void *opaque, struct bus_event *ev)
{
	(void)opaque;
	__atomic_store_n(&gated_len, ev->u.net.len, __ATOMIC_RELAXED);
	return __atomic_load_n(&deny_tx, __ATOMIC_RELAXED) ? BUS_DENY : BUS_ALLOW;
}

#define TX_BUF 0x400000
#define RX_BUF 0x500000
#define CTRL_BUF 0x600000

/* Guest transmits one frame as [header][frame] in two segments. */
static void guest_send(struct dq *tx, const uint8_t *frame, size_t len)
{
	memset(F.ram + TX_BUF, 0, NET_VNET_HDR_LEN);
	memcpy(F.ram + TX_BUF + 0x100, frame, len);
	struct seg s[2] = { { TX_BUF, NET_VNET_HDR_LEN, false }, { TX_BUF + 0x100, (uint32_t)len, false } };
	add_chain(tx, s, 2);
	kick(tx);
}

/* ---- tests ---- */

static void body_config_tx(void)
{
	fx_setup(NULL);
	CHECK(cr(0x12, 2) == 3);   /* rx, tx, ctrl */
	CHECK(negotiate(BASE_FEATURES | BIT(F_CSUM)));
	for (int i = 0; i < 6; i++)
		CHECK(mmio_read(F.device + i, 1) == guest_mac[i]);
	CHECK(mmio_read(F.device + 6, 2) == 1);   /* link up */
	CHECK(mmio_read(F.device + 8, 2) == 1);   /* max_virtqueue_pairs */
	struct dq rx, tx;
	queue_setup(&rx, 0, 16);
	queue_setup(&tx, 1, 16);
	driver_ok();
	uint8_t f[1600], got[2048];
	for (unsigned k = 0; k < 20; k++) {
		size_t len = make_frame(f, host_mac, guest_mac, 46 + k * 61, (uint8_t)k);
		guest_send(&tx, f, len);
		size_t n = host_recv(got, sizeof(got));
		CHECK(n == len && memcmp(got, f, len) == 0);
		uint32_t id, ulen;
		CHECK(get_used(&tx, &id, &ulen, 2000));
		CHECK(ulen == 0);
	}
	/* A gate subscribed while the device runs: a denied frame is completed
	 * for the guest but never reaches the tap; once allowed, frames flow. */
	int gid = bus_subscribe_gate(&F.vm->bus, BUS_MASK(BUS_EV_NET_TX), 0, tx_gate, NULL);
	CHECK(gid > 0);
	__atomic_store_n(&deny_tx, 1, __ATOMIC_RELAXED);
	size_t len = make_frame(f, host_mac, guest_mac, 100, 0x55);
	guest_send(&tx, f, len);
	uint32_t id, ulen;
	CHECK(get_used(&tx, &id, &ulen, 2000));
	CHECK(host_quiet(300));
	CHECK(__atomic_load_n(&gated_len, __ATOMIC_RELAXED) == len);
	__atomic_store_n(&deny_tx, 0, __ATOMIC_RELAXED);
	guest_send(&tx, f, len);
	CHECK(host_recv(got, sizeof(got)) == len && memcmp(got, f, len) == 0);
	CHECK(get_used(&tx, &id, &ulen, 2000));
	bus_unsubscribe(&F.vm->bus, gid);
	CHECK(!needs_reset());
	fx_teardown();
}

static void test_config_tx(void **state)
{
	(void)state;
	run_in_netns(body_config_tx);
}

/* Host frame -> guest buffer, checked byte for byte; returns the used length. */
static uint32_t expect_rx(struct dq *rx, uint64_t buf_gpa, const uint8_t *f, size_t len)
{
	uint32_t id, ulen;
	CHECK(get_used(rx, &id, &ulen, 2000));
	CHECK(ulen == NET_VNET_HDR_LEN + len);
	const uint8_t *b = F.ram + buf_gpa;
	CHECK((b[10] | b[11] << 8) == 1);   /* num_buffers */
	CHECK(memcmp(b + NET_VNET_HDR_LEN, f, len) == 0);
	return ulen;
}

/* fx_setup, then a driver that negotiated `features` and set up the RX and TX
 * queues (16 entries each) up to DRIVER_OK. */
static void fx_ready(const char *extra, uint64_t features, struct dq *rx, struct dq *tx)
{
	fx_setup(extra);
	CHECK(negotiate(features));
	queue_setup(rx, 0, 16);
	queue_setup(tx, 1, 16);
	driver_ok();
}

static void body_rx_plain(void)
{
	struct dq rx, tx;
	fx_ready(NULL, BASE_FEATURES, &rx, &tx);
	/* A small buffer first: a frame too big for it is dropped, the buffer reused. */
	struct seg small = { RX_BUF, 64, true };
	add_chain(&rx, &small, 1);
	kick(&rx);
	uint8_t f[1600];
	size_t len = make_frame(f, guest_mac, host_mac, 200, 1);
	host_send(f, len);
	uint32_t id, ulen;
	CHECK(!get_used(&rx, &id, &ulen, 200));
	len = make_frame(f, guest_mac, host_mac, 30, 2);
	host_send(f, len);
	expect_rx(&rx, RX_BUF, f, len);
	/* Buffers split into header + body segments. */
	for (unsigned i = 0; i < 4; i++) {
		struct seg s[2] = { { RX_BUF + 0x1000 * (i + 1), NET_VNET_HDR_LEN, true },
				    { RX_BUF + 0x1000 * (i + 1) + NET_VNET_HDR_LEN, 1514, true } };
		add_chain(&rx, s, 2);
	}
	kick(&rx);
	for (unsigned i = 0; i < 4; i++) {
		len = make_frame(f, i == 3 ? bcast : guest_mac, host_mac, 46 + 300 * i, (uint8_t)(10 + i));
		host_send(f, len);
		expect_rx(&rx, RX_BUF + 0x1000 * (i + 1), f, len);
	}
	/* No buffers left: a frame waits in the tap until the guest posts one. */
	len = make_frame(f, guest_mac, host_mac, 100, 20);
	host_send(f, len);
	CHECK(!get_used(&rx, &id, &ulen, 100));
	struct seg s = { RX_BUF + 0x8000, 2048, true };
	add_chain(&rx, &s, 1);
	kick(&rx);
	expect_rx(&rx, RX_BUF + 0x8000, f, len);
	CHECK(!needs_reset());
	fx_teardown();
}

static void test_rx_plain(void **state)
{
	(void)state;
	run_in_netns(body_rx_plain);
}

/* Snapshot hold: after quiesce, and after a load, no frame reaches guest memory
 * until the device's resume op runs (the VM runs again). */
static void body_snapshot_hold(void)
{
	struct dq rx, tx;
	fx_ready(NULL, BASE_FEATURES, &rx, &tx);
	struct device *dev = &F.vm->devices[F.vm->ndevices - 1];
	CHECK(!strcmp(dev->ops->name, "virtio-net") && dev->ops->quiesce && dev->ops->resume);
	for (unsigned i = 0; i < 4; i++) {
		struct seg s = { RX_BUF + 0x1000 * i, 2048, true };
		add_chain(&rx, &s, 1);
	}
	kick(&rx);
	uint8_t f[256];
	uint32_t id, ulen;
	/* 1. quiesce, save: a frame waits in the tap; resume delivers it. */
	CHECK(dev->ops->quiesce(dev->dev) == 0);
	void *blob;
	size_t blen;
	CHECK(dev->ops->save(dev->dev, &blob, &blen) == 0);
	size_t len = make_frame(f, guest_mac, host_mac, 60, 30);
	host_send(f, len);
	CHECK(!get_used(&rx, &id, &ulen, 200));
	dev->ops->resume(dev->dev);
	expect_rx(&rx, RX_BUF, f, len);
	/* 2. load the saved state into the running (not held) device, as a restore
	 * does into a fresh one; used index back to 0, in guest RAM too: held until
	 * resume, then the frame goes to the first buffer again. */
	rx.used_seen = 0;
	memset(F.ram + rx.used + 2, 0, 2);   /* guest RAM as it was at the save */
	CHECK(dev->ops->load(dev->dev, blob, blen) == 0);
	free(blob);
	len = make_frame(f, guest_mac, host_mac, 80, 31);
	host_send(f, len);
	CHECK(!get_used(&rx, &id, &ulen, 200));
	dev->ops->resume(dev->dev);
	expect_rx(&rx, RX_BUF, f, len);
	CHECK(!needs_reset());
	fx_teardown();
}

static void test_snapshot_hold(void **state)
{
	(void)state;
	run_in_netns(body_snapshot_hold);
}

static void body_rx_mergeable(void)
{
	struct dq rx, tx;
	fx_ready(NULL, BASE_FEATURES | BIT(F_MRG_RXBUF), &rx, &tx);
	/* Two 256-byte buffers: a 1000-byte frame (1012 with the header) needs four. */
	for (unsigned i = 0; i < 2; i++) {
		struct seg s = { RX_BUF + 0x1000 * i, 256, true };
		add_chain(&rx, &s, 1);
	}
	kick(&rx);
	uint8_t f[1600];
	size_t len = make_frame(f, guest_mac, host_mac, 986, 3);
	CHECK(len == 1000);
	host_send(f, len);
	usleep(200000);
	CHECK(used_idx(&rx) == 0);   /* nothing published before the frame is complete */
	for (unsigned i = 2; i < 6; i++) {
		struct seg s = { RX_BUF + 0x1000 * i, 256, true };
		add_chain(&rx, &s, 1);
	}
	kick(&rx);
	uint8_t joined[2048];
	size_t total = 0;
	for (unsigned i = 0; i < 4; i++) {
		uint32_t id, ulen;
		CHECK(get_used(&rx, &id, &ulen, 2000));
		CHECK(id == i);
		CHECK(ulen == (i < 3 ? 256u : 1012u - 768u));
		memcpy(joined + total, F.ram + RX_BUF + 0x1000 * i, ulen);
		total += ulen;
	}
	CHECK(total == 1012);
	CHECK((joined[10] | joined[11] << 8) == 4);   /* num_buffers */
	CHECK(memcmp(joined + NET_VNET_HDR_LEN, f, len) == 0);
	/* A small frame takes one of the remaining buffers, num_buffers 1. */
	len = make_frame(f, guest_mac, host_mac, 50, 4);
	host_send(f, len);
	uint32_t id, ulen;
	CHECK(get_used(&rx, &id, &ulen, 2000));
	CHECK(id == 4 && ulen == NET_VNET_HDR_LEN + len);
	const uint8_t *b = F.ram + RX_BUF + 0x4000;
	CHECK((b[10] | b[11] << 8) == 1 && memcmp(b + NET_VNET_HDR_LEN, f, len) == 0);
	CHECK(!needs_reset());
	fx_teardown();
}

static void test_rx_mergeable(void **state)
{
	(void)state;
	run_in_netns(body_rx_mergeable);
}

/* ---- control queue ---- */

static int rxmode_events;
static struct bus_event last_ev;
static void on_rxmode(void *opaque, const struct bus_event *ev)
{
	(void)opaque;
	last_ev = *ev;
	__atomic_fetch_add(&rxmode_events, 1, __ATOMIC_SEQ_CST);
}

/* Send a control command (header + data readable, one ack byte writable) and return
 * the ack; -1 if the device returned the chain without writing an ack. */
static int ctrl(struct dq *q, const uint8_t *cmd, size_t len, unsigned ack_len)
{
	uint8_t *b = F.ram + CTRL_BUF;
	memcpy(b, cmd, len);
	b[0x800] = 0xee;
	struct seg s[2] = { { CTRL_BUF, (uint32_t)len, false }, { CTRL_BUF + 0x800, ack_len, true } };
	add_chain(q, s, ack_len ? 2 : 1);
	kick(q);
	uint32_t id, ulen;
	CHECK(get_used(q, &id, &ulen, 2000));
	if (ulen == 0)
		return -1;
	CHECK(ulen == 1);
	return b[0x800];
}

static void body_ctrl(void)
{
	fx_setup(NULL);
	CHECK(bus_subscribe(&F.vm->bus, BUS_MASK(BUS_EV_NET_RXMODE), NULL, on_rxmode, NULL) >= 0);
	CHECK(!strcmp(bus_event_name(BUS_EV_NET_RXMODE), "net.rxmode"));
	CHECK(negotiate(BASE_FEATURES | BIT(F_CTRL_VQ) | BIT(F_CTRL_RX) | BIT(F_CTRL_MAC_ADDR)));
	struct dq rx, tx, cq;
	queue_setup(&rx, 0, 16);
	queue_setup(&tx, 1, 16);
	queue_setup(&cq, 2, 16);
	driver_ok();

	const uint8_t promisc_on[] = { 0, 0, 1 }, promisc_off[] = { 0, 0, 0 }, allmulti_on[] = { 0, 1, 1 };
	CHECK(ctrl(&cq, promisc_on, 3, 1) == 0);
	CHECK(__atomic_load_n(&rxmode_events, __ATOMIC_SEQ_CST) == 1);
	CHECK(last_ev.type == BUS_EV_NET_RXMODE && last_ev.u.net_rxmode.dev == 0 && last_ev.u.net_rxmode.promisc &&
	      !last_ev.u.net_rxmode.allmulti);
	CHECK(ctrl(&cq, allmulti_on, 3, 1) == 0);
	CHECK(rxmode_events == 2 && last_ev.u.net_rxmode.promisc && last_ev.u.net_rxmode.allmulti);

	/* Malformed: all ERR, no event, no NEEDS_RESET. */
	const uint8_t promisc_long[] = { 0, 0, 1, 1 }, unknown_class[] = { 9, 0, 0 }, unknown_rx[] = { 0, 9, 1 };
	const uint8_t one_byte[] = { 0 }, mq[] = { 4, 0, 1, 0 };
	CHECK(ctrl(&cq, promisc_long, 4, 1) == 1);
	CHECK(ctrl(&cq, promisc_on, 2, 1) == 1);
	CHECK(ctrl(&cq, unknown_class, 3, 1) == 1);
	CHECK(ctrl(&cq, unknown_rx, 3, 1) == 1);
	CHECK(ctrl(&cq, one_byte, 1, 1) == 1);
	CHECK(ctrl(&cq, mq, 4, 1) == 1);
	/* MAC table: counts that do not add up, huge counts. */
	uint8_t tbl[64] = { 1, 0 };
	tbl[2] = 1;                       /* 1 unicast entry */
	memcpy(tbl + 6, other_mac, 6);
	tbl[12] = 0;                      /* 0 multicast entries */
	CHECK(ctrl(&cq, tbl, 2 + 4 + 6 + 4, 1) == 0);
	CHECK(ctrl(&cq, tbl, 2 + 4 + 6 + 3, 1) == 1);
	CHECK(ctrl(&cq, tbl, 2 + 4 + 6 + 5, 1) == 1);
	tbl[2] = 0xff; tbl[3] = 0xff; tbl[4] = 0xff; tbl[5] = 0xff;
	CHECK(ctrl(&cq, tbl, 2 + 4 + 6 + 4, 1) == 1);
	tbl[2] = 1; tbl[3] = tbl[4] = tbl[5] = 0;
	/* MAC_ADDR_SET: multicast refused; VLAN and ANNOUNCE acknowledged. */
	const uint8_t mac_mc[] = { 1, 1, 0x01, 0, 0, 0, 0, 1 }, vlan[] = { 2, 0, 5, 0 }, vlan_bad[] = { 2, 0, 0xff, 0xff };
	const uint8_t announce[] = { 3, 0 };
	CHECK(ctrl(&cq, mac_mc, sizeof(mac_mc), 1) == 1);
	CHECK(ctrl(&cq, vlan, sizeof(vlan), 1) == 0);
	CHECK(ctrl(&cq, vlan_bad, sizeof(vlan_bad), 1) == 1);
	CHECK(ctrl(&cq, announce, sizeof(announce), 1) == 0);
	/* No writable ack byte: returned unanswered. */
	CHECK(ctrl(&cq, promisc_on, 3, 0) == -1);
	CHECK(rxmode_events == 2);
	CHECK(!needs_reset());

	/* Receive filter: promiscuous off, all-multicast on, other_mac in the table. */
	CHECK(ctrl(&cq, promisc_off, 3, 1) == 0);
	CHECK(rxmode_events == 3 && !last_ev.u.net_rxmode.promisc && last_ev.u.net_rxmode.allmulti);
	const uint8_t mac_set_empty[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	CHECK(ctrl(&cq, mac_set_empty, sizeof(mac_set_empty), 1) == 0);
	for (unsigned i = 0; i < 4; i++) {
		struct seg s = { RX_BUF + 0x1000 * i, 2048, true };
		add_chain(&rx, &s, 1);
	}
	kick(&rx);
	uint8_t f[256];
	size_t len = make_frame(f, other_mac, host_mac, 60, 1);
	host_send(f, len);   /* filtered */
	const uint8_t mcast[6] = { 0x01, 0x00, 0x5e, 0, 0, 1 };
	len = make_frame(f, mcast, host_mac, 61, 2);
	host_send(f, len);   /* all-multicast: delivered */
	expect_rx(&rx, RX_BUF, f, len);
	len = make_frame(f, guest_mac, host_mac, 62, 3);
	host_send(f, len);
	expect_rx(&rx, RX_BUF + 0x1000, f, len);
	/* New MAC through MAC_ADDR_SET: config space follows, filter follows. */
	const uint8_t mac_set[] = { 1, 1, 0x0e, 0x76, 0x6d, 0, 0, 9 };
	CHECK(ctrl(&cq, mac_set, sizeof(mac_set), 1) == 0);
	CHECK(mmio_read(F.device + 5, 1) == 9);
	len = make_frame(f, guest_mac, host_mac, 63, 4);
	host_send(f, len);   /* old MAC: filtered now */
	len = make_frame(f, mac_set + 2, host_mac, 64, 5);
	host_send(f, len);
	expect_rx(&rx, RX_BUF + 0x2000, f, len);
	CHECK(!needs_reset());

	/* Reset: back to defaults (promisc/allmulti off, event), original MAC. */
	cw(0x14, 1, 0);
	CHECK(rxmode_events == 4 && !last_ev.u.net_rxmode.promisc && !last_ev.u.net_rxmode.allmulti);
	CHECK(mmio_read(F.device + 5, 1) == 1);
	fx_teardown();
}

static void test_ctrl(void **state)
{
	(void)state;
	run_in_netns(body_ctrl);
}

/* Hostile chains: too short, too long, writable TX, tiny RX buffers. */
static void body_hostile(void)
{
	struct dq rx, tx;
	fx_ready(NULL, BASE_FEATURES | BIT(F_MRG_RXBUF), &rx, &tx);
	uint32_t id, ulen;
	/* TX: 4 bytes (less than the header); 70000 bytes (above 64 KiB + header). */
	struct seg s1 = { TX_BUF, 4, false };
	add_chain(&tx, &s1, 1);
	struct seg s2[2] = { { TX_BUF, 12, false }, { 0x800000, 70000, false } };
	add_chain(&tx, s2, 2);
	/* TX with only a writable segment. */
	struct seg s3 = { TX_BUF, 100, true };
	add_chain(&tx, &s3, 1);
	kick(&tx);
	for (int i = 0; i < 3; i++) {
		CHECK(get_used(&tx, &id, &ulen, 2000));
		CHECK(ulen == 0);
	}
	/* RX: an 8-byte buffer is returned unused; a 1-segment 12-byte one takes the
	 * header and the frame spills into the next. */
	struct seg r1 = { RX_BUF, 8, true };
	add_chain(&rx, &r1, 1);
	struct seg r2 = { RX_BUF + 0x1000, 12, true }, r3 = { RX_BUF + 0x2000, 2048, true };
	add_chain(&rx, &r2, 1);
	add_chain(&rx, &r3, 1);
	kick(&rx);
	CHECK(get_used(&rx, &id, &ulen, 2000));
	CHECK(id == 0 && ulen == 0);
	uint8_t f[256];
	size_t len = make_frame(f, guest_mac, host_mac, 100, 7);
	host_send(f, len);
	CHECK(get_used(&rx, &id, &ulen, 2000));
	CHECK(id == 1 && ulen == 12);
	CHECK((F.ram[RX_BUF + 0x1000 + 10]) == 2);
	CHECK(get_used(&rx, &id, &ulen, 2000));
	CHECK(id == 2 && ulen == len && memcmp(F.ram + RX_BUF + 0x2000, f, len) == 0);
	/* The device still works. */
	len = make_frame(f, host_mac, guest_mac, 80, 8);
	guest_send(&tx, f, len);
	uint8_t got[2048];
	CHECK(host_recv(got, sizeof(got)) == len && memcmp(got, f, len) == 0);
	CHECK(!needs_reset());
	/* A writable descriptor before a readable one breaks the queue: NEEDS_RESET. */
	struct seg bad[2] = { { TX_BUF, 12, true }, { TX_BUF + 0x100, 60, false } };
	add_chain(&tx, bad, 2);
	kick(&tx);
	for (int i = 0; i < 2000 && !needs_reset(); i++)
		usleep(1000);
	CHECK(needs_reset());
	/* Reset and start over. */
	cw(0x14, 1, 0);
	CHECK(cr(0x14, 1) == 0);
	CHECK(negotiate(BASE_FEATURES));
	queue_setup(&rx, 0, 16);
	queue_setup(&tx, 1, 16);
	driver_ok();
	guest_send(&tx, f, len);
	CHECK(host_recv(got, sizeof(got)) == len && memcmp(got, f, len) == 0);
	fx_teardown();
}

static void test_hostile(void **state)
{
	(void)state;
	run_in_netns(body_hostile);
}

/* Capture: both directions in a pcap; link status follows the host interface. */
static char pcap_path[256];
static void body_capture_link(void)
{
	char extra[300];
	snprintf(extra, sizeof(extra), ",capture=%s", pcap_path);
	struct dq rx, tx;
	fx_ready(extra, BASE_FEATURES, &rx, &tx);
	struct seg s = { RX_BUF, 2048, true };
	add_chain(&rx, &s, 1);
	kick(&rx);
	uint8_t f[256], got[2048];
	size_t len = make_frame(f, host_mac, guest_mac, 100, 1);
	guest_send(&tx, f, len);
	CHECK(host_recv(got, sizeof(got)) == len);
	size_t len2 = make_frame(f, guest_mac, host_mac, 77, 2);
	host_send(f, len2);
	expect_rx(&rx, RX_BUF, f, len2);
	/* Link down on the host: status follows within the poll period. */
	CHECK(system("ip link set " TAP " down") == 0);
	bool down = false;
	for (int i = 0; i < 3000 && !down; i++) {
		down = (mmio_read(F.device + 6, 2) & 1) == 0;
		usleep(1000);
	}
	CHECK(down);
	fx_teardown();
	/* Two records: 100+14 bytes out, 77+14 in (header 24, record headers 16). */
	struct stat st;
	CHECK(stat(pcap_path, &st) == 0);
	CHECK(st.st_size == 24 + 16 + 114 + 16 + 91);
}

static void test_capture_link(void **state)
{
	(void)state;
	snprintf(pcap_path, sizeof(pcap_path), "/tmp/test_virtio_net.%d.pcap", (int)getpid());
	run_in_netns(body_capture_link);
	unlink(pcap_path);
}

/* Attach errors: bad spec, missing tap without create. */
static void body_attach_errors(void)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	CHECK(vm);
	io_bus_init(&vm->io);
	bus_init(&vm->bus);
	vm->kvm_fd = vm->vm_fd = -1;
	vm->irq.ops = &fake_irq_ops;
	CHECK(pci_bus_create(vm) == 0);
	CHECK(virtio_net_attach(vm, "tap=x,bogus=1") == -EINVAL);
	CHECK(virtio_net_attach(vm, "tap=nosuchtap0") < 0);
	CHECK(strstr(err_msg(), "nosuchtap0") != NULL);
	CHECK(vm->ndevices == 1);   /* only the PCI bus */
	vm->devices[0].ops->destroy(vm->devices[0].dev);
	io_bus_destroy(&vm->io);
	free(vm);
}

static void test_attach_errors(void **state)
{
	(void)state;
	run_in_netns(body_attach_errors);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_tx),   cmocka_unit_test(test_rx_plain),
		cmocka_unit_test(test_rx_mergeable), cmocka_unit_test(test_ctrl),
		cmocka_unit_test(test_hostile),     cmocka_unit_test(test_capture_link),
		cmocka_unit_test(test_attach_errors), cmocka_unit_test(test_snapshot_hold),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
