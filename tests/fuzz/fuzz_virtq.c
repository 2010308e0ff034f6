/* libFuzzer target for the split virtqueue parser. The input is the guest:
 * a header picks queue size and features, the rest becomes guest RAM (rings,
 * descriptors, indirect tables) and a script of driver actions interleaved with
 * device pops/pushes. Guest RAM is two exactly-sized heap regions with a hole
 * between them, so ASan catches any host access outside guest memory. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/mem.h>
#include <vmsvc/virtio.h>

#define R0_SIZE 0x10000
#define R1_GPA 0x20000
#define R1_SIZE 0x1000
#define DESC 0x0
#define AVAIL 0x4000
#define USED 0x6000

struct script {
	const uint8_t *p;
	size_t n;
};

static unsigned next(struct script *s)
{
	if (!s->n)
		return 0;
	s->n--;
	return *s->p++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint8_t *r0 = calloc(1, R0_SIZE), *r1 = calloc(1, R1_SIZE);
	struct guest_mem mem = { .nregions = 2, .ram_size = R0_SIZE + R1_SIZE };
	mem.region[0] = (struct mem_region){ 0, R0_SIZE, 0, r0 };
	mem.region[1] = (struct mem_region){ R1_GPA, R1_SIZE, R0_SIZE, r1 };
	uint8_t flags = data[0];
	uint16_t qsize = (uint16_t)(data[1] | data[2] << 8);
	if (!(flags & 0x80))
		qsize = (uint16_t)(1u << (data[1] % 11));   /* mostly valid sizes */
	/* Guest memory image: the first part of the input (after the header). */
	size_t img = (size - 3) / 2;
	memcpy(r0, data + 3, img < R0_SIZE ? img : R0_SIZE);
	if (img > R0_SIZE)
		memcpy(r1, data + 3 + R0_SIZE, img - R0_SIZE < R1_SIZE ? img - R0_SIZE : R1_SIZE);
	struct script s = { data + 3 + img, size - 3 - img };

	struct virtq vq = { 0 };
	bool ev = flags & 1, ind = flags & 2;
	if (virtq_setup(&vq, &mem, qsize, DESC, AVAIL, USED, ev, ind) != 0)
		goto out;
	volatile uint16_t *avail = (volatile uint16_t *)(r0 + AVAIL);
	for (unsigned step = 0; step < 256 && s.n; step++) {
		unsigned op = next(&s);
		switch (op % 6) {
		case 0: {   /* driver: publish more entries (possibly absurdly many) */
			avail[1] = (uint16_t)(avail[1] + (next(&s) % 4 == 0 ? next(&s) << 8 | next(&s) : next(&s) % 8));
			break;
		}
		case 1: {   /* driver: rewrite a descriptor or ring slot (concurrent change) */
			unsigned off = (next(&s) << 8 | next(&s)) % 0x8000;
			r0[off] = (uint8_t)next(&s);
			break;
		}
		case 2:
		case 3: {   /* device: pop, touch every byte, push */
			struct virtq_elem *e;
			int r = virtq_pop(&vq, &e);
			if (r == 1) {
				volatile uint8_t sink = 0;
				for (unsigned i = 0; i < e->out_num; i++)
					for (size_t k = 0; k < e->iov[i].iov_len; k += 512)
						sink ^= ((uint8_t *)e->iov[i].iov_base)[k];
				for (unsigned i = e->out_num; i < (unsigned)e->out_num + e->in_num; i++) {
					uint8_t *b = e->iov[i].iov_base;
					b[0] = sink;
					b[e->iov[i].iov_len - 1] = 1;
				}
				if (next(&s) & 1)
					virtq_unpop(&vq, 1);
				else
					virtq_push(&vq, e, (uint32_t)next(&s) << 4);
				free(e);
			} else if (r < 0) {
				/* Broken: the transport would reset; so do we. */
				if (virtq_setup(&vq, &mem, qsize, DESC, AVAIL, USED, ev, ind) != 0)
					goto out;
			}
			break;
		}
		case 4:
			(void)virtq_should_notify(&vq);
			(void)virtq_pending(&vq);
			break;
		case 5:
			virtq_set_notification(&vq, next(&s) & 1);
			break;
		}
	}
out:
	virtq_free(&vq);
	free(r0);
	free(r1);
	return 0;
}
