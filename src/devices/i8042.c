/* i8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command).
 *
 * What a PC's controller does with nothing plugged into either port: enough for
 * Linux's i8042 probe (CTR read/write, self tests, AUX loopback with IRQ 12 delivery)
 * and for resetting the machine (command 0xfe, or output-port bit 0 cleared). Bytes
 * sent to the keyboard or the mouse get the controller's "device timeout" answer
 * (0xfe with the status TIMEOUT bit) so the guest's drivers give up at once instead
 * of waiting for replies that never come.
 * Interrupts: IRQ 1 (keyboard data) and IRQ 12 (aux data) follow "output buffer full
 * and that channel's interrupt enabled in the CTR"; levels are set only on change.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64
#define I8042_KBD_IRQ 1
#define I8042_AUX_IRQ 12

/* Status register. */
#define STR_OBF 0x01
#define STR_IBF 0x02
#define STR_SYS 0x04
#define STR_CMD 0x08       /* last write went to the command port */
#define STR_UNLOCKED 0x10  /* keyboard not inhibited by the key lock */
#define STR_AUXDATA 0x20
#define STR_TIMEOUT 0x40

/* Controller command byte (CTR). */
#define CTR_KBDINT 0x01
#define CTR_AUXINT 0x02
#define CTR_SYS 0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE 0x40

/* Output port. */
#define OUTP_RESET_HIGH 0x01   /* bit 0 low = CPU reset asserted */
#define OUTP_A20 0x02

#define QUEUE_SIZE 16

struct i8042 {
	pthread_mutex_t lock;
	struct vm *vm;
	uint8_t ram[32];          /* controller RAM; ram[0] is the CTR */
	uint8_t outport;
	uint8_t pending_cmd;      /* command waiting for its data byte, 0 = none */
	bool last_was_cmd;
	bool kbd_level, aux_level;
	/* Output queue: byte + status flags (AUXDATA/TIMEOUT) it is delivered with. */
	struct { uint8_t byte, flags; } q[QUEUE_SIZE];
	unsigned q_head, q_count;
};

static void queue_push(struct i8042 *k, uint8_t byte, uint8_t flags)
{
	if (k->q_count == QUEUE_SIZE)
		return;   /* a real controller's buffer is one byte; dropping is fine */
	unsigned pos = (k->q_head + k->q_count) % QUEUE_SIZE;
	k->q[pos].byte = byte;
	k->q[pos].flags = flags;
	k->q_count++;
}

static uint8_t status(const struct i8042 *k)
{
	uint8_t s = STR_UNLOCKED;
	if (k->ram[0] & CTR_SYS)
		s |= STR_SYS;
	if (k->last_was_cmd)
		s |= STR_CMD;
	if (k->q_count) {
		s |= STR_OBF;
		s |= k->q[k->q_head].flags;
	}
	return s;
}

/* Set IRQ 1 / IRQ 12 from the state; only on change unless `force` (reset, load). */
static void drive_irqs(struct i8042 *k, bool force)
{
	bool kbd = false, aux = false;
	if (k->q_count) {
		if (k->q[k->q_head].flags & STR_AUXDATA)
			aux = (k->ram[0] & CTR_AUXINT) != 0;
		else
			kbd = (k->ram[0] & CTR_KBDINT) != 0;
	}
	if (force || kbd != k->kbd_level) {
		k->kbd_level = kbd;
		irq_set_level(&k->vm->irq, I8042_KBD_IRQ, kbd);
	}
	if (force || aux != k->aux_level) {
		k->aux_level = aux;
		irq_set_level(&k->vm->irq, I8042_AUX_IRQ, aux);
	}
}

static void update_irqs(struct i8042 *k)
{
	drive_irqs(k, false);
}

