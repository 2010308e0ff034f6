/* Split virtqueues (virtio 1.2, 2.7) over guest RAM, hardened against hostile
 * drivers. Nothing here trusts guest memory: every descriptor is copied out once
 * before it is checked (the guest may change it concurrently), every buffer is
 * translated with gpa_to_hva (bounds and overflow checked), chains are bounded
 * by the table size (no loops), indirect tables by VIRTQ_MAX_INDIRECT and the
 * total length by VIRTQ_MAX_CHAIN_BYTES. Host is little endian (x86-64), as the
 * rings are. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/mem.h>
#include <vmsvc/virtio.h>

struct vdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct vdesc) == 16, "descriptor layout");

#define SCRATCH_SEGS (VIRTQ_MAX_SIZE > VIRTQ_MAX_INDIRECT ? VIRTQ_MAX_SIZE : VIRTQ_MAX_INDIRECT)

/* Ring field accessors: avail = {flags, idx, ring[size], used_event};
 * used = {flags, idx, {id, len}[size], avail_event}. */
static uint16_t avail_idx(const struct virtq *vq) { return __atomic_load_n(&vq->avail[1], __ATOMIC_ACQUIRE); }
static uint16_t avail_flags(const struct virtq *vq) { return __atomic_load_n(&vq->avail[0], __ATOMIC_RELAXED); }
static uint16_t avail_ring(const struct virtq *vq, uint16_t i) { return vq->avail[2 + (i & (vq->size - 1))]; }
static uint16_t used_event(const struct virtq *vq) { return __atomic_load_n(&vq->avail[2 + vq->size], __ATOMIC_RELAXED); }
static void set_avail_event(struct virtq *vq, uint16_t v)
{
	__atomic_store_n(&vq->used[2 + 4 * (unsigned)vq->size], v, __ATOMIC_RELAXED);
}

static int fail(struct virtq *vq, const char *why)
{
	vq->errors++;
	if (!vq->broken) {
		vq->broken = true;
		log_warn("virtqueue %u: %s; queue stopped until reset", vq->index, why);
		if (vq->on_error)
			vq->on_error(vq, why);
	}
	return -EIO;
}

int virtq_setup(struct virtq *vq, const struct guest_mem *mem, uint16_t size, uint64_t desc_gpa,
		uint64_t avail_gpa, uint64_t used_gpa, bool event_idx, bool indirect)
{
	virtq_reset(vq);
	if (size == 0 || size > VIRTQ_MAX_SIZE || (size & (size - 1)))
		return err_set(EINVAL, "virtqueue %u: size %u is not a power of two <= %u", vq->index, size,
			       VIRTQ_MAX_SIZE);
	if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3))
		return err_set(EINVAL, "virtqueue %u: misaligned ring addresses", vq->index);
	void *d = gpa_to_hva(mem, desc_gpa, 16ULL * size);
	void *a = gpa_to_hva(mem, avail_gpa, 6 + 2ULL * size);
	void *u = gpa_to_hva(mem, used_gpa, 6 + 8ULL * size);
	if (!d || !a || !u)
		return err_set(EFAULT, "virtqueue %u: ring outside guest RAM", vq->index);
	if (!vq->scratch) {
		vq->scratch = calloc(SCRATCH_SEGS, sizeof(*vq->scratch));
		if (!vq->scratch)
			return err_set(ENOMEM, "virtqueue: out of memory");
	}
	vq->mem = mem;
	vq->size = size;
	vq->desc_gpa = desc_gpa;
	vq->avail_gpa = avail_gpa;
	vq->used_gpa = used_gpa;
	vq->desc = d;
	vq->avail = a;
	vq->used = u;
	vq->event_idx = event_idx;
	vq->indirect = indirect;
	vq->ready = true;
	return 0;
}

void virtq_reset(struct virtq *vq)
{
	vq->ready = vq->broken = vq->event_idx = vq->indirect = vq->kicks_off = false;
	vq->signalled_valid = false;
	vq->size = 0;
	vq->desc = NULL;
	vq->avail = vq->used = NULL;
	vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
	vq->last_avail_idx = vq->used_idx = vq->signalled_used = 0;
}

void virtq_free(struct virtq *vq)
{
	virtq_reset(vq);
	free(vq->scratch);
	vq->scratch = NULL;
}

unsigned virtq_pending(struct virtq *vq)
{
	if (!vq->ready || vq->broken)
		return 0;
	uint16_t n = (uint16_t)(avail_idx(vq) - vq->last_avail_idx);
	return n <= vq->size ? n : 0;
}

static void read_desc(const volatile uint8_t *table, unsigned i, struct vdesc *out)
{
	/* One copy; the checks below look only at the copy. */
	memcpy(out, (const void *)(table + 16 * (size_t)i), sizeof(*out));
}

