/* Smallest guest: boot through PVH, print, pass. */
#include "lib/kit.h"

int kit_main(void)
{
	kit_puts("Hello from vmsvc test guest\n");
	return 0;
}
