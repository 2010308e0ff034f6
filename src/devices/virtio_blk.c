/* virtio-blk: placeholder until the device lands (being written). */
#include <errno.h>
#include <vmsvc/devices.h>
#include <vmsvc/err.h>

int virtio_blk_attach(struct vm *vm, const char *spec)
{
	(void)vm;
	(void)spec;
	return err_set(ENOTSUP, "virtio-blk is not implemented yet");
}