int virtq_pop(struct virtq *vq, struct virtq_elem **out)
{
	*out = NULL;
	if (!vq->ready)
		return 0;
	if (vq->broken)
		return -EIO;
	uint16_t avail = avail_idx(vq);   /* acquire: ring entries below are read after it */
	uint16_t pending = (uint16_t)(avail - vq->last_avail_idx);
	if (pending > vq->size)
		return fail(vq, "available index moved more than the queue size ahead");
	if (pending == 0)
		return 0;
	uint16_t head = avail_ring(vq, vq->last_avail_idx);
	if (head >= vq->size)
		return fail(vq, "available ring entry out of range");

	const volatile uint8_t *table = vq->desc;
	unsigned limit = vq->size, i = head, visited = 0, nseg = 0, nout = 0;
	bool indirect = false, writable_seen = false;
	uint64_t total_out = 0, total_in = 0;
	for (;;) {
		if (visited >= limit)
			return fail(vq, "descriptor chain loops or is longer than its table");
		struct vdesc d;
		read_desc(table, i, &d);
		visited++;
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!vq->indirect)
				return fail(vq, "indirect descriptor without VIRTIO_F_RING_INDIRECT_DESC");
			if (indirect)
				return fail(vq, "nested indirect descriptor");
			if (visited != 1 || (d.flags & VIRTQ_DESC_F_NEXT))
				return fail(vq, "indirect descriptor is not alone in its chain");
			if (d.len == 0 || d.len % 16 || d.len / 16 > VIRTQ_MAX_INDIRECT)
				return fail(vq, "indirect table length is not a non-zero multiple of 16 within limits");
			const void *t = gpa_to_hva(vq->mem, d.addr, d.len);
			if (!t)
				return fail(vq, "indirect table outside guest RAM");
			table = t;
			limit = d.len / 16;
			i = 0;
			visited = 0;
			indirect = true;
			continue;
		}
		bool w = d.flags & VIRTQ_DESC_F_WRITE;
		if (!w && writable_seen)
			return fail(vq, "device-readable descriptor after a device-writable one");
		writable_seen |= w;
		uint64_t *total = w ? &total_in : &total_out;
		*total += d.len;
		if (total_in + total_out > VIRTQ_MAX_CHAIN_BYTES)
			return fail(vq, "descriptor chain longer than the byte limit");
		if (d.len) {
			void *p = gpa_to_hva(vq->mem, d.addr, d.len);
			if (!p)
				return fail(vq, "buffer outside guest RAM");
			if (nseg >= SCRATCH_SEGS)   /* cannot happen: visited <= limit <= SCRATCH_SEGS */
				return fail(vq, "too many segments");
			vq->scratch[nseg].iov_base = p;
			vq->scratch[nseg].iov_len = d.len;
			nseg++;
			if (!w)
				nout++;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		i = d.next;
		if (i >= limit)
			return fail(vq, "next descriptor index out of range");
	}

	struct virtq_elem *e = malloc(sizeof(*e) + nseg * sizeof(e->iov[0]));
	if (!e)
		return -ENOMEM;   /* nothing consumed: the chain is retried later */
	e->head = head;
	e->out_num = (uint16_t)nout;
	e->in_num = (uint16_t)(nseg - nout);
	e->out_len = (uint32_t)total_out;
	e->in_len = (uint32_t)total_in;
	memcpy(e->iov, vq->scratch, nseg * sizeof(e->iov[0]));
	vq->last_avail_idx++;
	if (vq->event_idx && !vq->kicks_off)
		set_avail_event(vq, vq->last_avail_idx);
	*out = e;
	return 1;
}

void virtq_unpop(struct virtq *vq, unsigned n)
{
	vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - n);
	if (vq->ready && vq->event_idx && !vq->kicks_off)
		set_avail_event(vq, vq->last_avail_idx);
}

int virtq_push(struct virtq *vq, const struct virtq_elem *elem, uint32_t len)
{
	if (!vq->ready)
		return -EIO;
	if (elem->head >= vq->size)
		return -EINVAL;
	if (len > elem->in_len)
		len = elem->in_len;
	volatile uint32_t *ent = (volatile uint32_t *)((volatile uint8_t *)vq->used + 4 + 8 * (vq->used_idx & (vq->size - 1)));
	ent[0] = elem->head;
	ent[1] = len;
	vq->used_idx++;
	/* Release: the entry (and the data written to the buffers) before the index. */
	__atomic_store_n(&vq->used[1], vq->used_idx, __ATOMIC_RELEASE);
	return 0;
}

bool virtq_should_notify(struct virtq *vq)
{
	if (!vq->ready)
		return false;
	/* The used index store must be visible before we read the driver's
	 * suppression state (which it writes before re-checking the used index). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(avail_flags(vq) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	uint16_t new = vq->used_idx, old = vq->signalled_used, event = used_event(vq);
	bool valid = vq->signalled_valid;
	vq->signalled_used = new;
	vq->signalled_valid = true;
	/* vring_need_event: did used_idx cross used_event since the last interrupt? */
	return !valid || (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

void virtq_set_notification(struct virtq *vq, bool enable)
{
	vq->kicks_off = !enable;
	if (!vq->ready)
		return;
	if (vq->event_idx) {
		if (enable)
			set_avail_event(vq, avail_idx(vq));
	} else {
		__atomic_store_n(&vq->used[0], enable ? 0 : VIRTQ_USED_F_NO_NOTIFY, __ATOMIC_RELAXED);
	}
	/* Publish before the caller re-checks the available index. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
