/* virtio-net: MAC from config, link up (VIRTIO_NET_F_STATUS), promiscuous
 * mode on/off through the control queue (acks checked), then test frames out
 * through the tap and back from tests/integration/tap_echo (run by the test
 * in the tap's network namespace).
 *
 * Test frame: dst PEER_MAC, src our MAC, ethertype 0x88b5, payload
 * "VMSVCNET" | seq (le32) | flags (le32) | data (byte k = seq * 7 + k).
 * The echo swaps the MACs and sets TEST_F_REFLECTED; with TEST_F_OTHER_MAC it
 * sends the reply to OTHER_MAC instead, which only a promiscuous receiver
 * sees (checked while promiscuous; after switching it off, whether such a
 * frame still arrives is printed, not judged: filtering is optional).
 * net.echo=0 skips the frame exchange (no echo on the host side). */
#include "lib/virtio.h"

#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_CTRL_RX 18
#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_RX_PROMISC 0
#define VIRTIO_NET_OK 0
#define CFG_MAC 0
#define CFG_STATUS 6

#define NET_HDR_LEN 12          /* virtio_net_hdr with num_buffers (VERSION_1) */
#define RX_BUFS 32
#define RX_BUF_LEN 2048
#define TX_BUFS 16
#define FRAMES 16
#define TEST_ETHERTYPE 0x88b5
#define TEST_F_OTHER_MAC 0x1u
#define TEST_F_REFLECTED 0x80000000u
#define OFF_MAGIC 14
#define OFF_SEQ 22
#define OFF_FLAGS 26
#define OFF_DATA 30
#define WAIT_CYCLES 15000000000ULL

static const uint8_t PEER_MAC[6] = { 0x02, 0x76, 0x6d, 0x73, 0x76, 0x63 };
static const uint8_t OTHER_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x99 };

static struct virtio_dev vd;
static struct virtq rxq, txq, ctrlq;
static uint8_t *rx_buf[RX_BUFS];
static uint8_t *tx_buf[TX_BUFS];
static unsigned tx_next;
static uint8_t mac[6];
static bool seen[FRAMES + 8];
static unsigned foreign_frames;

