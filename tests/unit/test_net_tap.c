/* tap backend tests. Each test runs in a forked child inside a fresh network namespace
 * (unshare(CLONE_NEWNET)), creates a tap there, and talks to it from the "host" side
 * through an AF_PACKET socket bound to the tap: guest->host with net_tap_send, and
 * host->guest with net_tap_recv, including vnet header offload handling. Skipped with
 * a message when namespaces or /dev/net/tun are not available (not root). */
#include <arpa/inet.h>
#include <errno.h>
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <cmocka.h>

#include <vmsvc/err.h>
#include <vmsvc/net.h>

#define SKIP_CODE 77
#define CHECK(c)                                                                              \
	do {                                                                                  \
		if (!(c)) {                                                                   \
			fprintf(stderr, "%s:%d: CHECK(%s) failed (errno %d, err_msg '%s')\n", \
				__FILE__, __LINE__, #c, errno, err_msg());                    \
			_exit(1);                                                             \
		}                                                                             \
	} while (0)

static void run_in_netns(void (*body)(void))
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0) {
			fprintf(stderr, "test_net_tap: unshare(CLONE_NEWNET): %s\n", strerror(errno));
			_exit(SKIP_CODE);
		}
		if (access("/dev/net/tun", R_OK | W_OK) < 0) {
			fprintf(stderr, "test_net_tap: /dev/net/tun: %s\n", strerror(errno));
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

/* ---- frame building ---- */
static const uint8_t guest_mac[6] = { 0x0e, 0x76, 0x6d, 0, 0, 1 };
static const uint8_t host_mac[6] = { 0x0e, 0x76, 0x6d, 0, 0, 2 };
#define ETH_TEST 0x88b5   /* IEEE local experimental ethertype */

static size_t make_raw(uint8_t *f, uint16_t ethertype, size_t payload, uint8_t seed)
{
	memcpy(f, host_mac, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = (uint8_t)(ethertype >> 8);
	f[13] = (uint8_t)ethertype;
	for (size_t i = 0; i < payload; i++)
		f[14 + i] = (uint8_t)(seed + i * 7);
	return 14 + payload;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

/* IPv4 + UDP (proto 17) or TCP (6) frame, 10.0.0.1 -> 10.0.0.2. The L4 checksum field
 * holds the pseudo-header sum, as a NEEDS_CSUM sender leaves it. Returns the length. */
static size_t make_ip(uint8_t *f, uint8_t proto, size_t payload)
{
	size_t l4hdr = proto == 6 ? 20 : 8, l4len = l4hdr + payload;
	memcpy(f, host_mac, 6);
	memcpy(f + 6, guest_mac, 6);
	f[12] = 0x08;
	f[13] = 0x00;
	uint8_t *ip = f + 14;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	ip[2] = (uint8_t)((20 + l4len) >> 8);
	ip[3] = (uint8_t)(20 + l4len);
	ip[6] = 0x40;   /* DF */
	ip[8] = 64;
	ip[9] = proto;
	uint8_t src[4] = { 10, 0, 0, 1 }, dst[4] = { 10, 0, 0, 2 };
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	uint16_t c = (uint16_t)~fold(sum16(ip, 20, 0));
	ip[10] = (uint8_t)(c >> 8);
	ip[11] = (uint8_t)c;
	uint8_t *l4 = ip + 20;
	memset(l4, 0, l4hdr);
	l4[0] = 0x30; l4[1] = 0x39;   /* port 12345 */
	l4[2] = 0x30; l4[3] = 0x3a;   /* port 12346 */
	if (proto == 6) {
		l4[12] = 5 << 4;     /* data offset */
		l4[13] = 0x18;       /* PSH|ACK */
		l4[14] = 0xff;       /* window */
	} else {
		l4[4] = (uint8_t)(l4len >> 8);
		l4[5] = (uint8_t)l4len;
	}
	for (size_t i = 0; i < payload; i++)
		l4[l4hdr + i] = (uint8_t)(i * 13 + 1);
	uint32_t ph = sum16(ip + 12, 8, 0) + proto + (uint32_t)l4len;
	uint16_t pc = fold(ph);
	size_t co = proto == 6 ? 16 : 6;
	l4[co] = (uint8_t)(pc >> 8);
	l4[co + 1] = (uint8_t)pc;
	return 14 + 20 + l4len;
}

/* Is the L4 checksum of this IPv4 frame complete and correct? */
static int l4_csum_ok(const uint8_t *f, size_t len)
{
	const uint8_t *ip = f + 14;
	size_t l4len = (size_t)(ip[2] << 8 | ip[3]) - 20;
	if (14 + 20 + l4len > len)
		return 0;
	uint32_t s = sum16(ip + 12, 8, 0) + ip[9] + (uint32_t)l4len;
	return fold(sum16(ip + 20, l4len, s)) == 0xffff;
}

/* ---- host side: AF_PACKET ---- */
static int host_socket(int ifindex, int vnet)
{
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
	CHECK(s >= 0);
	if (vnet) {
		int one = 1;
		CHECK(setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) == 0);
	}
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = ifindex };
	CHECK(bind(s, (struct sockaddr *)&sll, sizeof(sll)) == 0);
	return s;
}

static void host_send(int s, int ifindex, const void *buf, size_t len)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6 };
	memcpy(sll.sll_addr, host_mac, 6);
	CHECK(sendto(s, buf, len, 0, (struct sockaddr *)&sll, sizeof(sll)) == (ssize_t)len);
}

