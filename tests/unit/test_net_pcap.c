/* Unit tests for the pcap capture writer: byte-exact output, iovec handling, snaplen
 * truncation, concurrent writers, the flush thread, error reporting, and (when tcpdump
 * is installed) that a real reader accepts the file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <vmsvc/err.h>
#include <vmsvc/net.h>

static char *tmp_path(void)
{
	static char path[64];
	strcpy(path, "/tmp/vmsvc-test-pcap-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	return path;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static const uint8_t hdr_nsec[24] = {
	0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0xff, 0xff, 0, 0, 1, 0, 0, 0,
};

static void test_header_and_records_exact(void **state)
{
	char *path = tmp_path();
	struct net_pcap *p;
	assert_int_equal(net_pcap_open(path, NET_PCAP_NSEC, 0, &p), 0);

	/* The header is on disk before any record or flush. */
	size_t len;
	uint8_t *b = slurp(path, &len);
	assert_int_equal(len, 24);
	assert_memory_equal(b, hdr_nsec, 24);
	free(b);

	/* Record 1: vnet header split across iovecs, frame split too; skip 12. */
	uint8_t vh[8] = { 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee };
	uint8_t mixed[10] = { 0xee, 0xee, 0xee, 0xee, 1, 2, 3, 4, 5, 6 };
	uint8_t tail[4] = { 7, 8, 9, 10 };
	struct iovec iov[3] = { { vh, 8 }, { mixed, 10 }, { tail, 4 } };
	net_pcap_record_at(p, 1700000000ull * 1000000000ull + 123456789ull, iov, 3, NET_VNET_HDR_LEN, SIZE_MAX);
	/* Record 2: capped by len (what recv actually returned). */
	net_pcap_record_at(p, 5ull * 1000000000ull + 1, iov, 3, NET_VNET_HDR_LEN, 3);
	/* Shorter than skip: not recorded. */
	struct iovec shortv = { vh, 8 };
	net_pcap_record_at(p, 0, &shortv, 1, NET_VNET_HDR_LEN, SIZE_MAX);
	/* Empty frame (header only): a zero-length record. */
	net_pcap_record_at(p, 0, iov, 2, NET_VNET_HDR_LEN, 0);

	uint64_t rec, drop;
	net_pcap_counts(p, &rec, &drop);
	assert_int_equal(rec, 3);
	assert_int_equal(drop, 0);
	assert_int_equal(net_pcap_close(p), 0);

	b = slurp(path, &len);
	static const uint8_t want_recs[] = {
		/* ts_sec 1700000000 = 0x6553f100, ts_nsec 123456789 = 0x075bcd15, 10, 10 */
		0x00, 0xf1, 0x53, 0x65, 0x15, 0xcd, 0x5b, 0x07, 10, 0, 0, 0, 10, 0, 0, 0,
		1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
		5, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0,
		1, 2, 3,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	assert_int_equal(len, 24 + sizeof(want_recs));
	assert_memory_equal(b, hdr_nsec, 24);
	assert_memory_equal(b + 24, want_recs, sizeof(want_recs));
	free(b);
	unlink(path);
}

static void test_usec_and_snaplen(void **state)
{
	char *path = tmp_path();
	struct net_pcap *p;
	assert_int_equal(net_pcap_open(path, NET_PCAP_USEC, 0, &p), 0);
	size_t big = NET_MAX_FRAME;   /* a GSO super-frame: longer than the snaplen */
	uint8_t *frame = malloc(big);
	for (size_t i = 0; i < big; i++)
		frame[i] = (uint8_t)i;
	struct iovec iov = { frame, big };
	net_pcap_record_at(p, 7ull * 1000000000ull + 999999999ull, &iov, 1, 0, SIZE_MAX);
	assert_int_equal(net_pcap_close(p), 0);

	size_t len;
	uint8_t *b = slurp(path, &len);
	assert_int_equal(rd32(b), 0xa1b2c3d4u);
	assert_int_equal(len, 24 + 16 + NET_PCAP_SNAPLEN);
	assert_int_equal(rd32(b + 24), 7);
	assert_int_equal(rd32(b + 28), 999999);                 /* microseconds */
	assert_int_equal(rd32(b + 32), NET_PCAP_SNAPLEN);        /* incl_len */
	assert_int_equal(rd32(b + 36), big);                     /* orig_len */
	assert_memory_equal(b + 40, frame, NET_PCAP_SNAPLEN);
	free(b);
	free(frame);
	unlink(path);
}

/* Many records, more than one buffer's worth, from four threads: every record must be
 * intact (no interleaving inside a record) and none lost. */
#define THREADS 4
#define PER_THREAD 2000
struct writer_arg {
	struct net_pcap *p;
	uint8_t id;
};

