/* Block backend: a disk image (raw file or block device, optionally under a
 * copy-on-write overlay) served with asynchronous requests on host iovecs.
 * It knows nothing of virtio or guest memory; virtio-blk sits on top of it.
 *
 * Threading: one struct blk is driven by one thread (the device's iothread):
 * submit requests, call blk_kick() once per batch, poll blk_completion_fd() in
 * epoll and call blk_process_completions() when it is readable. Callbacks run on
 * that thread, inside blk_process_completions(), never inside a submit call.
 * I/O runs on io_uring, or on a small thread pool when io_uring is unavailable. */
#ifndef VMSVC_BLK_H
#define VMSVC_BLK_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define BLK_SECTOR_SIZE 512u
#define BLK_SERIAL_MAX 20          /* bytes, like VIRTIO_BLK_ID_BYTES */
#define BLK_DEFAULT_QUEUE_DEPTH 256u
#define BLK_MAX_QUEUE_DEPTH 4096u
#define BLK_MAX_IOV 1024u          /* iovec entries per request (IOV_MAX) */

enum blk_cache {
	BLK_CACHE_WRITEBACK = 0,   /* host page cache; flush = fdatasync */
	BLK_CACHE_NONE,            /* O_DIRECT: buffers, offsets and lengths aligned to the logical block size */
};

enum blk_engine_kind {
	BLK_ENGINE_AUTO = 0,       /* io_uring, else the thread pool (logged); env VMSVC_BLK_ENGINE=threads|uring overrides */
	BLK_ENGINE_URING,          /* io_uring or fail */
	BLK_ENGINE_THREADS,        /* synchronous syscalls on a small thread pool */
};

struct blk_spec {
	const char *path;          /* raw image or block device; the (never modified) base when overlaid */
	bool read_only;            /* writes, discard and write-zeroes complete with -EROFS */
	const char *overlay;       /* copy-on-write overlay file: opened, or created if missing/empty */
	bool ephemeral;            /* overlay in an unlinked temp file (in overlay_dir, $TMPDIR or /var/tmp), gone at exit */
	const char *overlay_dir;   /* ephemeral overlays only; NULL = $TMPDIR or /var/tmp */
	unsigned cluster_size;     /* new overlays: power of two, 4 KiB..16 MiB; 0 = 64 KiB */
	enum blk_cache cache;
	enum blk_engine_kind engine;
	unsigned queue_depth;      /* max requests in flight; 0 = BLK_DEFAULT_QUEUE_DEPTH */
	const char *serial;        /* <= BLK_SERIAL_MAX chars; NULL = derived from the path */
};

struct blk;

/* Open a disk; 0 or -errno with err_msg() naming the file (and offset, for overlay corruption). */
int blk_open(const struct blk_spec *spec, struct blk **out);
/* Wait for requests in flight (their callbacks are NOT run), persist overlay
 * metadata, close files. NULL is fine. */
void blk_close(struct blk *b);

uint64_t blk_size(const struct blk *b);              /* bytes, a multiple of 512 */
uint64_t blk_sectors(const struct blk *b);           /* 512-byte sectors */
unsigned blk_logical_block_size(const struct blk *b); /* 512, or the device's for O_DIRECT block devices */
bool blk_is_read_only(const struct blk *b);
bool blk_can_discard(const struct blk *b);
bool blk_can_write_zeroes(const struct blk *b);
const char *blk_serial(const struct blk *b);         /* NUL-terminated, <= BLK_SERIAL_MAX chars */
const char *blk_engine_name(const struct blk *b);    /* "io_uring" or "threads" */

/* ---- asynchronous requests ----
 * status is 0, or a negative errno: -EROFS (read-only disk), -EOPNOTSUPP
 * (operation unsupported), -EINVAL (range outside the disk or misaligned),
 * -EIO/-ENOSPC/... (host I/O error). bytes = bytes transferred (read/write) or
 * covered (discard/write-zeroes) on success, 0 otherwise. */
