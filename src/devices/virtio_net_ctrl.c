/* virtio-net control queue (virtio 1.2, 5.1.6.5) and the receive filter it
 * configures. Every command is a chain [class u8, command u8, data...] (device-
 * readable) followed by one writable ack byte. Malformed commands (wrong data size,
 * unknown class/command, absurd MAC table counts) get VIRTIO_NET_ERR; a chain with
 * no writable byte cannot be answered and is returned empty. Both are logged once. */
#include <stdlib.h>
#include <string.h>
#include <vmsvc/bus.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>
#include "virtio_net_internal.h"

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void vnet_publish_rxmode(struct vnet *n)
{
	struct bus_event ev = { .type = BUS_EV_NET_RXMODE, .vcpu = -1 };
	ev.u.net_rxmode.dev = n->index;
	ev.u.net_rxmode.promisc = n->rx.promisc;
	ev.u.net_rxmode.allmulti = n->rx.allmulti;
	bus_publish(&n->vm->bus, &ev);
}

void vnet_rxmode_reset(struct vnet *n)
{
	bool changed = n->rx.promisc || n->rx.allmulti;
	memset(&n->rx, 0, sizeof(n->rx));
	n->uni_n = n->multi_n = 0;
	n->uni_overflow = n->multi_overflow = false;
	if (changed)
		vnet_publish_rxmode(n);
}

static bool in_table(const uint8_t (*t)[6], unsigned cnt, const uint8_t dst[6])
{
	for (unsigned i = 0; i < cnt; i++)
		if (memcmp(t[i], dst, 6) == 0)
			return true;
	return false;
}

bool vnet_rx_accept(const struct vnet *n, const uint8_t dst[6])
{
	/* Without CTRL_RX the driver cannot ask for anything: deliver all. */
	if (!(n->features & VNET_BIT(VIRTIO_NET_F_CTRL_RX)) || n->rx.promisc)
		return true;
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	if (memcmp(dst, bcast, 6) == 0)
		return !n->rx.nobcast;
	if (dst[0] & 1) {
		if (n->rx.nomulti)
			return false;
		return n->rx.allmulti || n->multi_overflow || in_table(n->multi, n->multi_n, dst);
	}
	if (n->rx.nouni)
		return false;
	if (n->rx.alluni || n->uni_overflow || memcmp(dst, n->mac, 6) == 0)
		return true;
	return in_table(n->uni, n->uni_n, dst);
}

static uint8_t ctrl_rx(struct vnet *n, uint8_t cmd, const uint8_t *d, size_t len)
{
	if (len != 1)
		return VIRTIO_NET_ERR;
	bool on = d[0] != 0;
	switch (cmd) {
	case VIRTIO_NET_CTRL_RX_PROMISC:
		n->rx.promisc = on;
		break;
	case VIRTIO_NET_CTRL_RX_ALLMULTI:
		n->rx.allmulti = on;
		break;
	case VIRTIO_NET_CTRL_RX_ALLUNI: n->rx.alluni = on; return VIRTIO_NET_OK;
	case VIRTIO_NET_CTRL_RX_NOMULTI: n->rx.nomulti = on; return VIRTIO_NET_OK;
	case VIRTIO_NET_CTRL_RX_NOUNI: n->rx.nouni = on; return VIRTIO_NET_OK;
	case VIRTIO_NET_CTRL_RX_NOBCAST: n->rx.nobcast = on; return VIRTIO_NET_OK;
	default:
		return VIRTIO_NET_ERR;
	}
	/* Promiscuous/all-multicast requests are what an IDS watches for: every
	 * request is published (with the resulting mode), repeated ones too. */
	log_info("%s: guest set %s %s", n->name, cmd == VIRTIO_NET_CTRL_RX_PROMISC ? "promiscuous" : "all-multicast",
		 on ? "on" : "off");
	vnet_publish_rxmode(n);
	return VIRTIO_NET_OK;
}

/* MAC_TABLE_SET data: le32 n, n unicast MACs, le32 m, m multicast MACs; the sizes
 * must add up exactly. */
static uint8_t ctrl_mac_table(struct vnet *n, const uint8_t *d, size_t len)
{
	if (len < 8)
		return VIRTIO_NET_ERR;
	uint64_t nu = get_le32(d);
	if (nu > (len - 8) / 6)
		return VIRTIO_NET_ERR;
	size_t off = 4 + 6 * (size_t)nu;
	uint64_t nm = get_le32(d + off);
	if (off + 4 + 6 * nm != len)
		return VIRTIO_NET_ERR;
	n->uni_overflow = nu > VNET_MAC_TABLE;
	n->uni_n = n->uni_overflow ? 0 : (unsigned)nu;
	memcpy(n->uni, d + 4, 6 * n->uni_n);
	n->multi_overflow = nm > VNET_MAC_TABLE;
	n->multi_n = n->multi_overflow ? 0 : (unsigned)nm;
	memcpy(n->multi, d + off + 4, 6 * n->multi_n);
	return VIRTIO_NET_OK;
}

