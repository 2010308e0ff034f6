/* Port-I/O and MMIO dispatch. Devices register address ranges with a handler;
 * the exit loop calls io_pio()/io_mmio(). Lookup is a sorted array (few ranges). */
#ifndef VMSVC_IO_H
#define VMSVC_IO_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Handle one access at `offset` from the start of the registered range.
 * `data` holds `size` bytes (1, 2, 4 or 8; little endian). For reads the
 * handler fills data (it is pre-filled with 0xff). */
typedef void (*io_handler_fn)(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write);

struct io_range {
	uint64_t base, len;
	io_handler_fn fn;
	void *opaque;
	const char *name;
};

#define IO_MAX_RANGES 64

struct io_space {
	unsigned n;
	struct io_range r[IO_MAX_RANGES];
	uint64_t unhandled;   /* accesses to unregistered addresses (counted, ignored) */
};

struct io_bus {
	struct io_space pio, mmio;
	pthread_rwlock_t lock;   /* registration is rare; lookups take it shared */
};

void io_bus_init(struct io_bus *b);
void io_bus_destroy(struct io_bus *b);
/* -EEXIST on overlap, -ENOSPC when full. */
int io_register_pio(struct io_bus *b, uint16_t base, uint16_t len, io_handler_fn fn, void *opaque, const char *name);
int io_register_mmio(struct io_bus *b, uint64_t base, uint64_t len, io_handler_fn fn, void *opaque, const char *name);
int io_unregister_mmio(struct io_bus *b, uint64_t base);
/* Remove the port range starting at `base`; -ENOENT if none. */
int io_unregister_pio(struct io_bus *b, uint16_t base);
/* Return true if a handler took the access; unhandled reads return all-ones. */
bool io_pio(struct io_bus *b, uint16_t port, void *data, unsigned size, bool is_write);
bool io_mmio(struct io_bus *b, uint64_t gpa, void *data, unsigned size, bool is_write);

#endif
