/* Overlay internals shared by blk_overlay.c (I/O paths) and blk_overlay_meta.c
 * (create/open/validate/close). Format: docs/overlay-format.md. */
#ifndef VMSVC_BLK_OVERLAY_H
#define VMSVC_BLK_OVERLAY_H
#include <stddef.h>
#include "blk_internal.h"

#define OVL_MAGIC "VMSVCOVL"
#define OVL_VERSION 1u
#define OVL_HEADER_SIZE 4096u
#define OVL_PAGE 4096u                       /* table write-back granule */
#define OVL_PAGE_ENTRIES (OVL_PAGE / 4)
#define OVL_E_BASE 0u                        /* cluster not in the overlay: read the base */
#define OVL_E_ZERO 1u                        /* cluster reads as zeros */
#define OVL_BUSY 0x80000000u                 /* in memory only: allocation in progress */
#define OVL_MAX_PHYS 0x7fffffffu
#define OVL_MIN_BITS 12
#define OVL_MAX_BITS 24
#define OVL_DEFAULT_BITS 16
#define OVL_SAMPLE (1u << 20)                /* base identity: first and last MiB ... */
#define OVL_SAMPLES 64                       /* ... plus 64 spread 4 KiB samples */
#define OVL_BOUNCE_KEEP 64

struct ovl_header {                          /* little endian on disk */
	char magic[8];
	uint32_t version, header_size, cluster_bits, flags;
	uint64_t virtual_size, table_offset, table_entries, data_offset;
	uint64_t base_size, base_mtime_ns, base_hash, header_hash;
	uint32_t base_path_len, reserved;
	char base_path[OVL_HEADER_SIZE - 96];
} __attribute__((packed));
_Static_assert(sizeof(struct ovl_header) == OVL_HEADER_SIZE, "header is one 4 KiB block");
_Static_assert(offsetof(struct ovl_header, header_hash) == 80, "layout documented in docs/overlay-format.md");

enum piece_kind { P_READ, P_INPLACE, P_ALLOC, P_ZERO_CL, P_PUNCH, P_FLUSH };
enum { S_COPYUP = 1, S_WRITE };

struct ovl_piece {
	struct eio io;
	struct blk_req *req;
	uint8_t kind, stage;
	uint64_t vcl;                  /* virtual cluster (single-cluster pieces) */
	uint64_t coff, clen;           /* byte range inside that cluster */
	uint32_t phys;
	void *bounce;
	struct iovec biov;
	struct iovec *iov;             /* data source/destination slice; kept when recycled */
	unsigned iovcnt, iov_cap;
	struct ovl_piece *next;        /* free list / waiters */
	struct ovl_piece *all_next;    /* every piece ever allocated, for close */
};

struct ovl {
	char *path;
	int fd;
	bool ephemeral, ro;
	unsigned cbits;
	uint64_t csize, vsize, nclusters;
	uint64_t data_off, table_bytes, npages;
	uint32_t *table;               /* host order; OVL_BUSY only in memory */
	uint32_t *snap;                /* flush snapshot in on-disk layout, OVL_PAGE aligned */
	uint64_t *dirty, *snap_dirty;  /* bitmaps of table pages */
	uint64_t next_phys;
	struct ovl_piece *free_pieces, *all_pieces;
	struct ovl_piece *waiters, **waiters_tail;
	void *bounce_free;
	unsigned nbounce_free;
	struct blk_req *fl_cur, *fl_wait, **fl_wait_tail;
	int fl_stage, fl_status;
	unsigned fl_pending;
};

/* Copy the changed table pages into the snapshot (on-disk layout) and clear them. */
void ovl_snapshot_dirty(struct ovl *o);

#endif
