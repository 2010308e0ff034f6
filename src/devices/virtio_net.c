/* virtio-net (virtio 1.2, 5.1) on a tap: device set-up from a --net spec, feature
 * negotiation and offloads, configuration space (MAC, link status), the link poll,
 * reset and save/load. The data path is in virtio_net_rxtx.c, the control queue and
 * receive filter in virtio_net_ctrl.c. Choices: docs/devices.md "virtio-net". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/iothread.h>
#include <vmsvc/vm.h>
#include "virtio_net_internal.h"

#define VNET_LINK_POLL_SEC 1

static const struct device_ops vnet_device_ops;

/* ---- configuration space (vCPU threads) ---- */

static void vnet_config_read(void *opaque, unsigned offset, void *data, unsigned size)
{
	struct vnet *n = opaque;
	uint8_t img[VNET_CFG_SIZE] = { 0 };
	pthread_mutex_lock(&n->cfg_lock);
	memcpy(img + VNET_CFG_MAC, n->mac, 6);
	img[VNET_CFG_STATUS] = (uint8_t)n->status;
	img[VNET_CFG_STATUS + 1] = (uint8_t)(n->status >> 8);
	pthread_mutex_unlock(&n->cfg_lock);
	img[VNET_CFG_MAX_PAIRS] = 1;
	img[VNET_CFG_MTU] = 1500 & 0xff;   /* informative only: F_MTU is not offered */
	img[VNET_CFG_MTU + 1] = 1500 >> 8;
	if (offset < VNET_CFG_SIZE && size <= VNET_CFG_SIZE - offset)
		memcpy(data, img + offset, size);
	else
		memset(data, 0, size);
}

/* The MAC is read-only for a VERSION_1 driver (it uses CTRL_MAC_ADDR_SET). */
static void vnet_config_write(void *opaque, unsigned offset, const void *data, unsigned size)
{
	(void)opaque;
	(void)offset;
	(void)data;
	(void)size;
}

/* ---- negotiation, activation, reset (I/O thread) ---- */

static uint64_t offered_features(const struct net_tap *tap)
{
	unsigned sup = net_tap_supported_offloads(tap);
	/* Guest transmit offloads need no tap set-up (the tap takes NEEDS_CSUM and GSO
	 * frames); UFO only where the kernel still segments UDP from a tap. */
	uint64_t f = VNET_BIT(VIRTIO_NET_F_MAC) | VNET_BIT(VIRTIO_NET_F_STATUS) | VNET_BIT(VIRTIO_NET_F_CTRL_VQ) |
		     VNET_BIT(VIRTIO_NET_F_CTRL_RX) | VNET_BIT(VIRTIO_NET_F_CTRL_RX_EXTRA) |
		     VNET_BIT(VIRTIO_NET_F_CTRL_MAC_ADDR) | VNET_BIT(VIRTIO_NET_F_MRG_RXBUF) |
		     VNET_BIT(VIRTIO_NET_F_CSUM) | VNET_BIT(VIRTIO_NET_F_HOST_TSO4) | VNET_BIT(VIRTIO_NET_F_HOST_TSO6) |
		     VNET_BIT(VIRTIO_NET_F_HOST_ECN);
	if (sup & NET_OFF_UFO)
		f |= VNET_BIT(VIRTIO_NET_F_HOST_UFO);
	/* Receive offloads: only what the tap can be told to hand us. */
	if (sup & NET_OFF_CSUM) {
		f |= VNET_BIT(VIRTIO_NET_F_GUEST_CSUM);
		if (sup & NET_OFF_TSO4)
			f |= VNET_BIT(VIRTIO_NET_F_GUEST_TSO4);
		if (sup & NET_OFF_TSO6)
			f |= VNET_BIT(VIRTIO_NET_F_GUEST_TSO6);
		if ((sup & NET_OFF_ECN) && (sup & (NET_OFF_TSO4 | NET_OFF_TSO6)))
			f |= VNET_BIT(VIRTIO_NET_F_GUEST_ECN);
		if (sup & NET_OFF_UFO)
			f |= VNET_BIT(VIRTIO_NET_F_GUEST_UFO);
	}
	return f;
}

static void apply_offloads(struct vnet *n, uint64_t f)
{
	bool csum = f & VNET_BIT(VIRTIO_NET_F_GUEST_CSUM);
	int r = net_tap_set_offloads(n->tap, csum, f & VNET_BIT(VIRTIO_NET_F_GUEST_TSO4),
				     f & VNET_BIT(VIRTIO_NET_F_GUEST_TSO6), f & VNET_BIT(VIRTIO_NET_F_GUEST_ECN),
				     f & VNET_BIT(VIRTIO_NET_F_GUEST_UFO));
	if (r < 0)
		log_warn("%s: setting tap offloads: %s", n->name, err_msg());
}

