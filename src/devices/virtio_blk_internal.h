/* virtio-blk internals shared by virtio_blk.c (device, spec, config, lifecycle)
 * and virtio_blk_req.c (request parsing, submission, completion). Also
 * included by tests/unit/test_virtio_blk.c for the spec parser. */
#ifndef VMSVC_VIRTIO_BLK_INTERNAL_H
#define VMSVC_VIRTIO_BLK_INTERNAL_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <vmsvc/blk.h>
#include <vmsvc/virtio.h>

/* ---- virtio 1.2, 5.2 ---- */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_WZ_FLAG_UNMAP 1u
#define VIRTIO_BLK_ID_BYTES 20u

/* Device configuration layout (struct virtio_blk_config), byte offsets. */
#define VBLK_CFG_CAPACITY 0            /* le64, 512-byte sectors */
#define VBLK_CFG_SIZE_MAX 8            /* le32 */
#define VBLK_CFG_SEG_MAX 12            /* le32 */
#define VBLK_CFG_BLK_SIZE 20           /* le32 */
#define VBLK_CFG_NUM_QUEUES 34         /* le16 */
#define VBLK_CFG_MAX_DISCARD_SECTORS 36
#define VBLK_CFG_MAX_DISCARD_SEG 40
#define VBLK_CFG_DISCARD_ALIGN 44
#define VBLK_CFG_MAX_WZ_SECTORS 48
#define VBLK_CFG_MAX_WZ_SEG 52
#define VBLK_CFG_WZ_MAY_UNMAP 56       /* u8 */
#define VBLK_CFG_SIZE 60               /* up to and including unused1[3] */

/* ---- our limits ---- */
#define VBLK_QUEUE_SIZE 256u           /* queue_max_size offered */
#define VBLK_SIZE_MAX (1u << 20)       /* bytes per segment: seg_max * size_max < VIRTQ_MAX_CHAIN_BYTES */
#define VBLK_SEG_MAX (VBLK_QUEUE_SIZE - 2)   /* data segments (header and status excluded), as QEMU */
#define VBLK_MAX_DWZ_SEGS 8u           /* DISCARD / WRITE_ZEROES segments per request */
#define VBLK_MAX_DWZ_SECTORS (1u << 22) /* 2 GiB per segment */
/* Every request takes at most VBLK_MAX_DWZ_SEGS backend requests, so with this
 * depth the backend never says -EAGAIN. */
#define VBLK_BACKEND_DEPTH (VBLK_QUEUE_SIZE * VBLK_MAX_DWZ_SEGS)
/* Adaptive polling of the queue and the backend after activity (see
 * virtio_blk_req.c): default window, overridden by VMSVC_BLK_POLL_US (0 = off),
 * and the longest the I/O thread stays in one polling stretch. */
#define VBLK_POLL_DEFAULT_NS 0u   /* off: on a busy 2-CPU host the spinning thread slows the vCPU */
#define VBLK_POLL_MAX_US_ENV 1000u
#define VBLK_POLL_MAX_NS 2000000u

/* Contiguous reads (or writes) taken in one batch go to the backend as one
 * request, as QEMU does: fewer, larger host I/Os for sequential streams. */
#define VBLK_MERGE_MAX_IOV 256u
#define VBLK_MERGE_MAX_BYTES (2u << 20)
#define VBLK_MERGES (VBLK_QUEUE_SIZE / 2)   /* a merge holds >= 2 requests */

struct virtio_blk;
struct vblk_req;

struct vblk_merge {
	struct iovec iov[VBLK_MERGE_MAX_IOV];   /* all requests' data, in order */
	struct vblk_req *reqs;                  /* linked through merge_next */
	struct vblk_merge *next_free;
};

/* The run being collected while a batch is taken (never outlives the batch). */
struct vblk_run {
	bool active, write;
	uint64_t start, end;           /* sectors */
	struct vblk_req *first, *last;
	unsigned n, iovcnt;
	uint64_t bytes;
};

/* One guest request, preallocated per descriptor head (a head cannot be in
 * flight twice, so the array bounds the requests in flight). */
struct vblk_req {
	struct virtio_blk *dev;
	struct virtq_elem *elem;       /* from virtq_pop; freed at completion */
	uint8_t *status;               /* last writable byte of the chain */
	struct iovec *data;            /* data segments: a slice of elem->iov, adjusted */
	unsigned ndata;
	uint32_t written;              /* data bytes the device wrote (used length - 1) */
	unsigned pending;              /* backend requests outstanding */
	uint8_t result;                /* VIRTIO_BLK_S_* so far */
	uint8_t type;
	uint64_t sector;               /* for error logs */
	uint64_t bytes;                /* data bytes, for bus events */
	struct vblk_req *merge_next;   /* next request of the same merged I/O */
	bool busy;
};

struct virtio_blk {
	struct virtio_dev *vdev;
	struct blk *blk;
	struct iothread *it;
	bool fd_watched;
	uint64_t features;             /* offered (device-specific bits) */
	uint64_t capacity;             /* 512-byte sectors */
	uint8_t config[VBLK_CFG_SIZE];
	char name[32];                 /* "virtio-blk0" for logs */
	struct bus *bus;               /* the VM's service bus (request gates, completions) */
	int index;                     /* among this VM's disks, for bus events */
	uint64_t denied;               /* requests a bus gate refused (statistics) */
	/* I/O-thread state */
	struct vblk_req reqs[VBLK_QUEUE_SIZE];
	struct vblk_merge *merges;     /* VBLK_MERGES, allocated at attach */
	struct vblk_merge *free_merges;
	struct vblk_run run;
	uint64_t merged;               /* requests that went out merged (statistics) */
	unsigned inflight;             /* busy entries of reqs */
	bool dropping;                 /* reset/destroy: completions free, never touch guest memory */
	bool stopped;                  /* destroy in progress: kicks ignored */
	bool held;                     /* quiesced for a snapshot / restored, not yet running:
	                                * no chain is taken (the transport holds the kicks) */
	bool broken;                   /* structural violation seen: NEEDS_RESET until reset */
	bool need_notify;              /* used entries pushed since the last notify */
	uint64_t poll_ns;              /* polling window after activity, 0 = off */
	uint64_t malformed;            /* malformed requests (first logged) */
	uint64_t io_errors;            /* backend errors (first few logged) */
	uint64_t requests;             /* completed requests (statistics) */
	uint64_t snapshot_completed;   /* requests a snapshot's quiesce found in flight */
};

/* Parse "PATH[,ro][,overlay=FILE][,ephemeral][,serial=ID][,cache=none|writeback]"
 * into *spec. Pointers in *spec point into *buf (a copy of `text`; free() it
 * after blk_open). -EINVAL with a one-line message on a bad spec. */
int virtio_blk_parse_spec(const char *text, struct blk_spec *spec, char **buf);

/* virtio_blk_req.c: the I/O thread's work. */
void vblk_queue_notify(void *opaque, struct virtq *vq);
void vblk_completion_ready(void *opaque, int fd, uint32_t events);
/* Wait for every backend request; with drop, completions free their element
 * without touching guest memory (reset, destroy), else they complete normally
 * (save). I/O thread. */
void vblk_drain(struct virtio_blk *d, bool drop);

#endif