typedef void (*blk_done_fn)(void *opaque, int status, uint64_t bytes);

/* Virtio-style status classes; the values equal VIRTIO_BLK_S_OK/IOERR/UNSUPP. */
enum blk_status_class { BLK_S_OK = 0, BLK_S_IOERR = 1, BLK_S_UNSUPP = 2 };
enum blk_status_class blk_status_class(int status);

/* Each returns 0 when queued (done runs exactly once later), or -EAGAIN when
 * queue_depth requests are in flight (retry after completions) / -EINVAL for
 * NULL or too many iovecs (done is not run). The iovec array and its buffers
 * must stay valid until done runs. Offsets/lengths: multiples of 512. */
int blk_read(struct blk *b, uint64_t offset, const struct iovec *iov, unsigned iovcnt, blk_done_fn done, void *opaque);
int blk_write(struct blk *b, uint64_t offset, const struct iovec *iov, unsigned iovcnt, blk_done_fn done, void *opaque);
/* Completes when every write completed before it is on stable storage. */
int blk_flush(struct blk *b, blk_done_fn done, void *opaque);
/* Discard: the range may read back as zeros or as its old contents. */
int blk_discard(struct blk *b, uint64_t offset, uint64_t len, blk_done_fn done, void *opaque);
/* The range reads back as zeros. */
int blk_write_zeroes(struct blk *b, uint64_t offset, uint64_t len, blk_done_fn done, void *opaque);

/* Hand everything queued since the last kick to the kernel (one syscall). */
void blk_kick(struct blk *b);
/* eventfd that becomes readable when completions are pending. */
int blk_completion_fd(const struct blk *b);
/* Run the callbacks of finished requests (and kick what they queued); returns how many ran. */
int blk_process_completions(struct blk *b);
/* Requests accepted and not yet completed. */
unsigned blk_inflight(const struct blk *b);
/* Finished I/O is waiting for blk_process_completions() (e.g. cached reads that
 * completed inside blk_kick()); cheap, no syscall. */
bool blk_completions_ready(struct blk *b);
/* Kick and block until nothing is in flight, running callbacks (tests, shutdown). */
void blk_drain(struct blk *b);

/* ---- copy-on-write overlay inspection (clones, recording, migration) ---- */
enum blk_extent_kind { BLK_EXTENT_DATA = 1, BLK_EXTENT_ZERO = 2 };
struct blk_extent {
	uint64_t offset, length;    /* guest byte range, cluster aligned (the last may end at blk_size) */
	enum blk_extent_kind kind;  /* DATA: written to the overlay; ZERO: discarded/zeroed */
};
/* Cluster size of the overlay, 0 without one. */
uint64_t blk_overlay_cluster_size(const struct blk *b);
/* Next run of overlay clusters of one kind at or after *pos (start with *pos = 0).
 * Returns 1 and advances *pos past the run, 0 at the end, -EINVAL without an overlay.
 * Cost: a scan of the in-memory table (4 bytes per cluster). */
int blk_overlay_next_extent(const struct blk *b, uint64_t *pos, struct blk_extent *ext);
/* Synchronous read of overlay contents (DATA or ZERO clusters only; a BASE
 * cluster is an error) straight from the overlay file. Only while nothing else
 * drives b: no requests in flight and no submissions until it returns. */
int blk_overlay_read(const struct blk *b, uint64_t offset, void *buf, uint64_t len);

/* ---- image identity (suspend/resume: is this the same base image?) ----
 * hash: FNV-1a 64 over the size, the first and last MiB and 64 spread 4 KiB
 * samples, exactly as an overlay header's base_hash (docs/overlay-format.md). */
struct blk_identity {
	uint64_t size, hash, mtime_ns, ino, dev;
};
int blk_image_identity(const char *path, struct blk_identity *id);
/* Of the disk's image: the base under an overlay, else the disk itself. */
int blk_identity(const struct blk *b, struct blk_identity *id);

#endif