static int vnet_activate(void *opaque)
{
	struct vnet *n = opaque;
	n->features = virtio_features(n->vdev);
	apply_offloads(n, n->features);
	n->active = true;
	/* The transport now calls queue_notify for every ready queue: RX starts there. */
	return 0;
}

static void vnet_reset_state(void *opaque)
{
	struct vnet *n = opaque;
	n->active = false;
	vnet_drop_inflight(n, false);
	n->rx_wanted = false;
	vnet_update_tap_watch(n);
	n->features = 0;
	apply_offloads(n, 0);
	vnet_rxmode_reset(n);
	pthread_mutex_lock(&n->cfg_lock);
	memcpy(n->mac, n->mac_initial, 6);
	pthread_mutex_unlock(&n->cfg_lock);
}

static void vnet_queue_notify(void *opaque, struct virtq *vq)
{
	struct vnet *n = opaque;
	switch (vq->index) {
	case VNET_RXQ: vnet_rx(n); break;
	case VNET_TXQ: vnet_tx(n); break;
	case VNET_CTRLQ: vnet_ctrl(n, vq); break;
	}
}

static const struct virtio_dev_ops vnet_virtio_ops = {
	.config_read = vnet_config_read,
	.config_write = vnet_config_write,
	.activate = vnet_activate,
	.reset = vnet_reset_state,
	.queue_notify = vnet_queue_notify,
};

/* ---- link status poll and TX reschedule (I/O thread) ---- */

static void vnet_link_poll(void *opaque, int fd, uint32_t events)
{
	(void)events;
	struct vnet *n = opaque;
	uint64_t ticks;
	if (read(fd, &ticks, sizeof(ticks)) < 0)
		return;
	int up = net_tap_link_up(n->tap);
	uint16_t st = up > 0 ? VIRTIO_NET_S_LINK_UP : 0;
	pthread_mutex_lock(&n->cfg_lock);
	bool changed = st != n->status;
	n->status = st;
	pthread_mutex_unlock(&n->cfg_lock);
	if (changed) {
		log_info("%s: link %s (%s)", n->name, st ? "up" : "down", net_tap_ifname(n->tap));
		virtio_config_changed(n->vdev);
	}
	/* RX paused after a tap read error (or a lost kick): retry once a second. */
	if (n->active && !n->rx_wanted)
		vnet_rx(n);
}

static void vnet_resched(void *opaque, int fd, uint32_t events)
{
	(void)events;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0)
		return;
	vnet_tx(opaque);
}

/* ---- device ops ---- */

static void vnet_free(struct vnet *n)
{
	/* The I/O thread is gone (or never started): nothing else touches n. */
	if (n->rx_elems)
		for (unsigned i = 0; i < n->rx_nelem; i++)
			free(n->rx_elems[i]);
	free(n->tx_blocked);
	if (n->timer_fd >= 0)
		close(n->timer_fd);
	if (n->resched_fd >= 0)
		close(n->resched_fd);
	net_tap_close(n->tap);
	if (n->pcap && net_pcap_close(n->pcap) < 0)
		log_warn("%s: capture: %s", n->name, err_msg());
	pthread_mutex_destroy(&n->cfg_lock);
	free(n->bounce);
	free(n->rx_elems);
	free(n->rx_lens);
	free(n);
}

/* Before the transport goes away: no callback of ours may run any more. */
static void vnet_stop(void *opaque)
{
	struct vnet *n = opaque;
	struct iothread *it = virtio_iothread(n->vdev);
	n->active = false;
	vnet_drop_inflight(n, false);
	n->rx_wanted = false;
	vnet_update_tap_watch(n);
	if (n->timer_fd >= 0)
		iothread_del_fd(it, n->timer_fd);
	if (n->resched_fd >= 0)
		iothread_del_fd(it, n->resched_fd);
}

static void vnet_destroy(void *dev)
{
	struct vnet *n = dev;
	iothread_run_sync(virtio_iothread(n->vdev), vnet_stop, n);
	virtio_pci_destroy(n->vdev);   /* stops the I/O thread */
	vnet_free(n);
}

static void vnet_vm_reset(void *dev)
{
	struct vnet *n = dev;
	virtio_pci_reset(n->vdev);
}

/* Device blob: "VNT1", mac[6], rx mode bits, table sizes and entries, then the
 * transport's blob. Chains popped but not completed (a spilled mergeable frame, a
 * TX chain the tap refused) are given back to the rings first so that the guest
 * sees them again after load; the spilled frame is dropped. */
#define VNET_STATE_MAGIC "VNT1"
struct vnet_state {
	char magic[4];
	uint8_t mac[6];
	uint8_t rxbits;
	uint8_t overflow;   /* bit 0 uni, bit 1 multi */
	uint8_t uni_n, multi_n;
	uint8_t uni[VNET_MAC_TABLE][6], multi[VNET_MAC_TABLE][6];
} __attribute__((packed));

