/* virtio-net internals shared by virtio_net.c (device, config, negotiation, link),
 * virtio_net_rxtx.c (data path) and virtio_net_ctrl.c (control queue, RX filter).
 * Everything below the "I/O thread" line is touched only on the device's I/O thread. */
#ifndef VMSVC_VIRTIO_NET_INTERNAL_H
#define VMSVC_VIRTIO_NET_INTERNAL_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vmsvc/iov.h>
#include <vmsvc/net.h>
#include <vmsvc/virtio.h>

/* Feature bits (virtio 1.2, 5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_HOST_UFO 14
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_CTRL_RX 18
#define VIRTIO_NET_F_CTRL_VLAN 19
#define VIRTIO_NET_F_CTRL_RX_EXTRA 20
#define VIRTIO_NET_F_CTRL_MAC_ADDR 23
#define VNET_BIT(b) (1ULL << (b))

#define VIRTIO_NET_S_LINK_UP 1

/* Control queue (5.1.6.5). */
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_RX_PROMISC 0
#define VIRTIO_NET_CTRL_RX_ALLMULTI 1
#define VIRTIO_NET_CTRL_RX_ALLUNI 2
#define VIRTIO_NET_CTRL_RX_NOMULTI 3
#define VIRTIO_NET_CTRL_RX_NOUNI 4
#define VIRTIO_NET_CTRL_RX_NOBCAST 5
#define VIRTIO_NET_CTRL_MAC 1
#define VIRTIO_NET_CTRL_MAC_TABLE_SET 0
#define VIRTIO_NET_CTRL_MAC_ADDR_SET 1
#define VIRTIO_NET_CTRL_VLAN 2
#define VIRTIO_NET_CTRL_VLAN_ADD 0
#define VIRTIO_NET_CTRL_VLAN_DEL 1
#define VIRTIO_NET_CTRL_ANNOUNCE 3
#define VIRTIO_NET_CTRL_ANNOUNCE_ACK 0

/* Device configuration: mac[6], status, max_virtqueue_pairs, mtu (F_MTU not offered). */
#define VNET_CFG_MAC 0
#define VNET_CFG_STATUS 6
#define VNET_CFG_MAX_PAIRS 8
#define VNET_CFG_MTU 10
#define VNET_CFG_SIZE 12

#define VNET_RXQ 0
#define VNET_TXQ 1
#define VNET_CTRLQ 2
#define VNET_NUM_QUEUES 3
#define VNET_QUEUE_SIZE 256

/* MAC filter entries kept per table; more means "accept all of that kind" (as
 * QEMU does): a driver with a huge multicast list still works. */
#define VNET_MAC_TABLE 64
/* Largest control command accepted (header + data); MAC tables beyond this are ERR. */
#define VNET_CTRL_MAX (64u << 10)
/* Largest TX chain: a 64 KiB GSO frame plus Ethernet/VLAN headers and the vnet header. */
#define VNET_TX_MAX (NET_VNET_HDR_LEN + NET_MAX_FRAME)

struct vnet_rxmode {
	bool promisc, allmulti, alluni, nomulti, nouni, nobcast;
};

struct vnet_counters {
	uint64_t tx_frames, tx_dropped, tx_bad;          /* bad: malformed chains */
	uint64_t rx_frames, rx_oversize, rx_filtered, rx_bad, rx_errors;
	uint64_t ctrl_ok, ctrl_err;
};

struct vnet {
	struct vm *vm;
	struct virtio_dev *vdev;
	struct net_tap *tap;
	struct net_pcap *pcap;
	int index;              /* among this VM's NICs, for bus events and logs */
	char name[24];          /* "virtio-net0" */
	int timer_fd;           /* link status poll */
	int resched_fd;         /* eventfd: TX ran out of budget, continue on the next loop turn */
	uint64_t offered;       /* device features offered */

	/* Read by vCPUs (config space), written by the I/O thread. */
	pthread_mutex_t cfg_lock;
	uint8_t mac[6];         /* current; MAC_ADDR_SET changes it until reset */
	uint8_t mac_initial[6];
	uint16_t status;        /* VIRTIO_NET_S_LINK_UP */

	/* ---- I/O thread ---- */
	bool active;            /* DRIVER_OK seen */
	uint64_t features;      /* negotiated (valid while active) */
	uint32_t tap_events;    /* what the tap fd is watched for (0 = not watched) */
	bool rx_wanted;         /* EPOLLIN: guest has RX buffers posted */
	bool held;              /* quiesced for a snapshot / restored, not yet running:
	                         * no RX or TX touches guest memory, the tap is unwatched */

	struct vnet_rxmode rx;
	unsigned uni_n, multi_n;
	bool uni_overflow, multi_overflow;
	uint8_t uni[VNET_MAC_TABLE][6], multi[VNET_MAC_TABLE][6];

	/* Mergeable RX: a frame spilled past its first buffer waits here until the
	 * guest posts enough buffers. elems are popped but not pushed. */
	uint8_t *bounce;        /* NET_RX_BUF_MIN bytes */
	bool rx_pending;
	size_t rx_spill_len;    /* frame bytes in bounce */
	size_t rx_spill_done;   /* of those, copied into buffers */
	unsigned rx_nelem;
	struct virtq_elem **rx_elems;   /* VIRTQ_MAX_SIZE entries */
	uint32_t *rx_lens;

	struct virtq_elem *tx_blocked;  /* chain the tap refused with -EAGAIN */

	struct vnet_counters c;
	bool logged_tx_bad, logged_tx_big, logged_rx_bad, logged_rx_big, logged_rx_err, logged_ctrl;
};

/* virtio_net_rxtx.c */
void vnet_rx(struct vnet *n);
void vnet_tx(struct vnet *n);
void vnet_tap_event(void *opaque, int fd, uint32_t events);
void vnet_update_tap_watch(struct vnet *n);
/* Drop popped-but-unpushed chains. unpop: give them back to the rings (save);
 * otherwise just forget them (reset: the rings are being reset anyway). */
void vnet_drop_inflight(struct vnet *n, bool unpop);

/* virtio_net_ctrl.c */
void vnet_ctrl(struct vnet *n, struct virtq *vq);
/* Should a frame with this destination reach the guest under the current RX mode? */
bool vnet_rx_accept(const struct vnet *n, const uint8_t dst[6]);
/* Back to power-on RX mode and filters; publishes a bus event if promisc/allmulti change. */
void vnet_rxmode_reset(struct vnet *n);
void vnet_publish_rxmode(struct vnet *n);

/* iovec helpers: copy between a flat buffer and [iov, iov + cnt) at byte offset off;
 * return the bytes copied (short when the iovecs end). */

#endif
