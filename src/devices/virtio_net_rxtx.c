/* virtio-net data path on the device's I/O thread: guest TX chains are written to
 * the tap as they are ([vnet header][frame]), tap frames are read straight into
 * the guest's RX buffers. With VIRTIO_NET_F_MRG_RXBUF a frame that outgrows its
 * first buffer spills into a bounce buffer and is copied into further buffers;
 * all of a frame's buffers are published together (see push_merged). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <vmsvc/bus.h>
#include <vmsvc/err.h>
#include <vmsvc/iothread.h>
#include <vmsvc/vm.h>
#include "virtio_net_internal.h"

/* net_tap_recv takes fewer than 1024 iovecs and adds one of its own. */
#define VNET_RX_MAX_IOV 1000
/* Frames handled per call before yielding to the other fds of the thread (RX is
 * level-triggered and TX reschedules itself, so nothing is lost). */
#define VNET_BUDGET 256



void vnet_update_tap_watch(struct vnet *n)
{
	uint32_t want = 0;
	if (n->active && n->rx_wanted && !n->held)
		want |= EPOLLIN;
	if (n->active && n->tx_blocked && !n->held)
		want |= EPOLLOUT;
	if (want == n->tap_events)
		return;
	struct iothread *it = virtio_iothread(n->vdev);
	int fd = net_tap_fd(n->tap);
	if (n->tap_events)
		iothread_del_fd(it, fd);
	n->tap_events = 0;
	if (want) {
		if (iothread_add_fd(it, fd, want, vnet_tap_event, n) < 0)
			log_warn("%s: cannot watch the tap: %s", n->name, err_msg());
		else
			n->tap_events = want;
	}
}

void vnet_tap_event(void *opaque, int fd, uint32_t events)
{
	(void)fd;
	struct vnet *n = opaque;
	if ((events & EPOLLOUT) && n->tx_blocked)
		vnet_tx(n);
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		vnet_rx(n);
}

/* ---- service bus hooks (docs/bus.md) ---- */

/* A frame of `len` bytes (virtio-net header included) reached the guest. */
static void rx_published(struct vnet *n, size_t len)
{
	n->c.rx_frames++;
	if (bus_wants(&n->vm->bus, BUS_EV_NET_RX)) {
		struct bus_event ev = { .type = BUS_EV_NET_RX, .vcpu = -1,
					.u.net = { n->index, (uint32_t)(len - NET_VNET_HDR_LEN) } };
		bus_dispatch(&n->vm->bus, &ev);
	}
}

/* May the guest's frame go out? A gate's DENY drops it (the guest sees it sent). */
static bool tx_allowed(struct vnet *n, const struct virtq_elem *e)
{
	if (!bus_wants(&n->vm->bus, BUS_EV_NET_TX))
		return true;
	struct bus_event ev = { .type = BUS_EV_NET_TX, .vcpu = -1, .u.net = { n->index, e->out_len - NET_VNET_HDR_LEN } };
	return bus_dispatch(&n->vm->bus, &ev) != BUS_DENY;
}

/* ---- RX ---- */

static void set_num_buffers(struct virtq_elem *e, uint16_t nb)
{
	uint8_t le[2] = { (uint8_t)nb, (uint8_t)(nb >> 8) };
	buf_to_iov(e->iov + e->out_num, e->in_num, offsetof(struct net_vnet_hdr, num_buffers), le, 2);
}

/* Publish `cnt` used entries with one used->idx store, so a driver polling the
 * ring never sees the head of a mergeable frame without the rest of its buffers
 * (Linux would count them as missing). Same checks as virtq_push. */
static void push_merged(struct virtq *vq, struct virtq_elem **elems, const uint32_t *lens, unsigned cnt)
{
	if (!vq->ready)
		return;
	uint16_t idx = vq->used_idx;
	for (unsigned i = 0; i < cnt; i++) {
		uint32_t len = lens[i] < elems[i]->in_len ? lens[i] : elems[i]->in_len;
		volatile uint32_t *ent =
			(volatile uint32_t *)((volatile uint8_t *)vq->used + 4 + 8 * (idx & (vq->size - 1)));
		ent[0] = elems[i]->head < vq->size ? elems[i]->head : 0;
		ent[1] = len;
		idx++;
	}
	vq->used_idx = idx;
	__atomic_store_n(&vq->used[1], idx, __ATOMIC_RELEASE);
}