/* Next frame that arrived on the tap's host side (not our own outgoing ones) whose
 * ethertype is `type`; skips the kernel's own IPv6 chatter. Returns the length. */
static size_t host_recv(int s, uint8_t *buf, size_t cap, size_t vnet, uint16_t type)
{
	for (int tries = 0; tries < 100; tries++) {
		struct pollfd pfd = { .fd = s, .events = POLLIN };
		CHECK(poll(&pfd, 1, 2000) == 1);
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(s, buf, cap, 0, (struct sockaddr *)&from, &fl);
		CHECK(n >= 0);
		if (from.sll_pkttype == PACKET_OUTGOING || (size_t)n < vnet + 14)
			continue;
		if ((buf[vnet + 12] << 8 | buf[vnet + 13]) == type)
			return (size_t)n;
	}
	CHECK(!"frame never arrived");
	return 0;
}

/* Next frame from the tap (guest side) with ethertype `type`. */
static size_t tap_recv(struct net_tap *t, uint8_t *buf, size_t cap, uint16_t type)
{
	for (int tries = 0; tries < 100; tries++) {
		struct pollfd pfd = { .fd = net_tap_fd(t), .events = POLLIN };
		CHECK(poll(&pfd, 1, 2000) == 1);
		struct iovec iov[2] = { { buf, NET_VNET_HDR_LEN }, { buf + NET_VNET_HDR_LEN, cap - NET_VNET_HDR_LEN } };
		ssize_t n = net_tap_recv(t, iov, 2);
		if (n == -EAGAIN)
			continue;
		CHECK(n >= NET_VNET_HDR_LEN + 14);
		if ((buf[NET_VNET_HDR_LEN + 12] << 8 | buf[NET_VNET_HDR_LEN + 13]) == type)
			return (size_t)n;
	}
	CHECK(!"frame never arrived");
	return 0;
}

static struct net_tap *open_test_tap(const char *name)
{
	struct net_tap *t = NULL;
	struct net_tap_opts o = { .ifname = name, .create = true, .up = true };
	CHECK(net_tap_open(&o, &t) == 0);
	CHECK(net_tap_created(t));
	CHECK(!strcmp(net_tap_ifname(t), name));
	return t;
}

static void set_link(const char *name, int up)
{
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, name);
	CHECK(ioctl(s, SIOCGIFFLAGS, &ifr) == 0);
	ifr.ifr_flags = (short)(up ? ifr.ifr_flags | IFF_UP : ifr.ifr_flags & ~IFF_UP);
	CHECK(ioctl(s, SIOCSIFFLAGS, &ifr) == 0);
	close(s);
}

/* A persistent tap made the way `ip tuntap add dev NAME mode tap [multi_queue]` does. */
static void make_persistent(const char *name, int multi_queue, int persist)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	CHECK(fd >= 0);
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, name);
	ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0));
	CHECK(ioctl(fd, TUNSETIFF, &ifr) == 0);
	CHECK(ioctl(fd, TUNSETPERSIST, persist) == 0);
	close(fd);
}

/* ---- tests ---- */

