/* QEMU isa-debug-exit compatible device: any write of value v to [base, base+size)
 * ends the VM with status (v << 1) | 1 (so a guest can never report 0 = success by
 * accident); reads return 0. Test kits use it to report their result. Stateless, so
 * it is not a device with ops: the VM pointer itself is the handler's opaque. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

static void debugexit_pio(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct vm *vm = opaque;
	if (!is_write) {
		memset(data, 0, size);
		return;
	}
	/* The value is the access's own width, little endian (QEMU allows 1..4 bytes). */
	uint64_t v = 0;
	const uint8_t *bytes = data;
	for (unsigned i = 0; i < size && i < 8; i++)
		v |= (uint64_t)bytes[i] << (8 * i);
	/* The exit status is an int, as QEMU's exit() argument; the OS keeps the low 8 bits. */
	int status = (int)(uint32_t)((v << 1) | 1);
	char msg[96];
	snprintf(msg, sizeof(msg), "guest wrote %#llx to debug-exit (status %d)", (unsigned long long)v,
		 status & 0xff);
	vm_request_end(vm, VM_END_DEBUG_EXIT, status, msg);
}

int debugexit_attach(struct vm *vm, uint16_t base, uint16_t size)
{
	if (size == 0 || (uint32_t)base + size > 0x10000)
		return err_set(EINVAL, "debug-exit: bad port range %#x+%u", base, size);
	int r = io_register_pio(&vm->io, base, size, debugexit_pio, vm, "debug-exit");
	return r < 0 ? err_prefix(r, "debug-exit") : 0;
}
