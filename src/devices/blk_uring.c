/* io_uring half of the block I/O engine: one ring per disk, SQEs prepared by
 * eng_queue() and submitted in one io_uring_submit() per batch (blk_kick), CQEs
 * signalled through a registered eventfd and reaped by the owning thread. */
#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>
#include <string.h>
#include <vmsvc/err.h>
#include "blk_internal.h"

#ifdef HAVE_URING

int uring_init(struct blk_engine *e, unsigned depth)
{
	unsigned entries = 1;
	while (entries < depth && entries < 4096)
		entries <<= 1;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	/* Room for overlay pieces and flush sub-steps beyond the request count. */
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 4;
	int r = io_uring_queue_init_params(entries, &e->ring, &p);
	if (r < 0)
		return err_set(-r, "io_uring_queue_init: %s", strerror(-r));
	r = io_uring_register_eventfd(&e->ring, e->efd);
	if (r < 0) {
		io_uring_queue_exit(&e->ring);
		return err_set(-r, "io_uring_register_eventfd: %s", strerror(-r));
	}
	e->sq_pending = 0;
	e->sync_done = NULL;
	e->sync_done_tail = &e->sync_done;
	return 0;
}

void uring_destroy(struct blk_engine *e)
{
	io_uring_queue_exit(&e->ring);
}

/* A buffered write right here. io_uring cannot do one without blocking on ext4
 * (and most file systems): it hands every buffered write to an io-wq worker,
 * which costs a thread wake-up there and back per write, and io-wq runs the
 * writes to one file one at a time anyway. Copying into the page cache on the
 * device thread measured 1.3-1.5x faster on the benchmark's write rows
 * (docs/devices.md, "Host ceiling"). Completion is reaped like a CQE. */
static void uring_sync_write(struct blk_engine *e, struct eio *io)
{
	ssize_t r;
	do
		r = pwritev(io->fd, io->iov, (int)io->iovcnt, (off_t)io->off);
	while (r < 0 && errno == EINTR);
	io->res = r < 0 ? -errno : (int)(r > 0x7fffffff ? 0x7fffffff : r);
	io->next = NULL;
	*e->sync_done_tail = io;
	e->sync_done_tail = &io->next;
}

static bool uring_prep(struct blk_engine *e, struct eio *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
	if (!sqe)
		return false;
	switch (io->op) {
	case EIO_READV:
		io_uring_prep_readv(sqe, io->fd, io->iov, io->iovcnt, io->off);
		break;
	case EIO_WRITEV:
		io_uring_prep_writev(sqe, io->fd, io->iov, io->iovcnt, io->off);
		break;
	case EIO_FDATASYNC:
		io_uring_prep_fsync(sqe, io->fd, IORING_FSYNC_DATASYNC);
		break;
	case EIO_FALLOCATE:
		io_uring_prep_fallocate(sqe, io->fd, io->mode, io->off, io->len);
		break;
	}
	io_uring_sqe_set_data(sqe, io);
	e->sq_pending++;
	return true;
}

/* Move the backlog into SQEs (buffered writes: done on the spot when
 * sync_writes) and submit them all with one syscall. */
static void uring_kick_loop(struct blk_engine *e, bool *synced)
{
	for (;;) {
		while (e->backlog) {
			struct eio *io = e->backlog, *next = io->next;   /* io->next is reused below */
			if (e->sync_writes && io->op == EIO_WRITEV) {
				uring_sync_write(e, io);
				*synced = true;
			} else if (!uring_prep(e, io)) {
				break;
			}
			e->backlog = next;
			e->nbacklog--;
		}
		if (!e->backlog)
			e->backlog_tail = &e->backlog;
		if (!e->sq_pending)
			return;
		int r = io_uring_submit(&e->ring);
		if (r <= 0) {
			/* -EBUSY/-EAGAIN: the kernel wants CQEs reaped first; retried on the next kick. */
			if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
				log_warn("blk: io_uring_submit: %s", strerror(-r));
			return;
		}
		e->sq_pending -= (unsigned)r < e->sq_pending ? (unsigned)r : e->sq_pending;
		if (!e->backlog)
			return;
	}
}

void uring_kick(struct blk_engine *e)
{
	bool synced = false;
	uring_kick_loop(e, &synced);
	/* Whoever waits on the eventfd (epoll, blk_drain) must see the sync writes. */
	if (synced) {
		uint64_t one = 1;
		if (write(e->efd, &one, sizeof(one)) < 0)
			log_warn("blk: eventfd write: %s", strerror(errno));
	}
}

bool uring_ready(struct blk_engine *e)
{
	return e->sync_done || io_uring_cq_ready(&e->ring);
}

struct eio *uring_reap(struct blk_engine *e)
{
	struct eio *head = e->sync_done, **tail = head ? e->sync_done_tail : &head;
	e->sync_done = NULL;
	e->sync_done_tail = &e->sync_done;
	struct io_uring_cqe *cqe;
	unsigned head_idx, n = 0;
	io_uring_for_each_cqe(&e->ring, head_idx, cqe) {
		struct eio *io = io_uring_cqe_get_data(cqe);
		n++;
		if (!io)
			continue;
		io->res = cqe->res;
		io->next = NULL;
		*tail = io;
		tail = &io->next;
	}
	if (n)
		io_uring_cq_advance(&e->ring, n);
	return head;
}

#else /* !HAVE_URING */

int uring_init(struct blk_engine *e, unsigned depth)
{
	return err_set(ENOSYS, "built without liburing");
}
void uring_destroy(struct blk_engine *e) {}
void uring_kick(struct blk_engine *e) {}
bool uring_ready(struct blk_engine *e) { return false; }
struct eio *uring_reap(struct blk_engine *e) { return NULL; }

#endif