static void *writer(void *arg)
{
	struct writer_arg *w = arg;
	uint8_t frame[300];
	for (int i = 0; i < PER_THREAD; i++) {
		size_t n = 60 + (size_t)(i % 240);
		memset(frame, w->id, n);
		frame[0] = (uint8_t)(i & 0xff);
		struct iovec iov = { frame, n };
		net_pcap_record(w->p, &iov, 1, 0, SIZE_MAX);
	}
	return NULL;
}

static void test_threads(void **state)
{
	char *path = tmp_path();
	struct net_pcap *p;
	assert_int_equal(net_pcap_open(path, NET_PCAP_NSEC, 10, &p), 0);
	pthread_t th[THREADS];
	struct writer_arg args[THREADS];
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct writer_arg){ p, (uint8_t)(0xa0 + i) };
		assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(net_pcap_close(p), 0);

	size_t len, off = 24, count[THREADS] = { 0 };
	uint8_t *b = slurp(path, &len);
	while (off < len) {
		assert_true(off + 16 <= len);
		uint32_t incl = rd32(b + off + 8);
		assert_int_equal(incl, rd32(b + off + 12));
		assert_true(incl >= 60 && incl < 300 && off + 16 + incl <= len);
		const uint8_t *f = b + off + 16;
		uint8_t id = f[1];
		assert_true(id >= 0xa0 && id < 0xa0 + THREADS);
		for (uint32_t i = 1; i < incl; i++)
			assert_int_equal(f[i], id);
		count[id - 0xa0]++;
		off += 16 + incl;
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(count[i], PER_THREAD);
	free(b);
	unlink(path);
}

/* The flush thread puts records on disk without close (what a killed VMM leaves). */
static void test_periodic_flush(void **state)
{
	char *path = tmp_path();
	struct net_pcap *p;
	assert_int_equal(net_pcap_open(path, NET_PCAP_NSEC, 20, &p), 0);
	uint8_t frame[64] = { 1 };
	struct iovec iov = { frame, sizeof(frame) };
	net_pcap_record(p, &iov, 1, 0, SIZE_MAX);
	struct stat st = { 0 };
	for (int i = 0; i < 200 && st.st_size != 24 + 16 + 64; i++) {
		usleep(10000);
		assert_int_equal(stat(path, &st), 0);
	}
	assert_int_equal(st.st_size, 24 + 16 + 64);
	assert_int_equal(net_pcap_close(p), 0);
	unlink(path);
}

/* Write errors: reported once (as the flush/close result), later records dropped. */
static void test_write_error(void **state)
{
	struct net_pcap *p;
	err_clear();
	/* /dev/full accepts open but fails every write with ENOSPC: the header write fails. */
	assert_int_equal(net_pcap_open("/dev/full", NET_PCAP_NSEC, 0, &p), -ENOSPC);
	assert_null(p);
	assert_non_null(strstr(err_msg(), "/dev/full"));
	assert_int_equal(net_pcap_open("/nonexistent-dir/x.pcap", NET_PCAP_NSEC, 0, &p), -ENOENT);
	assert_non_null(strstr(err_msg(), "/nonexistent-dir/x.pcap"));
	assert_int_equal(net_pcap_open("", NET_PCAP_NSEC, 0, &p), -EINVAL);
}

/* A real reader accepts what we write (skipped when tcpdump is not installed). */
static void test_tcpdump_reads(void **state)
{
	const char *tcpdump = NULL;
	static const char *cands[] = { "/usr/bin/tcpdump", "/usr/sbin/tcpdump" };
	for (size_t i = 0; i < 2; i++)
		if (access(cands[i], X_OK) == 0)
			tcpdump = cands[i];
	if (!tcpdump) {
		print_message("tcpdump not installed: skipping reader check\n");
		skip();
	}
	char *path = tmp_path();
	struct net_pcap *p;
	assert_int_equal(net_pcap_open(path, NET_PCAP_NSEC, 0, &p), 0);
	/* Ethernet broadcast, ARP request who-has 10.0.0.2 tell 10.0.0.1 */
	static const uint8_t arp[42] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0e, 0x76, 0x6d, 0, 0, 1, 0x08, 0x06,
		0, 1, 0x08, 0, 6, 4, 0, 1, 0x0e, 0x76, 0x6d, 0, 0, 1, 10, 0, 0, 1,
		0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
	};
	struct iovec iov = { (void *)arp, sizeof(arp) };
	for (int i = 0; i < 3; i++)
		net_pcap_record(p, &iov, 1, 0, SIZE_MAX);
	assert_int_equal(net_pcap_close(p), 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "%s -nn -r %s 2>&1", tcpdump, path);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	char line[512];
	int arps = 0;
	while (fgets(line, sizeof(line), f)) {
		print_message("tcpdump: %s", line);
		if (strstr(line, "Request who-has 10.0.0.2 tell 10.0.0.1"))
			arps++;
	}
	assert_int_equal(pclose(f), 0);
	assert_int_equal(arps, 3);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_and_records_exact),
		cmocka_unit_test(test_usec_and_snaplen),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_periodic_flush),
		cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_tcpdump_reads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
