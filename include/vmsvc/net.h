/* Network backend for virtio-net: a tap device (with the virtio-net header), a pcap
 * capture writer, and the `--net` option parser. Nothing here knows about virtqueues:
 * frames come in and go out as iovec arrays laid out as [vnet header][Ethernet frame].
 *
 * Threading: one net_tap may be used by one RX thread and one TX thread at the same
 * time (send and recv share no mutable state beyond atomic counters). A net_pcap is
 * fully thread-safe. Configuration calls (offloads, capture attach) belong to the
 * device's control path and must not race with send/recv. */
#ifndef VMSVC_NET_H
#define VMSVC_NET_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* ---- the header in front of every frame on the tap fd ---- */
/* struct virtio_net_hdr_v1 (virtio 1.x, including num_buffers), little endian. The tap
 * is configured for exactly this size (TUNSETVNETHDRSZ = 12), so virtio-net can hand the
 * guest's header to net_tap_send unchanged and give net_tap_recv the guest's buffer. */
#define NET_VNET_HDR_LEN 12
struct net_vnet_hdr {
	uint8_t flags;          /* NET_VNET_F_* */
	uint8_t gso_type;       /* NET_VNET_GSO_* */
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;   /* the tap writes 0 here; virtio-net fills it for mergeable RX */
} __attribute__((packed));
_Static_assert(sizeof(struct net_vnet_hdr) == NET_VNET_HDR_LEN, "virtio_net_hdr_v1 is 12 bytes");
#define NET_VNET_F_NEEDS_CSUM 1
#define NET_VNET_F_DATA_VALID 2
#define NET_VNET_GSO_NONE  0
#define NET_VNET_GSO_TCPV4 1
#define NET_VNET_GSO_UDP   3
#define NET_VNET_GSO_TCPV6 4
#define NET_VNET_GSO_ECN   0x80

/* Largest frame the tap can hand us: a 64 KiB GSO super-frame (IP total length is
 * 16 bits) plus Ethernet and VLAN headers. An RX buffer of NET_RX_BUF_MIN bytes never
 * truncates. Without any offload enabled, frames are at most MTU + 18 bytes. */
#define NET_MAX_FRAME (65535 + 14 + 4)
#define NET_RX_BUF_MIN (NET_VNET_HDR_LEN + NET_MAX_FRAME)

/* ---- MAC addresses ---- */
/* vmsvc's generated MACs are 0e:76:6d:xx:xx:xx: locally administered (bit 1 of the
 * first octet set), unicast (bit 0 clear), and distinct from QEMU's 52:54:00 so that a
 * vmsvc guest is recognisable in a capture ("vm" = 0x76 0x6d). */
#define NET_MAC_PREFIX0 0x0e
#define NET_MAC_PREFIX1 0x76
#define NET_MAC_PREFIX2 0x6d
/* "aa:bb:cc:dd:ee:ff" (hex, either case, ':' separated). Rejects multicast/broadcast
 * and all-zero addresses: a NIC's own address must be unicast. -EINVAL + err_set. */
int net_mac_parse(const char *s, uint8_t mac[6]);
/* Lower-case "aa:bb:cc:dd:ee:ff" into buf (18 bytes with the NUL); returns buf. */
char *net_mac_format(const uint8_t mac[6], char buf[18]);
/* Random low 24 bits under the vmsvc prefix (getrandom). */
void net_mac_random(uint8_t mac[6]);
/* Stable low 24 bits from a name (FNV-1a): the same VM name gets the same MAC on every
 * run, so DHCP leases and neighbour caches survive restarts. Different names can collide
 * (24 bits): give an explicit mac= when running thousands of VMs on one segment. */
void net_mac_from_name(const char *name, uint8_t mac[6]);

/* ---- `--net` option ---- */
#define NET_IFNAME_MAX 16        /* IFNAMSIZ, including the NUL */
#define NET_PATH_MAX 4096
struct net_spec {
	char ifname[NET_IFNAME_MAX];   /* tap=NAME (required) */
	bool has_mac;                  /* mac=MAC given; otherwise the caller generates one */
	uint8_t mac[6];
	char capture[NET_PATH_MAX];    /* capture=FILE ("" = no capture) */
	bool create;                   /* create=on: create the tap if it does not exist */
	bool up;                       /* up=off: leave a tap we created down (default on) */
};
/* "tap=NAME[,mac=MAC][,capture=FILE.pcap][,create=on|off][,up=on|off]". Keys may come in
 * any order, each at most once; values cannot contain ','. Unknown keys, empty values,
 * bad names/MACs: -EINVAL with a one-line err_set message. *out is fully written. */
int net_parse_spec(const char *spec, struct net_spec *out);

/* ---- pcap capture ---- */
/* Classic libpcap format, LINKTYPE_ETHERNET, snaplen NET_PCAP_SNAPLEN, host byte order
 * (readers detect it from the magic). Frames are recorded without the vnet header and
 * exactly as they crossed the tap: GSO super-frames appear as one big frame (longer than
 * the MTU) and checksums offloaded with NEEDS_CSUM appear unfilled (Wireshark reports
 * them as bad, as it does for any capture taken below checksum offload). Frames longer
 * than the snaplen are truncated with their original length kept in the record.
 *
 * Records are buffered and written by whole records: when the buffer fills, at least
 * every flush_ms by a background thread, and on close. A killed VMM leaves a readable
 * file containing everything up to the last flush. The first write error is logged once
 * (log_warn); after it the writer drops records and net_pcap_close returns the error. */