static void body_open_errors(void)
{
	struct net_tap *t = (struct net_tap *)1;
	struct net_tap_opts o = { .ifname = "nosuchtap0" };
	err_clear();
	CHECK(net_tap_open(&o, &t) == -ENODEV && t == NULL);
	CHECK(strstr(err_msg(), "nosuchtap0 does not exist") && strstr(err_msg(), "create=on"));
	CHECK(if_nametoindex("nosuchtap0") == 0);   /* not created behind our back */

	o.ifname = "lo";   /* exists, but is no tap */
	CHECK(net_tap_open(&o, &t) == -EINVAL);
	CHECK(strstr(err_msg(), "not a tap"));

	o.ifname = "tap%d";
	CHECK(net_tap_open(&o, &t) == -EINVAL);

	/* Created taps are not persistent: closing deletes the interface. A second open of
	 * a tap in use fails with a clear message. */
	t = open_test_tap("vmt1");
	struct net_tap *t2;
	o = (struct net_tap_opts){ .ifname = "vmt1" };
	CHECK(net_tap_open(&o, &t2) == -EBUSY);
	CHECK(strstr(err_msg(), "in use"));
	net_tap_close(t);
	CHECK(if_nametoindex("vmt1") == 0);

	/* Existing persistent taps, single- and multi-queue: attached, left as they were
	 * (not brought up, not deleted on close). */
	for (int mq = 0; mq < 2; mq++) {
		make_persistent("vmtp", mq, 1);
		o = (struct net_tap_opts){ .ifname = "vmtp", .create = true, .up = true };
		CHECK(net_tap_open(&o, &t) == 0);
		CHECK(!net_tap_created(t));
		CHECK(net_tap_link_up(t) == 0);   /* nobody brought it up */
		net_tap_close(t);
		CHECK(if_nametoindex("vmtp") != 0);
		make_persistent("vmtp", mq, 0);
		CHECK(if_nametoindex("vmtp") == 0);
	}

	/* Without CAP_NET_ADMIN, creating fails with a message that says what is missing.
	 * (Drop it from the effective set: this child is about to exit anyway.) */
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	CHECK(syscall(SYS_capget, &hdr, data) == 0);
	data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
	CHECK(syscall(SYS_capset, &hdr, data) == 0);
	o = (struct net_tap_opts){ .ifname = "vmt3", .create = true };
	CHECK(net_tap_open(&o, &t) == -EPERM);
	CHECK(strstr(err_msg(), "CAP_NET_ADMIN"));
}

static void test_open_errors(void **state)
{
	run_in_netns(body_open_errors);
}