/* Returns true when the guest asked for a CPU reset. */
static bool command(struct i8042 *k, uint8_t cmd)
{
	if (cmd >= 0x20 && cmd <= 0x3f) {          /* read controller RAM (0x20: CTR) */
		queue_push(k, k->ram[cmd & 0x1f], 0);
		return false;
	}
	if (cmd >= 0x60 && cmd <= 0x7f) {          /* write controller RAM (0x60: CTR) */
		k->pending_cmd = cmd;
		return false;
	}
	if (cmd >= 0xf0)                           /* pulse output lines: bit 0 low = reset */
		return (cmd & 0x01) == 0;
	switch (cmd) {
	case 0xa1:                                 /* controller firmware version */
		queue_push(k, 0x00, 0);
		break;
	case 0xa4:                                 /* password installed? no */
		queue_push(k, 0xf1, 0);
		break;
	case 0xa7:
		k->ram[0] |= CTR_AUXDIS;
		break;
	case 0xa8:
		k->ram[0] &= ~CTR_AUXDIS;
		break;
	case 0xa9:                                 /* aux interface test: OK */
	case 0xab:                                 /* keyboard interface test: OK */
		queue_push(k, 0x00, 0);
		break;
	case 0xaa:                                 /* controller self test: passed */
		k->ram[0] |= CTR_SYS;
		queue_push(k, 0x55, 0);
		break;
	case 0xad:
		k->ram[0] |= CTR_KBDDIS;
		break;
	case 0xae:
		k->ram[0] &= ~CTR_KBDDIS;
		break;
	case 0xc0:                                 /* input port: keyboard not inhibited */
		queue_push(k, 0x80, 0);
		break;
	case 0xd0:
		queue_push(k, k->outport, 0);
		break;
	case 0xd1:                                 /* write output port */
	case 0xd2:                                 /* write keyboard output buffer */
	case 0xd3:                                 /* write aux output buffer (loopback) */
	case 0xd4:                                 /* write to the aux device */
		k->pending_cmd = cmd;
		break;
	case 0xe0:                                 /* test inputs */
		queue_push(k, 0x00, 0);
		break;
	default:
		break;                             /* unknown: ignored, as many chips do */
	}
	return false;
}

static bool data_write(struct i8042 *k, uint8_t val)
{
	uint8_t cmd = k->pending_cmd;
	k->pending_cmd = 0;
	if (cmd >= 0x60 && cmd <= 0x7f) {
		k->ram[cmd & 0x1f] = val;
		return false;
	}
	switch (cmd) {
	case 0xd1:
		k->outport = val;
		return (val & OUTP_RESET_HIGH) == 0;
	case 0xd2:
		queue_push(k, val, 0);
		break;
	case 0xd3:
		queue_push(k, val, STR_AUXDATA);
		break;
	case 0xd4:                                 /* no mouse: the transfer times out */
		queue_push(k, 0xfe, STR_AUXDATA | STR_TIMEOUT);
		break;
	default:                                   /* to the keyboard: none attached */
		queue_push(k, 0xfe, STR_TIMEOUT);
		break;
	}
	return false;
}

/* Resets are requested after dropping the lock (vm_request_end kicks vCPUs). */
static void request_reset(struct i8042 *k)
{
	vm_request_end(k->vm, VM_END_RESET, 0, "guest reset via i8042");
}

static void data_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct i8042 *k = opaque;
	uint8_t *bytes = data;
	bool reset = false;
	pthread_mutex_lock(&k->lock);
	if (is_write) {
		k->last_was_cmd = false;
		reset = data_write(k, bytes[0]);
	} else if (k->q_count) {
		bytes[0] = k->q[k->q_head].byte;
		k->q_head = (k->q_head + 1) % QUEUE_SIZE;
		k->q_count--;
	} else {
		bytes[0] = 0x00;   /* empty buffer: stale data on real parts */
	}
	/* Wider reads: the single data register, then nothing. */
	if (!is_write)
		memset(bytes + 1, 0xff, size - 1);
	update_irqs(k);
	pthread_mutex_unlock(&k->lock);
	if (reset)
		request_reset(k);
}

static void command_port(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct i8042 *k = opaque;
	uint8_t *bytes = data;
	bool reset = false;
	pthread_mutex_lock(&k->lock);
	if (is_write) {
		k->last_was_cmd = true;
		k->pending_cmd = 0;   /* a new command abandons one waiting for data */
		reset = command(k, bytes[0]);
	} else {
		bytes[0] = status(k);
		memset(bytes + 1, 0xff, size - 1);
	}
	update_irqs(k);
	pthread_mutex_unlock(&k->lock);
	if (reset)
		request_reset(k);
}