/* Held: no frame may land in guest memory, and no TX chain be consumed, from
 * the snapshot until the VM runs again (vnet_resume). Chains popped but not
 * completed go back to the rings. Frames arriving meanwhile wait in the tap. */
static void vnet_hold(void *opaque)
{
	struct vnet *n = opaque;
	n->held = true;
	vnet_drop_inflight(n, true);
	vnet_update_tap_watch(n);
}

static int vnet_quiesce(void *dev)
{
	struct vnet *n = dev;
	virtio_pci_hold(n->vdev, true);
	iothread_run_sync(virtio_iothread(n->vdev), vnet_hold, n);
	return 0;
}

/* The VM runs again: carry on (the chains given back are popped again). */
static void vnet_release(void *opaque)
{
	struct vnet *n = opaque;
	if (!n->held)
		return;
	n->held = false;
	vnet_tx(n);
	vnet_rx(n);
}

static void vnet_resume(void *dev)
{
	struct vnet *n = dev;
	iothread_run_sync(virtio_iothread(n->vdev), vnet_release, n);
	virtio_pci_hold(n->vdev, false);
}

static int vnet_save(void *dev, void **buf, size_t *len)
{
	struct vnet *n = dev;
	/* Normally done by quiesce already; the hold lasts until vnet_resume. */
	iothread_run_sync(virtio_iothread(n->vdev), vnet_hold, n);
	void *tb;
	size_t tlen;
	int r = virtio_pci_save(n->vdev, &tb, &tlen);
	if (r < 0)
		return r;
	struct vnet_state s;
	memset(&s, 0, sizeof(s));
	memcpy(s.magic, VNET_STATE_MAGIC, 4);
	pthread_mutex_lock(&n->cfg_lock);
	memcpy(s.mac, n->mac, 6);
	pthread_mutex_unlock(&n->cfg_lock);
	s.rxbits = (uint8_t)(n->rx.promisc | n->rx.allmulti << 1 | n->rx.alluni << 2 | n->rx.nomulti << 3 |
			     n->rx.nouni << 4 | n->rx.nobcast << 5);
	s.overflow = (uint8_t)(n->uni_overflow | n->multi_overflow << 1);
	s.uni_n = (uint8_t)n->uni_n;
	s.multi_n = (uint8_t)n->multi_n;
	memcpy(s.uni, n->uni, sizeof(s.uni));
	memcpy(s.multi, n->multi, sizeof(s.multi));
	uint8_t *out = malloc(sizeof(s) + tlen);
	if (!out) {
		free(tb);
		return err_set(ENOMEM, "%s: out of memory", n->name);
	}
	memcpy(out, &s, sizeof(s));
	memcpy(out + sizeof(s), tb, tlen);
	free(tb);
	*buf = out;
	*len = sizeof(s) + tlen;
	return 0;
}

struct vnet_load_req {
	struct vnet *n;
	const struct vnet_state *s;
};

static void vnet_apply_state(void *opaque)
{
	struct vnet_load_req *req = opaque;
	struct vnet *n = req->n;
	const struct vnet_state *s = req->s;
	pthread_mutex_lock(&n->cfg_lock);
	memcpy(n->mac, s->mac, 6);
	pthread_mutex_unlock(&n->cfg_lock);
	n->rx = (struct vnet_rxmode){ s->rxbits & 1, s->rxbits & 2, s->rxbits & 4, s->rxbits & 8, s->rxbits & 16,
				      s->rxbits & 32 };
	n->uni_overflow = s->overflow & 1;
	n->multi_overflow = s->overflow & 2;
	n->uni_n = s->uni_n;
	n->multi_n = s->multi_n;
	memcpy(n->uni, s->uni, sizeof(n->uni));
	memcpy(n->multi, s->multi, sizeof(n->multi));
	if (n->rx.promisc || n->rx.allmulti)
		vnet_publish_rxmode(n);
}

static int vnet_load(void *dev, const void *buf, size_t len)
{
	struct vnet *n = dev;
	struct vnet_state s;
	if (len < sizeof(s))
		return err_set(EINVAL, "%s: state blob too short", n->name);
	memcpy(&s, buf, sizeof(s));
	if (memcmp(s.magic, VNET_STATE_MAGIC, 4) != 0 || s.uni_n > VNET_MAC_TABLE || s.multi_n > VNET_MAC_TABLE ||
	    (s.mac[0] & 1) || s.rxbits > 63 || s.overflow > 3)
		return err_set(EINVAL, "%s: not a valid virtio-net state blob", n->name);
	/* Held until the VM runs: activation during load must not start RX (a
	 * frame taken now would be written into a VM that has not resumed, or
	 * lost if the restore fails later). */
	virtio_pci_hold(n->vdev, true);
	iothread_run_sync(virtio_iothread(n->vdev), vnet_hold, n);
	int r = virtio_pci_load(n->vdev, (const uint8_t *)buf + sizeof(s), len - sizeof(s));
	if (r < 0)
		return r;
	struct vnet_load_req req = { n, &s };
	iothread_run_sync(virtio_iothread(n->vdev), vnet_apply_state, &req);
	return 0;
}