static void body_roundtrip(void)
{
	struct net_tap *t = open_test_tap("vmt0");
	int ifindex = (int)if_nametoindex("vmt0");
	CHECK(ifindex > 0);
	CHECK(net_tap_link_up(t) == 1);
	char cap_path[] = "/tmp/vmsvc-test-tap-XXXXXX";
	int cfd = mkstemp(cap_path);
	CHECK(cfd >= 0);
	close(cfd);
	struct net_pcap *pcap;
	CHECK(net_pcap_open(cap_path, NET_PCAP_NSEC, 0, &pcap) == 0);
	net_tap_set_capture(t, pcap);
	int hs = host_socket(ifindex, 0);

	/* guest -> host: header and frame split over three iovecs. */
	uint8_t frame[200], buf[2048];
	size_t flen = make_raw(frame, ETH_TEST, 120, 3);
	struct net_vnet_hdr vh = { 0 };
	struct iovec iov[3] = { { &vh, sizeof(vh) }, { frame, 6 }, { frame + 6, flen - 6 } };
	CHECK(net_tap_send(t, iov, 3) == (ssize_t)(NET_VNET_HDR_LEN + flen));
	size_t n = host_recv(hs, buf, sizeof(buf), 0, ETH_TEST);
	CHECK(n == flen && !memcmp(buf, frame, flen));

	/* Too short to be a frame: refused before the kernel sees it. */
	struct iovec shortv = { &vh, sizeof(vh) };
	CHECK(net_tap_send(t, &shortv, 1) == -EINVAL);
	CHECK(net_tap_send(t, iov, 0) == -EINVAL);

	/* host -> guest. */
	uint8_t frame2[200];
	size_t flen2 = make_raw(frame2, ETH_TEST + 1, 77, 9);
	host_send(hs, ifindex, frame2, flen2);
	n = tap_recv(t, buf, sizeof(buf), ETH_TEST + 1);
	CHECK(n == NET_VNET_HDR_LEN + flen2);
	struct net_vnet_hdr rh;
	memcpy(&rh, buf, sizeof(rh));
	CHECK(rh.flags == 0 && rh.gso_type == NET_VNET_GSO_NONE && rh.num_buffers == 0);
	CHECK(!memcmp(buf + NET_VNET_HDR_LEN, frame2, flen2));

	/* Nothing queued (after draining the kernel's own chatter): -EAGAIN. */
	struct iovec rv = { buf, sizeof(buf) };
	ssize_t r;
	while ((r = net_tap_recv(t, &rv, 1)) > 0)
		;
	CHECK(r == -EAGAIN);

	/* A buffer too small for the frame: consumed, reported, not delivered. */
	host_send(hs, ifindex, frame2, flen2);
	struct pollfd pfd = { .fd = net_tap_fd(t), .events = POLLIN };
	CHECK(poll(&pfd, 1, 2000) == 1);
	struct iovec small = { buf, NET_VNET_HDR_LEN + 20 };
	CHECK(net_tap_recv(t, &small, 1) == -EMSGSIZE);
	struct iovec tiny = { buf, 4 };
	CHECK(net_tap_recv(t, &tiny, 1) == -EINVAL);

	struct net_tap_stats st;
	net_tap_get_stats(t, &st);
	CHECK(st.tx_frames == 1 && st.tx_bytes == flen && st.tx_dropped == 2);
	CHECK(st.rx_frames >= 1 && st.rx_truncated >= 1);

	/* Link status follows the host interface's admin state. */
	set_link("vmt0", 0);
	CHECK(net_tap_link_up(t) == 0);
	set_link("vmt0", 1);
	CHECK(net_tap_link_up(t) == 1);

	/* The capture holds both frames, without vnet headers. */
	net_tap_set_capture(t, NULL);
	net_tap_close(t);
	CHECK(net_pcap_close(pcap) == 0);
	FILE *f = fopen(cap_path, "rb");
	CHECK(f);
	static uint8_t file[1 << 20];
	size_t flen_file = fread(file, 1, sizeof(file), f);
	fclose(f);
	unlink(cap_path);
	int saw_tx = 0, saw_rx = 0;
	for (size_t off = 24; off + 16 <= flen_file;) {
		uint32_t incl;
		memcpy(&incl, file + off + 8, 4);
		CHECK(off + 16 + incl <= flen_file);
		const uint8_t *fr = file + off + 16;
		if (incl == flen && !memcmp(fr, frame, flen))
			saw_tx++;
		if (incl == flen2 && !memcmp(fr, frame2, flen2))
			saw_rx++;
		off += 16 + incl;
	}
	CHECK(saw_tx == 1 && saw_rx == 1);
	close(hs);
}

static void test_roundtrip(void **state)
{
	run_in_netns(body_roundtrip);
}

/* The vnet header carries offload state both ways, and host->guest offloads follow
 * net_tap_set_offloads. The host socket uses PACKET_VNET_HDR (10-byte virtio_net_hdr). */
