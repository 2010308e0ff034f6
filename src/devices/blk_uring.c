/* io_uring half of the block I/O engine: one ring per disk, SQEs prepared by
 * eng_queue() and submitted in one io_uring_submit() per batch (blk_kick), CQEs
 * signalled through a registered eventfd and reaped by the owning thread. */
#include <errno.h>
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
	return 0;
}

void uring_destroy(struct blk_engine *e)
{
	io_uring_queue_exit(&e->ring);
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

/* Move the backlog into SQEs and submit them all with one syscall. */
void uring_kick(struct blk_engine *e)
{
	for (;;) {
		while (e->backlog && uring_prep(e, e->backlog)) {
			e->backlog = e->backlog->next;
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

struct eio *uring_reap(struct blk_engine *e)
{
	struct eio *head = NULL, **tail = &head;
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
struct eio *uring_reap(struct blk_engine *e) { return NULL; }

#endif
