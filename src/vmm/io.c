/* Port-I/O and MMIO range dispatch (sorted arrays, binary search). */
#include <errno.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/io.h>

void io_bus_init(struct io_bus *b)
{
	memset(b, 0, sizeof(*b));
	pthread_rwlock_init(&b->lock, NULL);
}

void io_bus_destroy(struct io_bus *b) { pthread_rwlock_destroy(&b->lock); }

static int space_add(struct io_space *s, uint64_t base, uint64_t len, io_handler_fn fn, void *opaque,
		     const char *name)
{
	if (!len || base + len < base || !fn)
		return -EINVAL;
	if (s->n == IO_MAX_RANGES)
		return err_set(ENOSPC, "too many I/O ranges registering %s", name);
	unsigned pos = 0;
	while (pos < s->n && s->r[pos].base < base)
		pos++;
	if ((pos > 0 && s->r[pos - 1].base + s->r[pos - 1].len > base) ||
	    (pos < s->n && base + len > s->r[pos].base))
		return err_set(EEXIST, "I/O range %#llx+%#llx of %s overlaps %s", (unsigned long long)base,
			       (unsigned long long)len, name, pos < s->n && base + len > s->r[pos].base ? s->r[pos].name : s->r[pos - 1].name);
	memmove(&s->r[pos + 1], &s->r[pos], (s->n - pos) * sizeof(s->r[0]));
	s->r[pos] = (struct io_range){ base, len, fn, opaque, name };
	s->n++;
	return 0;
}

static const struct io_range *space_find(const struct io_space *s, uint64_t addr)
{
	unsigned lo = 0, hi = s->n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		const struct io_range *r = &s->r[mid];
		if (addr < r->base)
			hi = mid;
		else if (addr - r->base >= r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

int io_register_pio(struct io_bus *b, uint16_t base, uint16_t len, io_handler_fn fn, void *opaque, const char *name)
{
	if ((uint32_t)base + len > 0x10000)
		return -EINVAL;
	pthread_rwlock_wrlock(&b->lock);
	int r = space_add(&b->pio, base, len, fn, opaque, name);
	pthread_rwlock_unlock(&b->lock);
	return r;
}

int io_register_mmio(struct io_bus *b, uint64_t base, uint64_t len, io_handler_fn fn, void *opaque, const char *name)
{
	pthread_rwlock_wrlock(&b->lock);
	int r = space_add(&b->mmio, base, len, fn, opaque, name);
	pthread_rwlock_unlock(&b->lock);
	return r;
}

static int space_del(struct io_bus *b, struct io_space *s, uint64_t base)
{
	int ret = -ENOENT;
	pthread_rwlock_wrlock(&b->lock);
	for (unsigned i = 0; i < s->n; i++)
		if (s->r[i].base == base) {
			memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof(s->r[0]));
			s->n--;
			ret = 0;
			break;
		}
	pthread_rwlock_unlock(&b->lock);
	return ret;
}

int io_unregister_mmio(struct io_bus *b, uint64_t base) { return space_del(b, &b->mmio, base); }
int io_unregister_pio(struct io_bus *b, uint16_t base) { return space_del(b, &b->pio, base); }

static bool space_access(struct io_bus *b, struct io_space *s, uint64_t addr, void *data, unsigned size, bool is_write)
{
	if (!is_write)
		memset(data, 0xff, size);
	pthread_rwlock_rdlock(&b->lock);
	const struct io_range *r = space_find(s, addr);
	/* An access must lie wholly inside one range; straddling ones are dropped. */
	if (r && addr - r->base + size <= r->len) {
		io_handler_fn fn = r->fn;
		void *opaque = r->opaque;
		uint64_t off = addr - r->base;
		pthread_rwlock_unlock(&b->lock);
		fn(opaque, off, data, size, is_write);
		return true;
	}
	pthread_rwlock_unlock(&b->lock);
	__atomic_add_fetch(&s->unhandled, 1, __ATOMIC_RELAXED);
	return false;
}

bool io_pio(struct io_bus *b, uint16_t port, void *data, unsigned size, bool is_write)
{
	return space_access(b, &b->pio, port, data, size, is_write);
}

bool io_mmio(struct io_bus *b, uint64_t gpa, void *data, unsigned size, bool is_write)
{
	return space_access(b, &b->mmio, gpa, data, size, is_write);
}
