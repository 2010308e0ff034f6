/* tap backend: a Linux tap interface carrying [virtio_net_hdr_v1][Ethernet frame]. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_tun.h>

#include <vmsvc/err.h>
#include <vmsvc/net.h>

struct net_tap {
	int fd;
	char ifname[NET_IFNAME_MAX];
	bool created;
	unsigned supported, enabled;   /* NET_OFF_* */
	struct net_pcap *capture;
	/* Written by the TX or RX thread, read by anyone: relaxed atomics. */
	_Atomic uint64_t tx_frames, tx_bytes, tx_dropped;
	_Atomic uint64_t rx_frames, rx_bytes, rx_truncated;
};

static unsigned off_to_tun(unsigned off)
{
	unsigned f = 0;
	if (off & NET_OFF_CSUM)
		f |= TUN_F_CSUM;
	if (off & NET_OFF_TSO4)
		f |= TUN_F_TSO4;
	if (off & NET_OFF_TSO6)
		f |= TUN_F_TSO6;
	if (off & NET_OFF_ECN)
		f |= TUN_F_TSO_ECN;
	if (off & NET_OFF_UFO)
		f |= TUN_F_UFO;
	return f;
}

/* Which offloads this kernel's tun accepts. TSO/UFO only make sense (and are only
 * accepted) together with CSUM; ECN only with a TSO. Leaves offloads off. */
static unsigned probe_offloads(int fd)
{
	static const unsigned try[] = { NET_OFF_TSO4, NET_OFF_TSO6, NET_OFF_UFO };
	unsigned ok = 0;
	if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM) == 0) {
		ok |= NET_OFF_CSUM;
		for (size_t i = 0; i < sizeof(try) / sizeof(try[0]); i++)
			if (ioctl(fd, TUNSETOFFLOAD, off_to_tun(NET_OFF_CSUM | try[i])) == 0)
				ok |= try[i];
		if ((ok & NET_OFF_TSO4) &&
		    ioctl(fd, TUNSETOFFLOAD, off_to_tun(NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_ECN)) == 0)
			ok |= NET_OFF_ECN;
	}
	ioctl(fd, TUNSETOFFLOAD, 0);
	return ok;
}

/* SIOCGIFFLAGS/SIOCSIFFLAGS go through any socket of the caller's network namespace. */
static int ifflags(const char *ifname, short set, bool do_set, short *out)
{
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, ifname, strnlen(ifname, IFNAMSIZ - 1));
	int ret = 0;
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		ret = -errno;
	} else if (do_set && (ifr.ifr_flags & set) != set) {
		ifr.ifr_flags |= set;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			ret = -errno;
	}
	if (out)
		*out = ifr.ifr_flags;
	close(s);
	return ret;
}

static int attach(int fd, const char *name, short extra)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, name, strlen(name));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | extra;
	return ioctl(fd, TUNSETIFF, &ifr) < 0 ? -errno : 0;
}