#define NET_PCAP_SNAPLEN 65535
#define NET_PCAP_FLUSH_MS 1000
struct net_pcap;
enum net_pcap_tsres { NET_PCAP_NSEC = 0, NET_PCAP_USEC = 1 };
/* Create/truncate path and write the file header (flushed immediately). flush_ms 0 =
 * NET_PCAP_FLUSH_MS. -errno + err_set on failure. */
int net_pcap_open(const char *path, enum net_pcap_tsres res, unsigned flush_ms, struct net_pcap **out);
/* Record one frame timestamped now (CLOCK_REALTIME): the bytes of iov after the first
 * `skip` bytes (pass NET_VNET_HDR_LEN for a tap iovec, 0 for a bare frame) and at most
 * `len` bytes of it in total (SIZE_MAX = all; lets RX record only what was received).
 * Never fails from the caller's point of view. */
void net_pcap_record(struct net_pcap *p, const struct iovec *iov, int iovcnt, size_t skip, size_t len);
/* Same with an explicit timestamp in ns since the epoch (tests, replays). */
void net_pcap_record_at(struct net_pcap *p, uint64_t ts_ns, const struct iovec *iov, int iovcnt,
			size_t skip, size_t len);
/* Write buffered records now. 0 or the sticky -errno. */
int net_pcap_flush(struct net_pcap *p);
/* Frames recorded / frames dropped after an error. */
void net_pcap_counts(struct net_pcap *p, uint64_t *recorded, uint64_t *dropped);
/* Flush, stop the flush thread, close. Returns 0 or the first error (-errno). NULL ok. */
int net_pcap_close(struct net_pcap *p);

/* ---- tap ---- */
struct net_tap;
struct net_tap_opts {
	const char *ifname;   /* required, < NET_IFNAME_MAX */
	bool create;          /* create the interface if missing (needs CAP_NET_ADMIN) */
	bool up;              /* bring a tap we created up (IFF_UP); existing taps are left alone */
};
/* Open an existing tap, or create a non-persistent one (it disappears when closed), with
 * IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, a 12-byte vnet header and all offloads off. The fd is
 * non-blocking and close-on-exec. An existing tap created multi_queue is attached as one
 * queue. -errno + err_set naming the tap and the likely fix. */
int net_tap_open(const struct net_tap_opts *o, struct net_tap **out);
void net_tap_close(struct net_tap *t);   /* NULL ok; does not close an attached capture */
int net_tap_fd(const struct net_tap *t); /* for epoll: EPOLLIN = frames to recv */
const char *net_tap_ifname(const struct net_tap *t);
bool net_tap_created(const struct net_tap *t);

/* Offloads: which frames the tap may hand to net_tap_recv. Pass the guest's negotiated
 * RECEIVE features: VIRTIO_NET_F_GUEST_CSUM -> csum, GUEST_TSO4 -> tso4, GUEST_TSO6 ->
 * tso6, GUEST_ECN -> ecn, GUEST_UFO -> ufo. (The guest's transmit offloads, F_CSUM and
 * HOST_TSO*, need no setup: the tap always accepts NEEDS_CSUM/GSO frames on send.)
 * Dependencies are enforced by masking, as in the virtio spec: without csum nothing else
 * is enabled, ecn needs tso4 or tso6. Call again (e.g. all false) on device reset. */
#define NET_OFF_CSUM (1u << 0)
#define NET_OFF_TSO4 (1u << 1)
#define NET_OFF_TSO6 (1u << 2)
#define NET_OFF_ECN  (1u << 3)
#define NET_OFF_UFO  (1u << 4)
int net_tap_set_offloads(struct net_tap *t, bool csum, bool tso4, bool tso6, bool ecn, bool ufo);
/* NET_OFF_* the host kernel accepts (probed at open): offer GUEST_* only for these. */
unsigned net_tap_supported_offloads(const struct net_tap *t);
/* NET_OFF_* currently enabled. */
unsigned net_tap_offloads(const struct net_tap *t);

/* Send one frame: iov = [12-byte vnet header][frame], split anyhow (iovcnt <= 1024).
 * Returns the bytes written (header included), -EAGAIN (retry on EPOLLOUT; in practice
 * tun does not push back), or another -errno meaning this frame was dropped (e.g. the
 * kernel rejected a malformed header or frame, or the interface is down): count it, do
 * not fail the device. No err_set: this is the data path. Recorded in the capture. */
ssize_t net_tap_send(struct net_tap *t, const struct iovec *iov, int iovcnt);
/* Receive one frame into iov: [12-byte vnet header][frame], iovcnt < 1024. Returns the
 * bytes received (header included), -EAGAIN when nothing is queued, -EMSGSIZE if the
 * frame was larger than iov (it is consumed and dropped: give at least NET_RX_BUF_MIN
 * bytes when GSO offloads are on, MTU + 30 otherwise), or another -errno. No err_set.
 * Recorded in the capture. */
ssize_t net_tap_recv(struct net_tap *t, const struct iovec *iov, int iovcnt);

/* Record both directions into p (not owned: close the tap first, then the pcap). NULL
 * detaches. Set before the data path starts. */
void net_tap_set_capture(struct net_tap *t, struct net_pcap *p);

/* Link status for VIRTIO_NET_S_LINK_UP: 1 if the host interface is administratively up,
 * 0 if down, -errno if it cannot be queried (interface deleted). Cheap (two ioctls):
 * poll it, e.g. once a second, and raise a config interrupt on changes. */
int net_tap_link_up(struct net_tap *t);

struct net_tap_stats {
	uint64_t tx_frames, tx_bytes, tx_dropped;    /* bytes exclude the vnet header */
	uint64_t rx_frames, rx_bytes, rx_truncated;
};
void net_tap_get_stats(const struct net_tap *t, struct net_tap_stats *s);

#endif
