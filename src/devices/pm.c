/* Power management I/O: the chipset reset control register (0xcf9) and the ACPI
 * PM1a event/control blocks described by the FADT (platform.h ports).
 *  - 0xcf9: a write with bit 2 (RST_CPU) set resets the machine (Linux reboot=pci
 *    and the FADT RESET_REG, value 0x06).
 *  - PM1a_CNT: SLP_EN with SLP_TYP = 5 (the DSDT's \_S5 value) powers off.
 *    SCI_EN always reads 1: the FADT has no SMI_CMD, so the system is permanently
 *    in ACPI mode.
 *  - PM1a_EVT: status (write 1 to clear) and enable registers. No fixed events
 *    (power button, PM timer) exist, so no SCI is ever raised.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/platform.h>
#include <vmsvc/vm.h>

#define RESET_RST_CPU 0x04
#define RESET_WRITABLE 0x0e   /* FULL_RST | RST_CPU | SYS_RST */

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK (7u << PM1_CNT_SLP_TYP_SHIFT)
#define PM1_CNT_SLP_EN 0x2000   /* write-only: reads 0 */
#define SLP_TYP_S5 5            /* must match the DSDT's \_S5 package */

struct pm {
	pthread_mutex_t lock;
	struct vm *vm;
	uint8_t reset_ctl;
	uint16_t pm1_sts, pm1_en, pm1_cnt;
};

static uint8_t reset_ctl_read(struct pm *p)
{
	pthread_mutex_lock(&p->lock);
	uint8_t v = p->reset_ctl;
	pthread_mutex_unlock(&p->lock);
	return v;
}

static void reset_ctl_write(struct pm *p, uint8_t val)
{
	pthread_mutex_lock(&p->lock);
	p->reset_ctl = val & (RESET_WRITABLE & ~RESET_RST_CPU);   /* RST_CPU self-clears */
	pthread_mutex_unlock(&p->lock);
	if (val & RESET_RST_CPU)
		vm_request_end(p->vm, VM_END_RESET, 0, "guest reset via port 0xcf9");
}

static void reset_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pm *p = opaque;
	uint8_t *bytes = data;
	if (!is_write) {
		bytes[0] = reset_ctl_read(p);
		memset(bytes + 1, 0xff, size - 1);
		return;
	}
	reset_ctl_write(p, bytes[0]);
}

static void pm1_evt_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pm *p = opaque;
	uint8_t *bytes = data;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < size; i++) {
		uint64_t off = offset + i;   /* < 4: the bus only passes accesses inside the range */
		uint16_t *reg = off < 2 ? &p->pm1_sts : &p->pm1_en;
		unsigned shift = (off & 1) * 8;
		if (!is_write)
			bytes[i] = (uint8_t)(*reg >> shift);
		else if (off < 2)
			*reg &= (uint16_t)~((unsigned)bytes[i] << shift);   /* write 1 to clear */
		else
			*reg = (uint16_t)((*reg & ~(0xffu << shift)) | ((unsigned)bytes[i] << shift));
	}
	pthread_mutex_unlock(&p->lock);
}

