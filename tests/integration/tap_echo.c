/* Host-side reflector for the virtio_net test guest.
 *
 * usage: tap_echo IFNAME [SECONDS]
 *
 * Opens an AF_PACKET socket on IFNAME (the tap the VMM attaches to; run it in
 * the same network namespace) for the local-experimental ethertype 0x88b5 and
 * answers every test frame the guest sends (frames the interface receives
 * from the tap, i.e. the guest's transmissions) with a reflected copy:
 *   dst = the frame's source (the guest),
 *   src = the frame's destination (a fixed unicast "peer" address in the test),
 *   payload flags |= TEST_F_REFLECTED, everything else unchanged;
 * with TEST_F_OTHER_MAC set in the frame the reply goes to OTHER_MAC instead
 * of the guest (arrives only in promiscuous mode). Other frames are ignored.
 * Prints "ready" on stdout once the socket is bound; exits after SECONDS
 * (default 60) or SIGTERM/SIGINT, printing the count of reflected frames. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TEST_ETHERTYPE 0x88b5
#define TEST_MAGIC "VMSVCNET"
#define TEST_F_OTHER_MAC 0x1u
#define TEST_F_REFLECTED 0x80000000u
static const uint8_t OTHER_MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x99 };

/* Payload after the 14-byte Ethernet header: magic[8], seq (le32), flags (le32), data. */
#define OFF_MAGIC 14
#define OFF_SEQ 22
#define OFF_FLAGS 26
#define MIN_FRAME 30

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s IFNAME [SECONDS]\n", argv[0]);
		return 2;
	}
	long seconds = argc == 3 ? strtol(argv[2], NULL, 10) : 60;
	if (seconds <= 0)
		seconds = 60;
	unsigned ifindex = if_nametoindex(argv[1]);
	if (ifindex == 0) {
		fprintf(stderr, "tap_echo: no interface %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	int fd = socket(AF_PACKET, SOCK_RAW, htons(TEST_ETHERTYPE));
	if (fd < 0) {
		fprintf(stderr, "tap_echo: socket: %s\n", strerror(errno));
		return 1;
	}
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(TEST_ETHERTYPE),
				   .sll_ifindex = (int)ifindex };
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
		fprintf(stderr, "tap_echo: bind %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("ready\n");
	fflush(stdout);

	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long reflected = 0, ignored = 0;
	uint8_t frame[ETH_FRAME_LEN + 64];
	while (!stop) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left_ms = seconds * 1000 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left_ms <= 0)
			break;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int pr = poll(&p, 1, left_ms > 200 ? 200 : (int)left_ms);
		if (pr <= 0)
			continue;
		struct sockaddr_ll from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, frame, sizeof(frame), 0, (struct sockaddr *)&from, &flen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "tap_echo: recv: %s\n", strerror(errno));
			return 1;
		}
		/* Our own replies show up as outgoing: never reflect those. */
		if (from.sll_pkttype == PACKET_OUTGOING || n < MIN_FRAME ||
		    memcmp(frame + OFF_MAGIC, TEST_MAGIC, 8) != 0) {
			ignored++;
			continue;
		}
		uint32_t flags = get_le32(frame + OFF_FLAGS);
		if (flags & TEST_F_REFLECTED) {
			ignored++;
			continue;
		}
		uint8_t dst[6], src[6];
		memcpy(dst, frame, 6);
		memcpy(src, frame + 6, 6);
		memcpy(frame, (flags & TEST_F_OTHER_MAC) ? OTHER_MAC : src, 6);
		memcpy(frame + 6, dst, 6);
		put_le32(frame + OFF_FLAGS, flags | TEST_F_REFLECTED);
		if (send(fd, frame, (size_t)n, 0) != n) {
			fprintf(stderr, "tap_echo: send: %s\n", strerror(errno));
			return 1;
		}
		reflected++;
	}
	fprintf(stderr, "tap_echo: reflected %lu frames, ignored %lu\n", reflected, ignored);
	close(fd);
	return 0;
}