int net_tap_open(const struct net_tap_opts *o, struct net_tap **out)
{
	*out = NULL;
	const char *name = o->ifname;
	if (!name || !*name || strlen(name) >= NET_IFNAME_MAX || strchr(name, '%'))
		return err_set(EINVAL, "tap: bad interface name '%s'", name ? name : "");

	/* TUNSETIFF with an unknown name creates the interface; decide beforehand whether
	 * that is wanted so that a typo does not silently make a new, unconnected tap. */
	bool exists = if_nametoindex(name) != 0;
	if (!exists && !o->create)
		return err_set(ENODEV, "tap %s does not exist (create it with `ip tuntap add dev %s mode tap "
			       "user $USER`, or pass create=on as root/CAP_NET_ADMIN)", name, name);

	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		return err_set(e, "tap %s: cannot open /dev/net/tun: %s%s", name, strerror(e),
			       e == ENOENT ? " (load the tun module)" : "");
	}
	unsigned features = 0;
	if (ioctl(fd, TUNGETFEATURES, &features) == 0 && !(features & IFF_VNET_HDR)) {
		close(fd);
		return err_set(ENOTSUP, "tap %s: kernel tun lacks IFF_VNET_HDR", name);
	}

	int ret = attach(fd, name, 0);
	/* A persistent tap made with `ip tuntap ... multi_queue` only accepts multi-queue
	 * attaches; we then use it as a single queue. */
	if (ret == -EINVAL && exists)
		ret = attach(fd, name, IFF_MULTI_QUEUE);
	if (ret < 0) {
		close(fd);
		if (ret == -EPERM && !exists)
			return err_set(EPERM, "tap %s: creating a tap needs CAP_NET_ADMIN (run as root, or create it "
				       "first with `ip tuntap add dev %s mode tap user $USER`)", name, name);
		if (ret == -EPERM)
			return err_set(EPERM, "tap %s: not permitted to attach (it belongs to another user/group; "
				       "see `ip tuntap add ... user`)", name);
		if (ret == -EBUSY)
			return err_set(EBUSY, "tap %s is already in use by another process", name);
		if (ret == -EINVAL)
			return err_set(EINVAL, "%s exists but is not a tap device", name);
		return err_set(-ret, "tap %s: TUNSETIFF: %s", name, strerror(-ret));
	}

	int hdrsz = NET_VNET_HDR_LEN;
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0) {
		int e = errno;
		close(fd);
		return err_set(e, "tap %s: TUNSETVNETHDRSZ: %s", name, strerror(e));
	}
	/* virtio 1.x headers are little endian; x86 hosts are too, so the tap's default
	 * native-endian interpretation is already right (no TUNSETVNETLE needed). */

	struct net_tap *t = calloc(1, sizeof(*t));
	if (!t) {
		close(fd);
		return err_set(ENOMEM, "tap %s: out of memory", name);
	}
	t->fd = fd;
	t->created = !exists;
	/* The kernel may have been given a name that differs only in what it accepts; ask. */
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) == 0)
		memcpy(t->ifname, ifr.ifr_name, IFNAMSIZ - 1);
	else
		strcpy(t->ifname, name);
	t->supported = probe_offloads(fd);

	if (t->created && o->up) {
		ret = ifflags(t->ifname, IFF_UP, true, NULL);
		if (ret < 0) {
			net_tap_close(t);
			return err_set(-ret, "tap %s: bringing it up: %s", name, strerror(-ret));
		}
	}
	*out = t;
	return 0;
}

void net_tap_close(struct net_tap *t)
{
	if (!t)
		return;
	close(t->fd);   /* a tap we created is not persistent: this deletes it */
	free(t);
}

int net_tap_fd(const struct net_tap *t)
{
	return t->fd;
}

const char *net_tap_ifname(const struct net_tap *t)
{
	return t->ifname;
}

bool net_tap_created(const struct net_tap *t)
{
	return t->created;
}

unsigned net_tap_supported_offloads(const struct net_tap *t)
{
	return t->supported;
}

unsigned net_tap_offloads(const struct net_tap *t)
{
	return t->enabled;
}

int net_tap_set_offloads(struct net_tap *t, bool csum, bool tso4, bool tso6, bool ecn, bool ufo)
{
	unsigned want = 0;
	if (csum) {
		want = NET_OFF_CSUM | (tso4 ? NET_OFF_TSO4 : 0) | (tso6 ? NET_OFF_TSO6 : 0) | (ufo ? NET_OFF_UFO : 0);
		if (ecn && (want & (NET_OFF_TSO4 | NET_OFF_TSO6)))
			want |= NET_OFF_ECN;
	}
	if (want & ~t->supported)
		return err_set(ENOTSUP, "tap %s: offloads 0x%x not supported by the host kernel", t->ifname,
			       want & ~t->supported);
	if (ioctl(t->fd, TUNSETOFFLOAD, off_to_tun(want)) < 0) {
		int e = errno;
		return err_set(e, "tap %s: TUNSETOFFLOAD: %s", t->ifname, strerror(e));
	}
	t->enabled = want;
	return 0;
}

void net_tap_set_capture(struct net_tap *t, struct net_pcap *p)
{
	t->capture = p;
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - n)
			return SIZE_MAX;
		n += iov[i].iov_len;
	}
	return n;
}