static uint8_t ctrl_mac(struct vnet *n, uint8_t cmd, const uint8_t *d, size_t len)
{
	if (cmd == VIRTIO_NET_CTRL_MAC_TABLE_SET)
		return ctrl_mac_table(n, d, len);
	if (cmd != VIRTIO_NET_CTRL_MAC_ADDR_SET || len != 6 || (d[0] & 1))
		return VIRTIO_NET_ERR;   /* a NIC's own address is unicast */
	static const uint8_t zero[6];
	if (memcmp(d, zero, 6) == 0)
		return VIRTIO_NET_ERR;
	pthread_mutex_lock(&n->cfg_lock);
	memcpy(n->mac, d, 6);
	pthread_mutex_unlock(&n->cfg_lock);
	char buf[18];
	log_info("%s: guest set MAC address %s", n->name, net_mac_format(d, buf));
	return VIRTIO_NET_OK;
}

static uint8_t ctrl_command(struct vnet *n, const uint8_t *b, size_t len)
{
	if (len < 2)
		return VIRTIO_NET_ERR;
	const uint8_t *d = b + 2;
	size_t dlen = len - 2;
	switch (b[0]) {
	case VIRTIO_NET_CTRL_RX:
		return ctrl_rx(n, b[1], d, dlen);
	case VIRTIO_NET_CTRL_MAC:
		return ctrl_mac(n, b[1], d, dlen);
	case VIRTIO_NET_CTRL_VLAN:
		/* No VLAN filtering (CTRL_VLAN is not offered): every VLAN passes, so a
		 * well-formed add/del is simply acknowledged. */
		if ((b[1] == VIRTIO_NET_CTRL_VLAN_ADD || b[1] == VIRTIO_NET_CTRL_VLAN_DEL) && dlen == 2 &&
		    (d[0] | d[1] << 8) < 4096)
			return VIRTIO_NET_OK;
		return VIRTIO_NET_ERR;
	case VIRTIO_NET_CTRL_ANNOUNCE:
		return b[1] == VIRTIO_NET_CTRL_ANNOUNCE_ACK && dlen == 0 ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
	default:
		return VIRTIO_NET_ERR;   /* MQ, GUEST_OFFLOADS, ...: not offered */
	}
}

static void ctrl_log(struct vnet *n, const char *what, unsigned a, unsigned b)
{
	if (n->logged_ctrl)
		return;
	n->logged_ctrl = true;
	log_warn("%s: control queue: %s (%u, %u) (logged once)", n->name, what, a, b);
}

void vnet_ctrl(struct vnet *n, struct virtq *vq)
{
	if (!n->active)
		return;
	struct virtq_elem *e;
	bool pushed = false;
	while (virtq_pop(vq, &e) == 1) {
		if (e->in_len < 1) {
			n->c.ctrl_err++;
			ctrl_log(n, "command without a writable ack byte; returned unanswered", e->out_len, e->in_len);
			virtq_push(vq, e, 0);
			free(e);
			pushed = true;
			continue;
		}
		uint8_t ack = VIRTIO_NET_ERR;
		uint8_t *buf = NULL;
		if (e->out_len >= 2 && e->out_len <= VNET_CTRL_MAX && (buf = malloc(e->out_len)) != NULL) {
			/* One private copy: the guest may rewrite its buffers while we parse. */
			iov_to_buf(e->iov, e->out_num, 0, buf, e->out_len);
			ack = ctrl_command(n, buf, e->out_len);
		}
		if (ack == VIRTIO_NET_OK) {
			n->c.ctrl_ok++;
		} else {
			n->c.ctrl_err++;
			if (buf)
				ctrl_log(n, "malformed or unsupported command (class, command)", buf[0], buf[1]);
			else
				ctrl_log(n, "command of bad size (readable, writable bytes)", e->out_len, e->in_len);
		}
		free(buf);
		buf_to_iov(e->iov + e->out_num, e->in_num, 0, &ack, 1);
		virtq_push(vq, e, 1);
		free(e);
		pushed = true;
	}
	if (pushed)
		virtio_notify_queue(vq);
}