static void power_on(struct i8042 *k)
{
	memset(k->ram, 0, sizeof(k->ram));
	k->ram[0] = CTR_KBDINT | CTR_SYS | CTR_AUXDIS | CTR_XLATE;
	k->outport = OUTP_RESET_HIGH | OUTP_A20;
	k->pending_cmd = 0;
	k->last_was_cmd = false;
	k->q_head = k->q_count = 0;
}

/* ---- device ops ---- */

static void i8042_reset(void *dev)
{
	struct i8042 *k = dev;
	pthread_mutex_lock(&k->lock);
	power_on(k);
	drive_irqs(k, true);
	pthread_mutex_unlock(&k->lock);
}

/* Blob (version 1): "I8042", version, outport, pending_cmd, last_was_cmd, q_count,
 * ram[32], then q_count pairs (byte, flags), oldest first. */
#define I8042_STATE_HDR (5 + 5 + 32)

static int i8042_save(void *dev, void **buf, size_t *len)
{
	struct i8042 *k = dev;
	uint8_t *b = malloc(I8042_STATE_HDR + 2 * QUEUE_SIZE);
	if (!b)
		return err_set(ENOMEM, "i8042: out of memory saving state");
	pthread_mutex_lock(&k->lock);
	memcpy(b, "I8042", 5);
	b[5] = 1;
	b[6] = k->outport;
	b[7] = k->pending_cmd;
	b[8] = k->last_was_cmd;
	b[9] = (uint8_t)k->q_count;
	memcpy(b + 10, k->ram, 32);
	for (unsigned i = 0; i < k->q_count; i++) {
		unsigned pos = (k->q_head + i) % QUEUE_SIZE;
		b[I8042_STATE_HDR + 2 * i] = k->q[pos].byte;
		b[I8042_STATE_HDR + 2 * i + 1] = k->q[pos].flags;
	}
	*len = I8042_STATE_HDR + 2 * k->q_count;
	pthread_mutex_unlock(&k->lock);
	*buf = b;
	return 0;
}

static int i8042_load(void *dev, const void *buf, size_t len)
{
	struct i8042 *k = dev;
	const uint8_t *b = buf;
	if (!buf || len < I8042_STATE_HDR || memcmp(b, "I8042", 5) != 0)
		return err_set(EINVAL, "i8042 state: bad header");
	if (b[5] != 1)
		return err_set(EINVAL, "i8042 state: unsupported version %u", b[5]);
	unsigned n = b[9];
	if (n > QUEUE_SIZE || len != I8042_STATE_HDR + 2 * n)
		return err_set(EINVAL, "i8042 state: bad queue length %u", n);
	pthread_mutex_lock(&k->lock);
	k->outport = b[6];
	k->pending_cmd = b[7];
	k->last_was_cmd = b[8] != 0;
	memcpy(k->ram, b + 10, 32);
	k->q_head = 0;
	k->q_count = n;
	for (unsigned i = 0; i < n; i++) {
		k->q[i].byte = b[I8042_STATE_HDR + 2 * i];
		k->q[i].flags = b[I8042_STATE_HDR + 2 * i + 1] & (STR_AUXDATA | STR_TIMEOUT);
	}
	drive_irqs(k, true);   /* re-drive both lines from the loaded state */
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static void i8042_destroy(void *dev)
{
	struct i8042 *k = dev;
	pthread_mutex_destroy(&k->lock);
	free(k);
}

static const struct device_ops i8042_device_ops = {
	.name = "i8042",
	.reset = i8042_reset,
	.save = i8042_save,
	.load = i8042_load,
	.destroy = i8042_destroy,
};

int i8042_attach(struct vm *vm)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return err_set(ENOMEM, "i8042: out of memory");
	pthread_mutex_init(&k->lock, NULL);
	k->vm = vm;
	power_on(k);
	int r = io_register_pio(&vm->io, I8042_DATA_PORT, 1, data_port, k, "i8042-data");
	if (r < 0) {
		i8042_destroy(k);
		return err_prefix(r, "i8042");
	}
	/* From here on the handler is registered (there is no io_unregister_pio), so the
	 * state must outlive any failure. */
	r = io_register_pio(&vm->io, I8042_CMD_PORT, 1, command_port, k, "i8042-cmd");
	if (r < 0)
		return err_prefix(r, "i8042");
	return vm_add_device(vm, &i8042_device_ops, k);
}