ssize_t net_tap_send(struct net_tap *t, const struct iovec *iov, int iovcnt)
{
	if (iovcnt <= 0 || iovcnt > IOV_MAX) {
		atomic_fetch_add_explicit(&t->tx_dropped, 1, memory_order_relaxed);
		return -EINVAL;
	}
	size_t total = iov_total(iov, iovcnt);
	/* A frame needs the header and at least an Ethernet header; the kernel also
	 * rejects these, but saying so here keeps junk out of the capture. */
	if (total < NET_VNET_HDR_LEN + 14 || total > NET_VNET_HDR_LEN + NET_MAX_FRAME) {
		atomic_fetch_add_explicit(&t->tx_dropped, 1, memory_order_relaxed);
		return -EINVAL;
	}
	ssize_t n;
	do
		n = writev(t->fd, iov, iovcnt);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = errno;
		if (e != EAGAIN)
			atomic_fetch_add_explicit(&t->tx_dropped, 1, memory_order_relaxed);
		return -e;
	}
	atomic_fetch_add_explicit(&t->tx_frames, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->tx_bytes, total - NET_VNET_HDR_LEN, memory_order_relaxed);
	if (t->capture)
		net_pcap_record(t->capture, iov, iovcnt, NET_VNET_HDR_LEN, SIZE_MAX);
	return n;
}

ssize_t net_tap_recv(struct net_tap *t, const struct iovec *iov, int iovcnt)
{
	if (iovcnt <= 0 || iovcnt >= IOV_MAX)
		return -EINVAL;
	size_t cap = iov_total(iov, iovcnt);
	if (cap < NET_VNET_HDR_LEN)
		return -EINVAL;   /* tun would refuse too, without consuming the frame */
	/* tun silently cuts a frame to the buffer and returns the buffer's size, so a full
	 * buffer is ambiguous. One extra byte of scratch at the end makes truncation
	 * visible: a result beyond the caller's buffer means the frame did not fit. */
	struct iovec local[64], *v = local;
	if (iovcnt + 1 > (int)(sizeof(local) / sizeof(local[0]))) {
		v = malloc(sizeof(*v) * (size_t)(iovcnt + 1));
		if (!v)
			return -ENOMEM;
	}
	uint8_t overflow;
	memcpy(v, iov, sizeof(*v) * (size_t)iovcnt);
	v[iovcnt] = (struct iovec){ &overflow, 1 };
	ssize_t n;
	do
		n = readv(t->fd, v, iovcnt + 1);
	while (n < 0 && errno == EINTR);
	int e = errno;
	if (v != local)
		free(v);
	if (n < 0)
		return -e;
	if ((size_t)n > cap) {
		atomic_fetch_add_explicit(&t->rx_truncated, 1, memory_order_relaxed);
		return -EMSGSIZE;   /* must not reach the guest cut short */
	}
	if ((size_t)n < NET_VNET_HDR_LEN)
		return -EIO;
	atomic_fetch_add_explicit(&t->rx_frames, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->rx_bytes, (size_t)n - NET_VNET_HDR_LEN, memory_order_relaxed);
	if (t->capture)
		net_pcap_record(t->capture, iov, iovcnt, NET_VNET_HDR_LEN, (size_t)n - NET_VNET_HDR_LEN);
	return n;
}

int net_tap_link_up(struct net_tap *t)
{
	/* Ask the fd for the interface's current name: it may have been renamed. */
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(t->fd, TUNGETIFF, &ifr) < 0)
		return -errno;
	short flags = 0;
	int ret = ifflags(ifr.ifr_name, 0, false, &flags);
	if (ret < 0)
		return ret;
	return (flags & IFF_UP) ? 1 : 0;
}

void net_tap_get_stats(const struct net_tap *t, struct net_tap_stats *s)
{
	s->tx_frames = atomic_load_explicit(&t->tx_frames, memory_order_relaxed);
	s->tx_bytes = atomic_load_explicit(&t->tx_bytes, memory_order_relaxed);
	s->tx_dropped = atomic_load_explicit(&t->tx_dropped, memory_order_relaxed);
	s->rx_frames = atomic_load_explicit(&t->rx_frames, memory_order_relaxed);
	s->rx_bytes = atomic_load_explicit(&t->rx_bytes, memory_order_relaxed);
	s->rx_truncated = atomic_load_explicit(&t->rx_truncated, memory_order_relaxed);
}
