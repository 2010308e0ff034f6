/* libFuzzer target for the snapshot state parser: the input is a `state` file.
 * snap_parse validates it; every vCPU/VM section it accepts then goes through
 * the KVM blob checks (what a restore runs before touching a VM). The input is
 * copied to an exactly-sized buffer so ASan catches any read past its end.
 * Seed: any DIR/state written by `vmsvc snapshot` or tests/integration/snapshot_test. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/vmstate.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	struct snap_header h;
	struct snap_section *sec = NULL;
	unsigned n = 0;
	if (snap_parse(buf, size, "fuzz", &h, &sec, &n) == 0) {
		for (unsigned i = 0; i < n; i++) {
			if (sec[i].data < buf || sec[i].data + sec[i].len > buf + size)
				abort();   /* a section outside the input */
			if (sec[i].type == SNAP_SEC_VCPU)
				vmstate_vcpu_check(sec[i].data, sec[i].len);
			else if (sec[i].type == SNAP_SEC_VM)
				vmstate_vm_check(sec[i].data, sec[i].len);
		}
		free(sec);
	}
	/* The blob checkers on raw input too. */
	vmstate_vcpu_check(buf, size);
	vmstate_vm_check(buf, size);
	free(buf);
	return 0;
}
