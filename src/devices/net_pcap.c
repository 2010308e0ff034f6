/* pcap capture writer: classic libpcap format (not pcapng), written by hand.
 *
 * File header (24 bytes): magic, version 2.4, thiszone 0, sigfigs 0, snaplen, linktype.
 * Record header (16 bytes): ts_sec, ts_usec|ts_nsec, incl_len, orig_len. All in host
 * byte order; the magic (0xa1b2c3d4 us / 0xa1b23c4d ns) tells readers which.
 *
 * Records go into one buffer under a mutex, so RX and TX threads interleave whole
 * records. The buffer is written out when the next record would not fit, by a flush
 * thread every flush_ms, and on close; writes always end on a record boundary. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vmsvc/err.h>
#include <vmsvc/net.h>

#define PCAP_MAGIC_USEC 0xa1b2c3d4u
#define PCAP_MAGIC_NSEC 0xa1b23c4du
#define LINKTYPE_ETHERNET 1
#define PCAP_REC_HDR 16
#define PCAP_BUF_SIZE (256 * 1024)   /* > one maximal record, so a record always fits */

struct net_pcap {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t flusher;
	bool flusher_running, stopping;
	int fd;
	bool nsec;
	unsigned flush_ms;
	int error;              /* first write error (negative errno), sticky */
	uint8_t *buf;
	size_t used;
	uint64_t recorded, dropped;
	char path[NET_PATH_MAX];
};

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);   /* host byte order by design */
}

/* Write the whole buffer; called with the lock held. */
static int flush_locked(struct net_pcap *p)
{
	size_t off = 0;
	while (off < p->used && !p->error) {
		ssize_t n = write(p->fd, p->buf + off, p->used - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			p->error = n < 0 ? -errno : -EIO;
			log_warn("capture %s: write failed: %s; capture stopped", p->path, strerror(-p->error));
			break;
		}
		off += (size_t)n;
	}
	p->used = 0;
	return p->error;
}

static void *flusher_main(void *arg)
{
	struct net_pcap *p = arg;
	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)p->flush_ms * 1000000ull;
		ts.tv_sec += (time_t)(ns / 1000000000ull);
		ts.tv_nsec = (long)(ns % 1000000000ull);
		pthread_cond_timedwait(&p->wake, &p->lock, &ts);
		if (p->used)
			flush_locked(p);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int net_pcap_open(const char *path, enum net_pcap_tsres res, unsigned flush_ms, struct net_pcap **out)
{
	*out = NULL;
	if (!path || !*path || strlen(path) >= NET_PATH_MAX)
		return err_set(EINVAL, "capture: bad file name");
	struct net_pcap *p = calloc(1, sizeof(*p));
	uint8_t *buf = malloc(PCAP_BUF_SIZE);
	if (!p || !buf) {
		free(p);
		free(buf);
		return err_set(ENOMEM, "capture %s: out of memory", path);
	}
	p->buf = buf;
	p->nsec = res == NET_PCAP_NSEC;
	p->flush_ms = flush_ms ? flush_ms : NET_PCAP_FLUSH_MS;
	strcpy(p->path, path);
	p->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (p->fd < 0) {
		int e = errno;
		free(buf);
		free(p);
		return err_set(e, "capture %s: %s", path, strerror(e));
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->wake, &ca);
	pthread_condattr_destroy(&ca);

	uint8_t *h = p->buf;
	put32(h, p->nsec ? PCAP_MAGIC_NSEC : PCAP_MAGIC_USEC);
	uint16_t major = 2, minor = 4;
	memcpy(h + 4, &major, 2);
	memcpy(h + 6, &minor, 2);
	put32(h + 8, 0);                 /* thiszone: timestamps are UTC */
	put32(h + 12, 0);                /* sigfigs */
	put32(h + 16, NET_PCAP_SNAPLEN);
	put32(h + 20, LINKTYPE_ETHERNET);
	p->used = 24;
	/* Header on disk at once: even a VMM killed before the first flush leaves a valid
	 * (empty) capture rather than a zero-length file. */
	int ret = flush_locked(p);
	if (ret < 0) {
		net_pcap_close(p);
		return err_set(-ret, "capture %s: writing header: %s", path, strerror(-ret));
	}
	if (pthread_create(&p->flusher, NULL, flusher_main, p) == 0)
		p->flusher_running = true;
	else
		log_warn("capture %s: no flush thread; data is written when the buffer fills", path);
	*out = p;
	return 0;
}

void net_pcap_record_at(struct net_pcap *p, uint64_t ts_ns, const struct iovec *iov, int iovcnt,
			size_t skip, size_t len)
{
	if (!p || iovcnt < 0)
		return;
	/* Frame length = bytes after `skip`, capped by len. */
	size_t total = 0;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (total < skip)
		return;
	size_t orig = total - skip;
	if (orig > len)
		orig = len;
	size_t incl = orig > NET_PCAP_SNAPLEN ? NET_PCAP_SNAPLEN : orig;
	/* pcap lengths are 32-bit: an absurd caller-supplied length must not wrap. */
	uint32_t orig32 = orig > UINT32_MAX ? UINT32_MAX : (uint32_t)orig;

	pthread_mutex_lock(&p->lock);
	if (p->error) {
		p->dropped++;
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (p->used + PCAP_REC_HDR + incl > PCAP_BUF_SIZE && flush_locked(p) < 0) {
		p->dropped++;
		pthread_mutex_unlock(&p->lock);
		return;
	}
	uint8_t *r = p->buf + p->used;
	uint64_t sec = ts_ns / 1000000000ull, frac = ts_ns % 1000000000ull;
	put32(r, (uint32_t)sec);
	put32(r + 4, (uint32_t)(p->nsec ? frac : frac / 1000));
	put32(r + 8, (uint32_t)incl);
	put32(r + 12, orig32);
	uint8_t *d = r + PCAP_REC_HDR;
	size_t want = incl, to_skip = skip;
	for (int i = 0; i < iovcnt && want; i++) {
		size_t l = iov[i].iov_len;
		const uint8_t *s = iov[i].iov_base;
		if (to_skip >= l) {
			to_skip -= l;
			continue;
		}
		s += to_skip;
		l -= to_skip;
		to_skip = 0;
		if (l > want)
			l = want;
		memcpy(d, s, l);
		d += l;
		want -= l;
	}
	p->used += PCAP_REC_HDR + incl;
	p->recorded++;
	pthread_mutex_unlock(&p->lock);
}

void net_pcap_record(struct net_pcap *p, const struct iovec *iov, int iovcnt, size_t skip, size_t len)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	net_pcap_record_at(p, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, iov, iovcnt, skip, len);
}

int net_pcap_flush(struct net_pcap *p)
{
	pthread_mutex_lock(&p->lock);
	int ret = flush_locked(p);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

void net_pcap_counts(struct net_pcap *p, uint64_t *recorded, uint64_t *dropped)
{
	pthread_mutex_lock(&p->lock);
	if (recorded)
		*recorded = p->recorded;
	if (dropped)
		*dropped = p->dropped;
	pthread_mutex_unlock(&p->lock);
}

int net_pcap_close(struct net_pcap *p)
{
	if (!p)
		return 0;
	if (p->flusher_running) {
		pthread_mutex_lock(&p->lock);
		p->stopping = true;
		pthread_cond_signal(&p->wake);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->flusher, NULL);
	}
	pthread_mutex_lock(&p->lock);
	int ret = flush_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (close(p->fd) < 0 && !ret) {
		ret = -errno;
		log_warn("capture %s: close failed: %s", p->path, strerror(errno));
	}
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p->buf);
	free(p);
	return ret;
}