static void free_rx_pending(struct vnet *n)
{
	for (unsigned i = 0; i < n->rx_nelem; i++)
		free(n->rx_elems[i]);
	n->rx_nelem = 0;
	n->rx_pending = false;
	n->rx_spill_len = n->rx_spill_done = 0;
}

void vnet_drop_inflight(struct vnet *n, bool unpop)
{
	if (unpop && n->rx_nelem)
		virtq_unpop(virtio_queue(n->vdev, VNET_RXQ), n->rx_nelem);
	free_rx_pending(n);
	if (n->tx_blocked) {
		if (unpop)
			virtq_unpop(virtio_queue(n->vdev, VNET_TXQ), 1);
		free(n->tx_blocked);
		n->tx_blocked = NULL;
	}
}

/* A chain that cannot hold even the header: returned empty, logged once. */
static void rx_bad_chain(struct vnet *n, struct virtq *vq, struct virtq_elem *e, bool *pushed)
{
	n->c.rx_bad++;
	if (!n->logged_rx_bad) {
		n->logged_rx_bad = true;
		log_warn("%s: RX buffer of %u writable bytes cannot hold the %u-byte header; returned unused "
			 "(logged once)", n->name, e->in_len, NET_VNET_HDR_LEN);
	}
	virtq_push(vq, e, 0);
	free(e);
	*pushed = true;
}

/* The result of net_tap_recv for a popped chain that did not deliver a frame.
 * Returns what vnet_rx should do: 1 go on, <0 stop. The chain was given back. */
static int rx_failed(struct vnet *n, struct virtq *vq, struct virtq_elem *e, ssize_t got)
{
	virtq_unpop(vq, 1);
	free(e);
	if (got == -EAGAIN)
		return -EAGAIN;
	if (got == -EMSGSIZE) {
		n->c.rx_oversize++;
		if (!n->logged_rx_big) {
			n->logged_rx_big = true;
			log_warn("%s: a frame from the tap did not fit the guest's RX buffer; dropped (logged once)",
				 n->name);
		}
		return 1;
	}
	n->c.rx_errors++;
	if (!n->logged_rx_err) {
		n->logged_rx_err = true;
		log_warn("%s: reading the tap: %s; receive paused until the guest posts buffers (logged once)",
			 n->name, strerror((int)-got));
	}
	return (int)got;
}

/* Frame in the buffers: is it for us? (Filtered frames' buffers are reused.) */
static bool rx_wanted_frame(struct vnet *n, const struct iovec *iov, unsigned cnt, ssize_t got)
{
	uint8_t dst[6];
	if ((size_t)got < NET_VNET_HDR_LEN + 14 ||
	    iov_to_buf(iov, cnt, NET_VNET_HDR_LEN, dst, 6) != 6 || !vnet_rx_accept(n, dst)) {
		n->c.rx_filtered++;
		return false;
	}
	return true;
}

/* One frame into one chain (no MRG_RXBUF). 1 progress, 0 no buffer, <0 stop. */
static int rx_one(struct vnet *n, struct virtq *vq, bool *pushed)
{
	struct virtq_elem *e;
	int r = virtq_pop(vq, &e);
	if (r <= 0)
		return r == 0 ? 0 : -EIO;
	if (e->in_len < NET_VNET_HDR_LEN) {
		rx_bad_chain(n, vq, e, pushed);
		return 1;
	}
	const struct iovec *in = e->iov + e->out_num;
	unsigned cnt = e->in_num > VNET_RX_MAX_IOV ? VNET_RX_MAX_IOV : e->in_num;
	ssize_t got = net_tap_recv(n->tap, in, (int)cnt);
	if (got < 0)
		return rx_failed(n, vq, e, got);
	if (!rx_wanted_frame(n, in, cnt, got)) {
		virtq_unpop(vq, 1);
		free(e);
		return 1;
	}
	set_num_buffers(e, 1);
	virtq_push(vq, e, (uint32_t)got);
	free(e);
	rx_published(n, (size_t)got);
	*pushed = true;
	return 1;
}

