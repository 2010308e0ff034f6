/* Port 0x80 (POST codes) and 0xed: Linux writes to them as an I/O delay
 * (outb_p / io_delay=0x80 or 0xed). Writes are ignored and reads return 0xff like
 * an empty ISA bus; the point of registering them is only to take the accesses
 * without counting them as unhandled. Stateless: no device ops. */
#include <string.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

#define POST_PORT 0x80
#define ALT_DELAY_PORT 0xed

static void delay_port_pio(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	if (!is_write)
		memset(data, 0xff, size);
}

int port80_attach(struct vm *vm)
{
	int r = io_register_pio(&vm->io, POST_PORT, 1, delay_port_pio, NULL, "port80");
	if (r < 0)
		return err_prefix(r, "port 0x80");
	/* 0xed is optional: leave it to anyone who has already claimed it. */
	if (io_register_pio(&vm->io, ALT_DELAY_PORT, 1, delay_port_pio, NULL, "port-ed") < 0)
		err_clear();
	return 0;
}