static bool has(unsigned bit)
{
	return (vd.features >> bit) & 1;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void post_rx(uint8_t *buf)
{
	struct virtq_sg sg = { buf, RX_BUF_LEN };
	if (virtq_add(&rxq, &sg, 0, 1, buf) != 0)
		kit_fail("rx ring full");
}

static void ctrl_cmd(uint8_t cls, uint8_t cmd, uint8_t val, const char *what)
{
	uint8_t *b = virtio_alloc(4, 4);
	if (!b)
		kit_fail("out of memory");
	b[0] = cls;
	b[1] = cmd;
	b[2] = val;
	b[3] = 0xee;
	struct virtq_sg sg[3] = { { b, 2 }, { b + 2, 1 }, { b + 3, 1 } };
	if (virtq_add(&ctrlq, sg, 2, 1, b) != 0)
		kit_fail("control queue full");
	virtq_kick(&ctrlq);
	uint32_t len = 0;
	void *t = virtq_wait(&ctrlq, &len, WAIT_CYCLES);
	if (t != b)
		kit_fail("%s: no control-queue completion (%p)", what, t);
	if (b[3] != VIRTIO_NET_OK)
		kit_fail("%s: ack %u", what, b[3]);
	kit_printf("net: %s acknowledged\n", what);
}

static void reclaim_tx(void)
{
	while (virtq_get(&txq, NULL))
		;
}

static unsigned frame_len(unsigned seq)
{
	return 60 + (seq * 97) % 400;   /* 60..459 bytes: short, cheap at CPL0 */
}

static void send_frame(unsigned seq, uint32_t flags)
{
	reclaim_tx();
	uint8_t *b = tx_buf[tx_next++ % TX_BUFS];
	unsigned len = frame_len(seq);
	memset(b, 0, NET_HDR_LEN);
	uint8_t *f = b + NET_HDR_LEN;
	memcpy(f, PEER_MAC, 6);
	memcpy(f + 6, mac, 6);
	f[12] = TEST_ETHERTYPE >> 8;
	f[13] = TEST_ETHERTYPE & 0xff;
	memcpy(f + OFF_MAGIC, "VMSVCNET", 8);
	put_le32(f + OFF_SEQ, seq);
	put_le32(f + OFF_FLAGS, flags);
	for (unsigned k = OFF_DATA; k < len; k++)
		f[k] = (uint8_t)(seq * 7 + k);
	/* Header and frame as two segments: a chain (or an indirect table). */
	struct virtq_sg sg[2] = { { b, NET_HDR_LEN }, { f, len } };
	if (virtq_add(&txq, sg, 2, 0, b) != 0)
		kit_fail("tx ring full");
	virtq_kick(&txq);
}

/* Wait for one reflected test frame; returns its seq, or -1 on timeout.
 * Frames that are not ours (IPv6 chatter, ...) are counted and dropped. */
static long receive_frame(uint64_t cycles, bool expect_other)
{
	uint64_t t0 = rdtsc();
	while (rdtsc() - t0 < cycles) {
		uint32_t len = 0;
		uint8_t *b = virtq_get(&rxq, &len);
		if (b == NULL) {
			reclaim_tx();
			cpu_relax();
			continue;
		}
		if (b == VIRTQ_BAD_USED)
			kit_fail("rx used ring names an unknown buffer");
		uint8_t *f = b + NET_HDR_LEN;
		long seq = -2;
		if (len < NET_HDR_LEN + OFF_DATA || len > RX_BUF_LEN) {
			kit_fail("rx used length %u", len);
		} else if (f[12] != (TEST_ETHERTYPE >> 8) || f[13] != (TEST_ETHERTYPE & 0xff) ||
			   memcmp(f + OFF_MAGIC, "VMSVCNET", 8) != 0) {
			foreign_frames++;
		} else {
			uint32_t s = get_le32(f + OFF_SEQ), flags = get_le32(f + OFF_FLAGS);
			unsigned flen = len - NET_HDR_LEN;
			if (!expect_other && (flags & TEST_F_OTHER_MAC)) {
				/* A late frame for OTHER_MAC (promiscuous off, no filter). */
				foreign_frames++;
				post_rx(b);
				virtq_kick(&rxq);
				continue;
			}
			if (!(flags & TEST_F_REFLECTED))
				kit_fail("frame %u came back unreflected (the tap loops?)", s);
			if (s >= FRAMES + 8 || flen < frame_len(s))
				kit_fail("reflected frame seq %u length %u", s, flen);
			if (memcmp(f, expect_other ? OTHER_MAC : mac, 6) != 0 || memcmp(f + 6, PEER_MAC, 6) != 0)
				kit_fail("frame %u: wrong addresses %02x:..:%02x -> %02x:..:%02x", s, f[6], f[11], f[0],
					 f[5]);
			for (unsigned k = OFF_DATA; k < frame_len(s); k++)
				if (f[k] != (uint8_t)(s * 7 + k))
					kit_fail("frame %u byte %u: %x", s, k, f[k]);
			seq = s;
		}
		post_rx(b);
		virtq_kick(&rxq);
		if (seq >= 0)
			return seq;
	}
	return -1;
}

int kit_main(void)
{
	bool echo = kit_cmdline_ulong("net.echo", 1) != 0;
	if (virtio_open(VIRTIO_ID_NET, &vd) != 0)
		kit_fail("no virtio-net device");
	uint64_t want = virtio_ring_features_wanted() | 1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_NET_F_STATUS |
			1ULL << VIRTIO_NET_F_CTRL_VQ | 1ULL << VIRTIO_NET_F_CTRL_RX;
	if (virtio_negotiate(&vd, want) != 0)
		kit_fail("feature negotiation");
	if (virtio_queue_setup(&vd, &rxq, 0, 64, VIRTIO_NO_VECTOR) != 0 ||
	    virtio_queue_setup(&vd, &txq, 1, 64, VIRTIO_NO_VECTOR) != 0)
		kit_fail("rx/tx queue set-up");
	bool ctrl = has(VIRTIO_NET_F_CTRL_VQ) && has(VIRTIO_NET_F_CTRL_RX);
	if (ctrl && virtio_queue_setup(&vd, &ctrlq, 2, 16, VIRTIO_NO_VECTOR) != 0)
		kit_fail("control queue set-up");
	for (unsigned i = 0; i < RX_BUFS; i++)
		if (!(rx_buf[i] = virtio_alloc(RX_BUF_LEN, 64)))
			kit_fail("out of memory");
	for (unsigned i = 0; i < TX_BUFS; i++)
		if (!(tx_buf[i] = virtio_alloc(NET_HDR_LEN + 1536, 64)))
			kit_fail("out of memory");
	virtio_driver_ok(&vd);
	for (unsigned i = 0; i < RX_BUFS; i++)
		post_rx(rx_buf[i]);
	virtq_kick(&rxq);

	if (has(VIRTIO_NET_F_MAC)) {
		for (unsigned i = 0; i < 6; i++)
			mac[i] = virtio_cfg8(&vd, CFG_MAC + i);
	} else {
		static const uint8_t fallback[6] = { 0x02, 0x6b, 0x69, 0x74, 0x00, 0x01 };
		memcpy(mac, fallback, 6);
	}
	kit_printf("net: mac %02x:%02x:%02x:%02x:%02x:%02x, status feature %d, control rx %d\n", mac[0], mac[1], mac[2],
		   mac[3], mac[4], mac[5], has(VIRTIO_NET_F_STATUS), ctrl);
	if (!has(VIRTIO_NET_F_MAC))
		kit_fail("device does not offer VIRTIO_NET_F_MAC");
	if (mac[0] & 1)
		kit_fail("configured MAC is a multicast address");
	if (has(VIRTIO_NET_F_STATUS)) {
		uint16_t st = virtio_cfg16(&vd, CFG_STATUS);
		kit_printf("net: link status %x\n", st);
		if (!(st & VIRTIO_NET_S_LINK_UP))
			kit_fail("link is down");
	}
	if (!ctrl)
		kit_fail("device does not offer the control queue with RX mode commands");
	ctrl_cmd(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 1, "promiscuous on");

	if (echo) {
		/* Keep a few frames in flight to exercise the tx ring. */
		unsigned sent = 0, got = 0;
		while (got < FRAMES) {
			while (sent < FRAMES && sent < got + 4)
				send_frame(sent++, 0);
			long s = receive_frame(WAIT_CYCLES, false);
			if (s < 0)
				kit_fail("no reflected frame after %u of %u (sent %u, foreign %u)", got, FRAMES, sent,
					 foreign_frames);
			if (seen[s])
				kit_fail("frame %ld reflected twice", s);
			seen[s] = true;
			got++;
		}
		kit_printf("net: %u frames reflected (%u foreign frames ignored)\n", got, foreign_frames);
		send_frame(FRAMES, TEST_F_OTHER_MAC);
		if (receive_frame(WAIT_CYCLES, true) != FRAMES)
			kit_fail("promiscuous mode: frame for another MAC did not arrive");
		kit_puts("net: promiscuous mode: frame for another MAC received\n");
	}
	ctrl_cmd(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, 0, "promiscuous off");
	if (echo) {
		send_frame(FRAMES + 1, TEST_F_OTHER_MAC);
		long s = receive_frame(WAIT_CYCLES / 10, true);
		kit_printf("net: promiscuous off: frame for another MAC %s\n", s < 0 ? "filtered" : "delivered");
		/* And the link still works for our own MAC. */
		send_frame(FRAMES + 2, 0);
		if (receive_frame(WAIT_CYCLES, false) != FRAMES + 2)
			kit_fail("no reflected frame after promiscuous off");
	}
	reclaim_tx();
	if (virtio_needs_reset(&vd))
		kit_fail("device signalled NEEDS_RESET");
	kit_printf("net: tx kicks %lu (%lu suppressed), rx kicks %lu (%lu suppressed)\n", txq.kicks, txq.kicks_suppressed,
		   rxq.kicks, rxq.kicks_suppressed);
	virtio_reset(&vd);
	return 0;
}