/* Copy the spilled rest of a mergeable frame into further buffers; publish the
 * frame when complete. 1 done, 0 waiting for buffers, <0 queue broken. */
static int rx_continue(struct vnet *n, struct virtq *vq, bool *pushed)
{
	while (n->rx_spill_done < n->rx_spill_len) {
		if (n->rx_nelem >= vq->size) {
			/* The whole ring is not enough (tiny buffers): give them back, drop. */
			virtq_unpop(vq, n->rx_nelem);
			free_rx_pending(n);
			n->c.rx_oversize++;
			if (!n->logged_rx_big) {
				n->logged_rx_big = true;
				log_warn("%s: a frame does not fit in the whole RX ring; dropped (logged once)", n->name);
			}
			return 1;
		}
		struct virtq_elem *e;
		int r = virtq_pop(vq, &e);
		if (r == 0)
			return 0;
		if (r < 0) {
			free_rx_pending(n);
			return -EIO;
		}
		size_t left = n->rx_spill_len - n->rx_spill_done;
		size_t k = e->in_len < left ? e->in_len : left;
		buf_to_iov(e->iov + e->out_num, e->in_num, 0, n->bounce + n->rx_spill_done, k);
		n->rx_elems[n->rx_nelem] = e;
		n->rx_lens[n->rx_nelem++] = (uint32_t)k;
		n->rx_spill_done += k;
	}
	set_num_buffers(n->rx_elems[0], (uint16_t)n->rx_nelem);
	push_merged(vq, n->rx_elems, n->rx_lens, n->rx_nelem);
	size_t frame_len = n->rx_lens[0] + n->rx_spill_len;
	free_rx_pending(n);
	rx_published(n, frame_len);
	*pushed = true;
	return 1;
}

/* One frame with MRG_RXBUF: read into [first chain][bounce]; what did not fit in
 * the first chain is copied into the next ones. */
static int rx_one_mergeable(struct vnet *n, struct virtq *vq, bool *pushed)
{
	struct virtq_elem *e;
	int r = virtq_pop(vq, &e);
	if (r <= 0)
		return r == 0 ? 0 : -EIO;
	if (e->in_len < NET_VNET_HDR_LEN) {
		rx_bad_chain(n, vq, e, pushed);
		return 1;
	}
	unsigned cnt = e->in_num > VNET_RX_MAX_IOV ? VNET_RX_MAX_IOV : e->in_num;
	struct iovec iov[VNET_RX_MAX_IOV + 1];
	size_t cap = 0;
	for (unsigned i = 0; i < cnt; i++) {
		iov[i] = e->iov[e->out_num + i];
		cap += iov[i].iov_len;
	}
	iov[cnt] = (struct iovec){ n->bounce, NET_RX_BUF_MIN };
	ssize_t got = net_tap_recv(n->tap, iov, (int)cnt + 1);
	if (got < 0)
		return rx_failed(n, vq, e, got);
	if (!rx_wanted_frame(n, iov, cnt + 1, got)) {
		virtq_unpop(vq, 1);
		free(e);
		return 1;
	}
	if ((size_t)got <= cap) {
		set_num_buffers(e, 1);
		virtq_push(vq, e, (uint32_t)got);
		free(e);
		rx_published(n, (size_t)got);
		*pushed = true;
		return 1;
	}
	n->rx_pending = true;
	n->rx_elems[0] = e;
	n->rx_lens[0] = (uint32_t)cap;
	n->rx_nelem = 1;
	n->rx_spill_len = (size_t)got - cap;
	n->rx_spill_done = 0;
	return rx_continue(n, vq, pushed);
}

