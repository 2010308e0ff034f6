/* libFuzzer target for the DISKS record of a suspend file (the record that
 * names every disk's kind and image identity, src/services/suspend_disks.c):
 * the input is the record's body, parsed without resume --disk specs (no image
 * checks). The input is copied to an exactly-sized buffer so ASan catches any
 * read past its end. Seed: a record from suspend_disks_describe, or any bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include "services/suspend_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	struct suspend_disks *d = NULL;
	if (suspend_disks_parse(buf, size, "fuzz", NULL, &d) == 0) {
		if (suspend_disks_check_complete(d, "fuzz") < 0 && !*err_msg())
			abort();   /* an error without a message */
		suspend_disks_free(d);
	}
	free(buf);
	return 0;
}