static void pm1_cnt_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pm *p = opaque;
	uint8_t *bytes = data;
	bool poweroff = false;
	unsigned bad_typ = 0;
	pthread_mutex_lock(&p->lock);
	if (!is_write) {
		uint16_t v = (p->pm1_cnt & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
		for (unsigned i = 0; i < size; i++)
			bytes[i] = offset + i < 2 ? (uint8_t)(v >> (8 * (offset + i))) : 0xff;
	} else {
		uint16_t v = p->pm1_cnt;
		for (unsigned i = 0; i < size && offset + i < 2; i++) {
			unsigned shift = 8 * (unsigned)(offset + i);
			v = (uint16_t)((v & ~(0xffu << shift)) | ((unsigned)bytes[i] << shift));
		}
		if (v & PM1_CNT_SLP_EN) {
			unsigned typ = (v & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
			if (typ == SLP_TYP_S5)
				poweroff = true;
			else
				bad_typ = typ + 1;   /* +1: 0 means "none" */
		}
		p->pm1_cnt = (v & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
	}
	pthread_mutex_unlock(&p->lock);
	if (poweroff)
		vm_request_end(p->vm, VM_END_POWEROFF, 0, "guest powered off via ACPI (S5)");
	else if (bad_typ)
		log_warn("pm: guest requested unsupported sleep type %u; ignored", bad_typ - 1);
}

static void pm_power_on(struct pm *p)
{
	p->reset_ctl = 0;
	p->pm1_sts = 0;
	p->pm1_en = 0;
	p->pm1_cnt = PM1_CNT_SCI_EN;
}

/* ---- device ops ---- */

static void pm_reset(void *dev)
{
	struct pm *p = dev;
	pthread_mutex_lock(&p->lock);
	pm_power_on(p);
	pthread_mutex_unlock(&p->lock);
}

/* Blob (version 1): "PM01", version, reset_ctl, then pm1_sts, pm1_en, pm1_cnt (LE16). */
#define PM_STATE_LEN 12

static int pm_save(void *dev, void **buf, size_t *len)
{
	struct pm *p = dev;
	uint8_t *b = malloc(PM_STATE_LEN);
	if (!b)
		return err_set(ENOMEM, "pm: out of memory saving state");
	pthread_mutex_lock(&p->lock);
	memcpy(b, "PM01", 4);
	b[4] = 1;
	b[5] = p->reset_ctl;
	const uint16_t regs[3] = { p->pm1_sts, p->pm1_en, p->pm1_cnt };
	for (int i = 0; i < 3; i++) {
		b[6 + 2 * i] = (uint8_t)regs[i];
		b[7 + 2 * i] = (uint8_t)(regs[i] >> 8);
	}
	pthread_mutex_unlock(&p->lock);
	*buf = b;
	*len = PM_STATE_LEN;
	return 0;
}

static int pm_load(void *dev, const void *buf, size_t len)
{
	struct pm *p = dev;
	const uint8_t *b = buf;
	if (!buf || len != PM_STATE_LEN || memcmp(b, "PM01", 4) != 0)
		return err_set(EINVAL, "pm state: bad header or length");
	if (b[4] != 1)
		return err_set(EINVAL, "pm state: unsupported version %u", b[4]);
	pthread_mutex_lock(&p->lock);
	p->reset_ctl = b[5] & (RESET_WRITABLE & ~RESET_RST_CPU);
	p->pm1_sts = (uint16_t)(b[6] | b[7] << 8);
	p->pm1_en = (uint16_t)(b[8] | b[9] << 8);
	p->pm1_cnt = (uint16_t)((b[10] | b[11] << 8) & ~PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static void pm_destroy(void *dev)
{
	struct pm *p = dev;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static const struct device_ops pm_device_ops = {
	.name = "pm",
	.reset = pm_reset,
	.save = pm_save,
	.load = pm_load,
	.destroy = pm_destroy,
};

int pm_attach(struct vm *vm)
{
	struct pm *p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(ENOMEM, "pm: out of memory");
	pthread_mutex_init(&p->lock, NULL);
	p->vm = vm;
	pm_power_on(p);
	/* With PCI, 0xcf9 is inside the 0xcf8 address dword the PCI bus owns; it
	 * forwards byte accesses to pm_reset_control_read/write. */
	int r = vm->pci ? 0 : io_register_pio(&vm->io, RESET_PORT, 1, reset_port, p, "reset-control");
	if (r < 0) {
		pm_destroy(p);
		return err_prefix(r, "pm");
	}
	/* Registered handlers cannot be removed (no io_unregister_pio): from here on
	 * `p` must stay alive even if a later step fails. */
	if ((r = io_register_pio(&vm->io, PM1A_EVT_PORT, 4, pm1_evt_port, p, "pm1a-evt")) < 0 ||
	    (r = io_register_pio(&vm->io, PM1A_CNT_PORT, 2, pm1_cnt_port, p, "pm1a-cnt")) < 0)
		return err_prefix(r, "pm");
	return vm_add_device(vm, &pm_device_ops, p);
}

static struct pm *pm_of(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ndevices; i++)
		if (vm->devices[i].ops == &pm_device_ops)
			return vm->devices[i].dev;
	return NULL;
}

int pm_reset_control_write(struct vm *vm, uint8_t val)
{
	struct pm *p = pm_of(vm);
	if (!p)
		return -ENODEV;
	reset_ctl_write(p, val);
	return 0;
}

uint8_t pm_reset_control_read(struct vm *vm)
{
	struct pm *p = pm_of(vm);
	return p ? reset_ctl_read(p) : 0xff;
}