static const struct device_ops vnet_device_ops = {
	.name = "virtio-net",
	.reset = vnet_vm_reset,
	.save = vnet_save,
	.load = vnet_load,
	.quiesce = vnet_quiesce,
	.resume = vnet_resume,
	.destroy = vnet_destroy,
};

/* ---- attach ---- */

static int vnet_open_backend(struct vnet *n, const struct net_spec *spec)
{
	struct net_tap_opts o = { .ifname = spec->ifname, .create = spec->create, .up = spec->up };
	int r = net_tap_open(&o, &n->tap);
	if (r < 0)
		return r;
	if (spec->capture[0]) {
		if ((r = net_pcap_open(spec->capture, NET_PCAP_NSEC, 0, &n->pcap)) < 0)
			return r;
		net_tap_set_capture(n->tap, n->pcap);
	}
	if (spec->has_mac)
		memcpy(n->mac_initial, spec->mac, 6);
	else
		net_mac_from_name(spec->ifname, n->mac_initial);   /* stable across runs */
	memcpy(n->mac, n->mac_initial, 6);
	n->status = net_tap_link_up(n->tap) > 0 ? VIRTIO_NET_S_LINK_UP : 0;
	n->offered = offered_features(n->tap);
	return 0;
}

static int vnet_start_timers(struct vnet *n)
{
	struct iothread *it = virtio_iothread(n->vdev);
	n->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	n->resched_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (n->timer_fd < 0 || n->resched_fd < 0)
		return err_set(errno, "%s: timerfd/eventfd: %s", n->name, strerror(errno));
	struct itimerspec ts = { { VNET_LINK_POLL_SEC, 0 }, { VNET_LINK_POLL_SEC, 0 } };
	if (timerfd_settime(n->timer_fd, 0, &ts, NULL) < 0)
		return err_set(errno, "%s: timerfd_settime: %s", n->name, strerror(errno));
	int r = iothread_add_fd(it, n->timer_fd, EPOLLIN, vnet_link_poll, n);
	if (r == 0)
		r = iothread_add_fd(it, n->resched_fd, EPOLLIN, vnet_resched, n);
	return r;
}

int virtio_net_attach(struct vm *vm, const char *spec_str)
{
	struct net_spec spec;
	int r = net_parse_spec(spec_str, &spec);
	if (r < 0)
		return r;
	struct vnet *n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(ENOMEM, "virtio-net: out of memory");
	n->vm = vm;
	n->timer_fd = n->resched_fd = -1;
	pthread_mutex_init(&n->cfg_lock, NULL);
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (vm->devices[i].ops == &vnet_device_ops)
			n->index++;
	snprintf(n->name, sizeof(n->name), "virtio-net%d", n->index);
	n->bounce = malloc(NET_RX_BUF_MIN);
	n->rx_elems = calloc(VIRTQ_MAX_SIZE, sizeof(*n->rx_elems));
	n->rx_lens = calloc(VIRTQ_MAX_SIZE, sizeof(*n->rx_lens));
	if (!n->bounce || !n->rx_elems || !n->rx_lens) {
		vnet_free(n);
		return err_set(ENOMEM, "virtio-net: out of memory");
	}
	if ((r = vnet_open_backend(n, &spec)) < 0) {
		vnet_free(n);
		return r;
	}
	const struct virtio_dev_desc desc = {
		.name = n->name,
		.device_id = VIRTIO_ID_NET,
		.features = n->offered,
		.num_queues = VNET_NUM_QUEUES,
		.queue_max_size = VNET_QUEUE_SIZE,
		.config_size = VNET_CFG_SIZE,
		.pci_class = 0x020000,   /* Ethernet controller */
	};
	if ((r = virtio_pci_create(vm, &desc, &vnet_virtio_ops, n, &n->vdev)) < 0) {
		vnet_free(n);
		return r;
	}
	if ((r = vnet_start_timers(n)) < 0 || (r = vm_add_device(vm, &vnet_device_ops, n)) < 0) {
		vnet_destroy(n);
		return r;
	}
	char m[18];
	log_info("%s: tap %s, mac %s%s%s", n->name, net_tap_ifname(n->tap), net_mac_format(n->mac, m),
		 n->pcap ? ", capture " : "", n->pcap ? spec.capture : "");
	return 0;
}