#define PKT_VNET 10
static void body_offloads(void)
{
	struct net_tap *t = open_test_tap("vmt2");
	int ifindex = (int)if_nametoindex("vmt2");
	unsigned sup = net_tap_supported_offloads(t);
	CHECK((sup & (NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6)) == (NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6));
	CHECK(net_tap_offloads(t) == 0);
	int hs = host_socket(ifindex, 1);
	static uint8_t frame[NET_MAX_FRAME], buf[NET_RX_BUF_MIN];

	/* guest -> host, NEEDS_CSUM: the kernel takes the partial checksum as is. */
	size_t flen = make_ip(frame, 17, 32);
	struct net_vnet_hdr vh = { .flags = NET_VNET_F_NEEDS_CSUM, .csum_start = 34, .csum_offset = 6 };
	struct iovec iov[2] = { { &vh, sizeof(vh) }, { frame, flen } };
	CHECK(net_tap_send(t, iov, 2) == (ssize_t)(NET_VNET_HDR_LEN + flen));
	size_t n = host_recv(hs, buf, sizeof(buf), PKT_VNET, 0x0800);
	struct net_vnet_hdr rh = { 0 };
	memcpy(&rh, buf, PKT_VNET);
	CHECK(n == PKT_VNET + flen);
	CHECK((rh.flags & NET_VNET_F_NEEDS_CSUM) && rh.csum_start == 34 && rh.csum_offset == 6);

	/* guest -> host, TSO: one 1500-byte-payload TCP super-frame with gso_size 500. */
	flen = make_ip(frame, 6, 1500);
	vh = (struct net_vnet_hdr){ .flags = NET_VNET_F_NEEDS_CSUM, .gso_type = NET_VNET_GSO_TCPV4,
				    .hdr_len = 54, .gso_size = 500, .csum_start = 34, .csum_offset = 16 };
	iov[1].iov_len = flen;
	CHECK(net_tap_send(t, iov, 2) == (ssize_t)(NET_VNET_HDR_LEN + flen));
	n = host_recv(hs, buf, sizeof(buf), PKT_VNET, 0x0800);
	memcpy(&rh, buf, PKT_VNET);
	CHECK(n == PKT_VNET + flen);
	CHECK(rh.gso_type == NET_VNET_GSO_TCPV4 && rh.gso_size == 500);

	/* A malformed header (GSO type the kernel does not know): dropped, not fatal. */
	vh.gso_type = 0x33;
	CHECK(net_tap_send(t, iov, 2) == -EINVAL);

	/* host -> guest with offloads off: the stack completes checksums and segments. */
	uint8_t out[PKT_VNET + 2000];
	struct net_vnet_hdr sh = { .flags = NET_VNET_F_NEEDS_CSUM, .csum_start = 34, .csum_offset = 6 };
	flen = make_ip(frame, 17, 32);
	memcpy(out, &sh, PKT_VNET);
	memcpy(out + PKT_VNET, frame, flen);
	host_send(hs, ifindex, out, PKT_VNET + flen);
	n = tap_recv(t, buf, sizeof(buf), 0x0800);
	memcpy(&rh, buf, sizeof(rh));
	CHECK(n == NET_VNET_HDR_LEN + flen && rh.flags == 0);
	CHECK(l4_csum_ok(buf + NET_VNET_HDR_LEN, n - NET_VNET_HDR_LEN));

	/* Checksum offload on: the partial checksum reaches the guest with NEEDS_CSUM. */
	CHECK(net_tap_set_offloads(t, true, false, false, false, false) == 0);
	CHECK(net_tap_offloads(t) == NET_OFF_CSUM);
	host_send(hs, ifindex, out, PKT_VNET + flen);
	n = tap_recv(t, buf, sizeof(buf), 0x0800);
	memcpy(&rh, buf, sizeof(rh));
	CHECK(n == NET_VNET_HDR_LEN + flen);
	CHECK((rh.flags & NET_VNET_F_NEEDS_CSUM) && rh.csum_start == 34 && rh.csum_offset == 6);

	/* TCP GSO from the host: segmented (3 x 500) without TSO4, one frame with it. */
	flen = make_ip(frame, 6, 1500);
	sh = (struct net_vnet_hdr){ .flags = NET_VNET_F_NEEDS_CSUM, .gso_type = NET_VNET_GSO_TCPV4,
				    .hdr_len = 54, .gso_size = 500, .csum_start = 34, .csum_offset = 16 };
	memcpy(out, &sh, PKT_VNET);
	memcpy(out + PKT_VNET, frame, flen);
	host_send(hs, ifindex, out, PKT_VNET + flen);
	for (int seg = 0; seg < 3; seg++) {
		n = tap_recv(t, buf, sizeof(buf), 0x0800);
		memcpy(&rh, buf, sizeof(rh));
		CHECK(n == NET_VNET_HDR_LEN + 54 + 500 && rh.gso_type == NET_VNET_GSO_NONE);
	}
	CHECK(net_tap_set_offloads(t, true, true, true, true, false) == 0);
	CHECK(net_tap_offloads(t) == (NET_OFF_CSUM | NET_OFF_TSO4 | NET_OFF_TSO6 | NET_OFF_ECN));
	host_send(hs, ifindex, out, PKT_VNET + flen);
	n = tap_recv(t, buf, sizeof(buf), 0x0800);
	memcpy(&rh, buf, sizeof(rh));
	CHECK(n == NET_VNET_HDR_LEN + flen);
	CHECK(rh.gso_type == NET_VNET_GSO_TCPV4 && rh.gso_size == 500 && (rh.flags & NET_VNET_F_NEEDS_CSUM));

	/* Dependencies are masked like virtio's: no TSO without CSUM, no ECN without TSO. */
	CHECK(net_tap_set_offloads(t, false, true, true, true, true) == 0 && net_tap_offloads(t) == 0);
	CHECK(net_tap_set_offloads(t, true, false, false, true, false) == 0 && net_tap_offloads(t) == NET_OFF_CSUM);

	close(hs);
	net_tap_close(t);
}

static void test_offloads(void **state)
{
	run_in_netns(body_offloads);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_offloads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
