/* Internals shared by the block backend files: the I/O engine (io_uring or
 * thread pool), the request pool and the copy-on-write overlay. */
#ifndef VMSVC_BLK_INTERNAL_H
#define VMSVC_BLK_INTERNAL_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <vmsvc/blk.h>
#ifdef HAVE_URING
#include <liburing.h>
#endif

struct blk;
struct eio;

/* ---- engine: one host I/O on one fd ---- */
enum eio_op { EIO_READV, EIO_WRITEV, EIO_FDATASYNC, EIO_FALLOCATE };

typedef void (*eio_done_fn)(struct blk *b, struct eio *io, int res);

struct eio {
	uint8_t op;
	bool eof_zero;          /* a read reaching EOF zero-fills the rest (base's last cluster) */
	int fd;
	int mode;               /* fallocate mode */
	uint64_t off;
	uint64_t len;           /* fallocate length; for readv/writev filled in by eio_start */
	struct iovec *iov;      /* not modified unless a short transfer forces a private copy */
	unsigned iovcnt;
	uint64_t done_bytes;    /* progress across short transfers */
	struct iovec *iov_own;  /* private remainder after a short transfer (rare; freed at the end) */
	int res;                /* engine result: bytes or -errno */
	eio_done_fn done;       /* called with total bytes or -errno */
	void *ctx;
	struct eio *next;
};

#define ENG_MAX_THREADS 8

struct blk_engine {
	enum blk_engine_kind kind;     /* URING or THREADS once initialised */
	int efd;                       /* completion eventfd (owned by struct blk) */
	struct eio *backlog, **backlog_tail; /* queued, not yet handed to the kernel/threads */
	unsigned nbacklog;
#ifdef HAVE_URING
	struct io_uring ring;
	unsigned sq_pending;           /* SQEs prepared since the last submit */
	struct eio *sync_done, **sync_done_tail; /* sync_writes done in uring_kick, not yet reaped */
#endif
	bool sync_writes;              /* io_uring: buffered writes with pwritev on the kicking thread */
	/* thread pool */
	pthread_t th[ENG_MAX_THREADS];
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct eio *work, **work_tail; /* FIFO for workers */
	struct eio *finished;          /* done by workers, not yet reaped */
	bool stop;
};

int eng_init(struct blk_engine *e, enum blk_engine_kind kind, unsigned depth, int efd);
void eng_destroy(struct blk_engine *e);
void eng_queue(struct blk_engine *e, struct eio *io);   /* never fails: backlogs when full */
void eng_kick(struct blk_engine *e);
/* Finished I/Os as a list (io->res set); NULL if none. */
struct eio *eng_reap(struct blk_engine *e);
/* Something for eng_reap (io_uring: without a syscall; threads: always false,
 * they signal the eventfd). */
bool eng_ready(struct blk_engine *e);
const char *eng_name(const struct blk_engine *e);

/* io_uring half (blk_uring.c); -ENOSYS when built without liburing. */
int uring_init(struct blk_engine *e, unsigned depth);
void uring_destroy(struct blk_engine *e);
void uring_kick(struct blk_engine *e);
struct eio *uring_reap(struct blk_engine *e);
bool uring_ready(struct blk_engine *e);

/* Start an eio (computes len for rw, resets progress) and queue it. */
void eio_start(struct blk *b, struct eio *io);
/* Engine completion: handles short transfers, then calls io->done. */
void eio_complete(struct blk *b, struct eio *io);

/* ---- requests ---- */
enum blk_op { BLK_OP_READ, BLK_OP_WRITE, BLK_OP_FLUSH, BLK_OP_DISCARD, BLK_OP_WZ };

struct blk_req {
	struct eio io;               /* the raw path's single I/O */
	struct iovec one_iov;        /* write-zeroes fallback chunk */
	uint8_t op;
	blk_done_fn done;
	void *opaque;
	uint64_t off, len;
	const struct iovec *iov;
	unsigned iovcnt;
	int status;
	unsigned pending;            /* overlay: pieces outstanding */
	struct blk_req *next;        /* free list / finished list / flush wait list */
};

struct ovl;

#define BLK_ZERO_BUF (1u << 20)

struct blk {
	char *path;
	int fd;                      /* raw image, or the base under an overlay (then O_RDONLY) */
	bool ro, direct, is_bdev;
	bool can_discard, can_wz, wz_fallocate;
	uint64_t size;               /* bytes exposed, multiple of 512 */
	uint64_t file_size;          /* size of the file/device at `path` */
	unsigned lbs;
	char serial[BLK_SERIAL_MAX + 1];
	int efd;
	struct blk_engine eng;
	bool eng_ok;
	struct blk_req *reqs, *free_reqs;
	unsigned depth, inflight;
	struct blk_req *finished, **finished_tail; /* completed, callbacks not yet run */
	bool in_process, closing;
	void *zero_buf;              /* BLK_ZERO_BUF zero bytes, 4 KiB aligned, never written to */
	struct ovl *ovl;
};

/* Record the result and queue the callback (run by blk_process_completions). */
void blk_req_finish(struct blk *b, struct blk_req *r, int status);

/* ---- overlay (blk_overlay.c) ---- */
int ovl_open(struct blk *b, const struct blk_spec *spec);
void ovl_close(struct blk *b);
void ovl_read(struct blk *b, struct blk_req *r);
void ovl_write(struct blk *b, struct blk_req *r);   /* BLK_OP_WRITE and BLK_OP_WZ */
void ovl_discard(struct blk *b, struct blk_req *r);
void ovl_flush(struct blk *b, struct blk_req *r);

/* 64-bit FNV-1a, for base identity and header checksums (not cryptographic). */
uint64_t blk_hash(uint64_t h, const void *p, size_t n);
#define BLK_HASH_INIT 0xcbf29ce484222325ull

#endif