void vnet_rx(struct vnet *n)
{
	struct virtq *vq = virtio_queue(n->vdev, VNET_RXQ);
	if (n->held) {
		vnet_update_tap_watch(n);   /* frames wait in the tap until vnet resume */
		return;
	}
	if (!n->active || !vq || !vq->ready) {
		n->rx_wanted = false;
		vnet_update_tap_watch(n);
		return;
	}
	bool mrg = n->features & VNET_BIT(VIRTIO_NET_F_MRG_RXBUF);
	bool pushed = false;
	int r = 1;
	for (unsigned budget = VNET_BUDGET; budget > 0; budget--) {
		if (n->rx_pending)
			r = rx_continue(n, vq, &pushed);
		else
			r = mrg ? rx_one_mergeable(n, vq, &pushed) : rx_one(n, vq, &pushed);
		if (r <= 0)
			break;
	}
	if (pushed)
		virtio_notify_queue(vq);
	/* Watch the tap while the guest has buffers (r == -EAGAIN: the tap is empty;
	 * r == 1: budget used up, level-triggered epoll calls again). Out of buffers
	 * (0) or failing: stop until the guest kicks the RX queue (kicks stay on). */
	n->rx_wanted = (r == -EAGAIN || r == 1);
	vnet_update_tap_watch(n);
}

/* ---- TX ---- */

/* Send one chain. 0 done (sent or dropped), -EAGAIN keep it for EPOLLOUT.
 * ask_bus: false for a retry of a frame the bus already allowed. */
static int tx_one(struct vnet *n, struct virtq_elem *e, bool ask_bus)
{
	if (e->out_num == 0 || e->out_len < NET_VNET_HDR_LEN) {
		n->c.tx_bad++;
		if (!n->logged_tx_bad) {
			n->logged_tx_bad = true;
			log_warn("%s: TX chain with %u readable bytes (less than the header); dropped (logged once)",
				 n->name, e->out_len);
		}
		return 0;
	}
	if (e->out_len > VNET_TX_MAX) {
		n->c.tx_dropped++;
		if (!n->logged_tx_big) {
			n->logged_tx_big = true;
			log_warn("%s: TX frame of %u bytes is larger than %u; dropped (logged once)", n->name, e->out_len,
				 (unsigned)VNET_TX_MAX);
		}
		return 0;
	}
	if (ask_bus && !tx_allowed(n, e)) {
		n->c.tx_dropped++;
		return 0;
	}
	ssize_t r = net_tap_send(n->tap, e->iov, e->out_num);
	if (r == -EAGAIN)
		return -EAGAIN;
	if (r < 0)
		n->c.tx_dropped++;   /* counted by the tap too; never fatal */
	else
		n->c.tx_frames++;
	return 0;
}

void vnet_tx(struct vnet *n)
{
	struct virtq *vq = virtio_queue(n->vdev, VNET_TXQ);
	if (n->held || !n->active || !vq || !vq->ready)
		return;
	bool pushed = false;
	unsigned budget = VNET_BUDGET;
	if (n->tx_blocked) {
		if (tx_one(n, n->tx_blocked, false) == -EAGAIN)
			return;
		virtq_push(vq, n->tx_blocked, 0);
		free(n->tx_blocked);
		n->tx_blocked = NULL;
		pushed = true;
	}
	bool more = false;
	for (;;) {
		struct virtq_elem *e;
		int r = 0;
		virtq_set_notification(vq, false);
		while (budget > 0 && (r = virtq_pop(vq, &e)) == 1) {
			if (tx_one(n, e, true) == -EAGAIN) {
				n->tx_blocked = e;   /* kicks stay off: EPOLLOUT resumes us */
				goto out;
			}
			virtq_push(vq, e, 0);
			free(e);
			pushed = true;
			budget--;
		}
		if (budget == 0) {
			more = true;     /* kicks stay off: the reschedule event resumes us */
			break;
		}
		virtq_set_notification(vq, true);
		if (r < 0 || !virtq_pending(vq))
			break;
	}
out:
	if (pushed)
		virtio_notify_queue(vq);
	if (more) {
		uint64_t one = 1;
		if (write(n->resched_fd, &one, sizeof(one)) < 0) {
			/* eventfd counter full cannot happen; keep kicks on as a fallback */
			virtq_set_notification(vq, true);
		}
	}
	vnet_update_tap_watch(n);
}
