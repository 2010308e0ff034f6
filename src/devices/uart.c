/* 16550A UART model.
 *
 * The register file follows the National Semiconductor PC16550D data sheet. The
 * model is self-contained (uart_new/uart_read/uart_write/uart_receive) so that it
 * can be unit-tested without a VM; uart_attach() at the bottom wires it to a VM's
 * port-I/O bus, interrupt controller and an output fd.
 *
 * Host-side simplifications, chosen so that guests see an ideal, infinitely fast line:
 *  - Transmission is instantaneous: a THR write hands the byte to tx_fn at once, so the
 *    TX FIFO is always empty and LSR always reports THRE|TEMT outside the write itself.
 *  - Host input is flow-controlled: uart_receive() only takes what fits in the RX FIFO
 *    (the caller keeps the rest), so host input never overruns. Overrun (LSR.OE) can
 *    still happen in loopback mode, where the guest's own TX feeds the RX FIFO.
 *  - The character-timeout interrupt fires immediately when the RX FIFO holds data
 *    below the trigger level (no more bytes are "on the wire" at that moment).
 *  - The interrupt output is not gated by MCR.OUT2 (like QEMU), so guests that forget
 *    OUT2 still get interrupts.
 *
 * Locking: every entry point takes u->lock. Both callbacks (irq and tx) are called
 * WITH the lock held: this keeps the interrupt line's level changes and the byte order
 * in step with the register state. Callbacks must therefore not call back into the
 * same uart (KVM_IRQ_LINE and write() are fine).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

/* Register offsets. */
enum {
	REG_RBR_THR_DLL = 0,
	REG_IER_DLM = 1,
	REG_IIR_FCR = 2,
	REG_LCR = 3,
	REG_MCR = 4,
	REG_LSR = 5,
	REG_MSR = 6,
	REG_SCR = 7,
};

#define IER_ERBFI 0x01   /* received data available */
#define IER_ETBEI 0x02   /* transmitter holding register empty */
#define IER_ELSI  0x04   /* receiver line status */
#define IER_EDSSI 0x08   /* modem status */
#define IER_MASK  0x0f   /* the 16550A has no other IER bits (Linux probes this) */

#define IIR_NO_INT   0x01
#define IIR_ID_MSI   0x00
#define IIR_ID_THRE  0x02
#define IIR_ID_RDA   0x04
#define IIR_ID_RLS   0x06
#define IIR_ID_CTI   0x0c   /* character timeout */
#define IIR_FIFO_ON  0xc0

#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define FCR_TRIGGER  0xc0

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_PE   0x04
#define LSR_FE   0x08
#define LSR_BI   0x10
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERR_IN_FIFO 0x80
#define LSR_ERRORS (LSR_OE | LSR_PE | LSR_FE | LSR_BI)

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_DELTAS 0x0f
#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80
/* Modem lines of the (virtual) host end when not in loopback: always ready. */
#define MSR_HOST_LINES (MSR_DCD | MSR_DSR | MSR_CTS)

#define UART_FIFO_SIZE 16

struct uart {
	pthread_mutex_t lock;
	uart_irq_fn irq;
	uart_tx_fn tx;
	void *opaque;

	uint8_t dll, dlm;
	uint8_t ier, lcr, mcr, lsr, msr, scr;
	uint8_t fcr;           /* last FCR value (only FIFO enable + trigger bits kept) */
	bool thr_ipending;     /* THRE interrupt condition (cleared by IIR read / THR write) */
	bool irq_level;        /* current level of the interrupt line */

	/* RX FIFO as a ring; in non-FIFO mode its capacity is 1 (the RBR). */
	uint8_t rx[UART_FIFO_SIZE];
	unsigned rx_head, rx_count;
};

static unsigned rx_capacity(const struct uart *u)
{
	return (u->fcr & FCR_ENABLE) ? UART_FIFO_SIZE : 1;
}

static unsigned rx_trigger(const struct uart *u)
{
	static const unsigned levels[4] = { 1, 4, 8, 14 };
	return levels[(u->fcr & FCR_TRIGGER) >> 6];
}

static void rx_clear(struct uart *u)
{
	u->rx_head = 0;
	u->rx_count = 0;
	u->lsr &= ~LSR_DR;
}

/* Append one received byte; on a full FIFO the byte is lost and LSR.OE is set
 * (the 16550 keeps the FIFO contents and overwrites its shift register). */
static void rx_push(struct uart *u, uint8_t byte)
{
	if (u->rx_count >= rx_capacity(u)) {
		u->lsr |= LSR_OE;
		return;
	}
	u->rx[(u->rx_head + u->rx_count) % UART_FIFO_SIZE] = byte;
	u->rx_count++;
	u->lsr |= LSR_DR;
}

static uint8_t rx_pop(struct uart *u)
{
	if (u->rx_count == 0)
		return 0;
	uint8_t byte = u->rx[u->rx_head];
	u->rx_head = (u->rx_head + 1) % UART_FIFO_SIZE;
	u->rx_count--;
	if (u->rx_count == 0)
		u->lsr &= ~LSR_DR;
	return byte;
}

/* Highest-priority pending interrupt, as the IIR identification bits. */
static uint8_t pending_interrupt(const struct uart *u)
{
	if ((u->ier & IER_ELSI) && (u->lsr & LSR_ERRORS))
		return IIR_ID_RLS;
	if ((u->ier & IER_ERBFI) && u->rx_count > 0) {
		if (!(u->fcr & FCR_ENABLE) || u->rx_count >= rx_trigger(u))
			return IIR_ID_RDA;
		return IIR_ID_CTI;
	}
	if ((u->ier & IER_ETBEI) && u->thr_ipending)
		return IIR_ID_THRE;
	if ((u->ier & IER_EDSSI) && (u->msr & MSR_DELTAS))
		return IIR_ID_MSI;
	return IIR_NO_INT;
}

/* Recompute the line level; call the irq callback only when it changes. */
static void update_irq(struct uart *u)
{
	bool level = pending_interrupt(u) != IIR_NO_INT;
	if (level != u->irq_level) {
		u->irq_level = level;
		if (u->irq)
			u->irq(u->opaque, level);
	}
}

/* Modem status inputs: the host's lines, or the MCR outputs in loopback. Sets the
 * delta bits for changes (TERI only on RI's trailing edge). */
static void update_msr(struct uart *u)
{
	uint8_t lines;
	if (u->mcr & MCR_LOOP) {
		lines = 0;
		if (u->mcr & MCR_RTS)
			lines |= MSR_CTS;
		if (u->mcr & MCR_DTR)
			lines |= MSR_DSR;
		if (u->mcr & MCR_OUT1)
			lines |= MSR_RI;
		if (u->mcr & MCR_OUT2)
			lines |= MSR_DCD;
	} else {
		lines = MSR_HOST_LINES;
	}
	uint8_t old = u->msr & 0xf0;
	uint8_t changed = old ^ lines;
	uint8_t delta = u->msr & MSR_DELTAS;
	if (changed & MSR_CTS)
		delta |= MSR_DCTS;
	if (changed & MSR_DSR)
		delta |= MSR_DDSR;
	if ((old & MSR_RI) && !(lines & MSR_RI))
		delta |= MSR_TERI;
	if (changed & MSR_DCD)
		delta |= MSR_DDCD;
	u->msr = lines | delta;
}

static void reset_locked(struct uart *u)
{
	u->dll = 0x0c;   /* 9600 baud; the data sheet leaves it undefined */
	u->dlm = 0;
	u->ier = 0;
	u->lcr = 0;
	u->mcr = 0;
	u->lsr = LSR_THRE | LSR_TEMT;
	u->msr = MSR_HOST_LINES;
	u->scr = 0;
	u->fcr = 0;
	u->thr_ipending = false;
	rx_clear(u);
}

struct uart *uart_new(uart_irq_fn irq, uart_tx_fn tx, void *opaque)
{
	struct uart *u = calloc(1, sizeof(*u));
	if (!u) {
		err_set(ENOMEM, "uart: out of memory");
		return NULL;
	}
	pthread_mutex_init(&u->lock, NULL);
	u->irq = irq;
	u->tx = tx;
	u->opaque = opaque;
	reset_locked(u);
	return u;
}

void uart_free(struct uart *u)
{
	if (!u)
		return;
	pthread_mutex_destroy(&u->lock);
	free(u);
}

void uart_reset(struct uart *u)
{
	pthread_mutex_lock(&u->lock);
	reset_locked(u);
	/* Drive the line low explicitly: the irqchip may have been reset separately. */
	u->irq_level = false;
	if (u->irq)
		u->irq(u->opaque, false);
	pthread_mutex_unlock(&u->lock);
}

static void write_fcr(struct uart *u, uint8_t val)
{
	/* Changing the enable bit resets both FIFOs (PC16550D: "resetting FCR0 ... clears
	 * all bytes in both FIFOs"). The other bits only take effect with FCR0 set. */
	if ((val ^ u->fcr) & FCR_ENABLE)
		val |= FCR_CLEAR_RX | FCR_CLEAR_TX;
	if (val & FCR_CLEAR_RX) {
		rx_clear(u);
		u->lsr &= ~LSR_ERR_IN_FIFO;
	}
	/* FCR_CLEAR_TX: the TX FIFO is always empty here (instant transmission). */
	if (val & FCR_ENABLE)
		u->fcr = val & (FCR_ENABLE | FCR_TRIGGER);
	else
		u->fcr = 0;
}

static void write_thr(struct uart *u, uint8_t val)
{
	if (u->mcr & MCR_LOOP) {
		/* Loopback: the transmitter output is looped to the receiver, and the serial
		 * output line is held in the marking state (nothing leaves the chip). */
		rx_push(u, val);
	} else if (u->tx) {
		u->tx(u->opaque, val);
	}
	/* The byte went out at once: THR (and the shifter) are empty again. */
	u->lsr |= LSR_THRE | LSR_TEMT;
	u->thr_ipending = true;
}

static void write_ier(struct uart *u, uint8_t val)
{
	uint8_t old = u->ier;
	u->ier = val & IER_MASK;
	/* Enabling ETBEI while THR is empty raises the THRE interrupt (Linux's 8250
	 * startup test and its TX path rely on it); disabling it drops the condition. */
	if ((u->ier ^ old) & IER_ETBEI)
		u->thr_ipending = (u->ier & IER_ETBEI) && (u->lsr & LSR_THRE);
}

void uart_write(struct uart *u, unsigned offset, uint8_t val)
{
	pthread_mutex_lock(&u->lock);
	switch (offset & 7) {
	case REG_RBR_THR_DLL:
		if (u->lcr & LCR_DLAB)
			u->dll = val;
		else
			write_thr(u, val);
		break;
	case REG_IER_DLM:
		if (u->lcr & LCR_DLAB)
			u->dlm = val;
		else
			write_ier(u, val);
		break;
	case REG_IIR_FCR:
		write_fcr(u, val);
		break;
	case REG_LCR:
		u->lcr = val;
		break;
	case REG_MCR:
		u->mcr = val & MCR_MASK;
		update_msr(u);
		break;
	case REG_LSR:
		/* Writable only for factory test on real parts; ignore. */
		break;
	case REG_MSR:
		break;
	case REG_SCR:
		u->scr = val;
		break;
	}
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

uint8_t uart_read(struct uart *u, unsigned offset)
{
	uint8_t val = 0;
	pthread_mutex_lock(&u->lock);
	switch (offset & 7) {
	case REG_RBR_THR_DLL:
		if (u->lcr & LCR_DLAB)
			val = u->dll;
		else
			val = rx_pop(u);
		break;
	case REG_IER_DLM:
		val = (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
		break;
	case REG_IIR_FCR: {
		uint8_t id = pending_interrupt(u);
		/* Reading IIR acknowledges a THRE interrupt, but only when it is the one
		 * being reported. */
		if (id == IIR_ID_THRE)
			u->thr_ipending = false;
		val = id | ((u->fcr & FCR_ENABLE) ? IIR_FIFO_ON : 0);
		break;
	}
	case REG_LCR:
		val = u->lcr;
		break;
	case REG_MCR:
		val = u->mcr;
		break;
	case REG_LSR:
		val = u->lsr;
		/* Error bits clear on read; DR/THRE/TEMT track the FIFOs. */
		u->lsr &= ~(LSR_ERRORS | LSR_ERR_IN_FIFO);
		break;
	case REG_MSR:
		val = u->msr;
		u->msr &= ~MSR_DELTAS;
		break;
	case REG_SCR:
		val = u->scr;
		break;
	}
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return val;
}

/* Host input is refused in loopback mode: the receiver is disconnected from the
 * line, and refusing (rather than dropping) keeps the bytes for later. */
static size_t rx_space_locked(const struct uart *u)
{
	if (u->mcr & MCR_LOOP)
		return 0;
	return rx_capacity(u) - u->rx_count;
}

size_t uart_rx_space(struct uart *u)
{
	pthread_mutex_lock(&u->lock);
	size_t n = rx_space_locked(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
	pthread_mutex_lock(&u->lock);
	size_t n = rx_space_locked(u);
	if (n > len)
		n = len;
	for (size_t i = 0; i < n; i++)
		rx_push(u, buf[i]);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

/* ---- state save/load ----
 * Blob layout (version 1, all single bytes, so no endianness issues):
 *   "U550" magic, version, dll, dlm, ier, lcr, mcr, lsr, msr, scr, fcr,
 *   thr_ipending, rx_count, rx[rx_count] (oldest first).
 */
#define UART_STATE_MAGIC "U550"
#define UART_STATE_VERSION 1
#define UART_STATE_HDR 17

int uart_save(struct uart *u, void **buf, size_t *len)
{
	uint8_t *b = malloc(UART_STATE_HDR + UART_FIFO_SIZE);
	if (!b)
		return err_set(ENOMEM, "uart: out of memory saving state");
	pthread_mutex_lock(&u->lock);
	memcpy(b, UART_STATE_MAGIC, 4);
	b[4] = UART_STATE_VERSION;
	b[5] = u->dll;
	b[6] = u->dlm;
	b[7] = u->ier;
	b[8] = u->lcr;
	b[9] = u->mcr;
	b[10] = u->lsr;
	b[11] = u->msr;
	b[12] = u->scr;
	b[13] = u->fcr;
	b[14] = u->thr_ipending;
	b[15] = (uint8_t)u->rx_count;
	b[16] = 0;   /* reserved */
	for (unsigned i = 0; i < u->rx_count; i++)
		b[UART_STATE_HDR + i] = u->rx[(u->rx_head + i) % UART_FIFO_SIZE];
	*len = UART_STATE_HDR + u->rx_count;
	pthread_mutex_unlock(&u->lock);
	*buf = b;
	return 0;
}

int uart_load(struct uart *u, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	if (!buf || len < UART_STATE_HDR || memcmp(b, UART_STATE_MAGIC, 4) != 0)
		return err_set(EINVAL, "uart state: bad header");
	if (b[4] != UART_STATE_VERSION)
		return err_set(EINVAL, "uart state: unsupported version %u", b[4]);
	uint8_t fcr = b[13] & (FCR_ENABLE | FCR_TRIGGER);
	unsigned count = b[15];
	unsigned cap = (fcr & FCR_ENABLE) ? UART_FIFO_SIZE : 1;
	if (count > cap || len != UART_STATE_HDR + count)
		return err_set(EINVAL, "uart state: bad FIFO length %u (blob %zu bytes)", count, len);

	pthread_mutex_lock(&u->lock);
	u->dll = b[5];
	u->dlm = b[6];
	u->ier = b[7] & IER_MASK;
	u->lcr = b[8];
	u->mcr = b[9] & MCR_MASK;
	u->lsr = b[10];
	u->msr = b[11];
	u->scr = b[12];
	u->fcr = fcr;
	u->thr_ipending = b[14] != 0;
	u->rx_head = 0;
	u->rx_count = count;
	memcpy(u->rx, b + UART_STATE_HDR, count);
	/* Keep the derived bits consistent with the FIFO whatever the blob said. */
	if (count)
		u->lsr |= LSR_DR;
	else
		u->lsr &= ~LSR_DR;
	u->lsr |= LSR_THRE | LSR_TEMT;
	u->irq_level = pending_interrupt(u) != IIR_NO_INT;
	if (u->irq)
		u->irq(u->opaque, u->irq_level);
	pthread_mutex_unlock(&u->lock);
	return 0;
}

/* ---- attachment to a VM ---- */

struct uart_console {
	struct uart *uart;
	struct vm *vm;
	unsigned irq;
	int out_fd;
	bool out_stalled;   /* the last write timed out: drop output until it drains */
	uint64_t dropped;   /* bytes dropped because out_fd would not take them */
};

/* How long one byte may wait for a full, non-blocking out_fd before it is dropped. */
#define UART_OUT_TIMEOUT_MS 1000

static void console_irq(void *opaque, bool level)
{
	struct uart_console *c = opaque;
	irq_set_level(&c->vm->irq, c->irq, level);
}

static void console_tx(void *opaque, uint8_t byte)
{
	struct uart_console *c = opaque;
	if (c->out_fd < 0)
		return;
	for (;;) {
		ssize_t n = write(c->out_fd, &byte, 1);
		if (n == 1) {
			c->out_stalled = false;
			return;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !c->out_stalled) {
			/* Wait a bounded time; a stuck reader must not stall the guest forever. */
			struct pollfd p = { .fd = c->out_fd, .events = POLLOUT };
			int r = poll(&p, 1, UART_OUT_TIMEOUT_MS);
			if (r > 0)
				continue;
			if (r < 0 && errno == EINTR)
				continue;
			c->out_stalled = true;
		}
		/* Timed out, stalled, or a hard error (EPIPE, EBADF...): drop the byte. */
		if (c->dropped++ == 0)
			log_warn("uart: console output is not being consumed; dropping output");
		return;
	}
}

static void console_pio(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct uart_console *c = opaque;
	uint8_t *bytes = data;
	/* Wider accesses touch consecutive registers, one byte each (as on ISA). */
	for (unsigned i = 0; i < size; i++) {
		uint64_t off = offset + i;
		if (off >= 8) {
			if (!is_write)
				bytes[i] = 0xff;
			continue;
		}
		if (is_write)
			uart_write(c->uart, (unsigned)off, bytes[i]);
		else
			bytes[i] = uart_read(c->uart, (unsigned)off);
	}
}

static void console_reset(void *dev)
{
	struct uart_console *c = dev;
	uart_reset(c->uart);
}

static int console_save(void *dev, void **buf, size_t *len)
{
	struct uart_console *c = dev;
	return uart_save(c->uart, buf, len);
}

static int console_load(void *dev, const void *buf, size_t len)
{
	struct uart_console *c = dev;
	return uart_load(c->uart, buf, len);
}

static void console_destroy(void *dev)
{
	struct uart_console *c = dev;
	if (c->vm && c->vm->uart == c->uart)
		c->vm->uart = NULL;
	uart_free(c->uart);
	free(c);
}

static const struct device_ops uart_device_ops = {
	.name = "uart",
	.reset = console_reset,
	.save = console_save,
	.load = console_load,
	.destroy = console_destroy,
};

int uart_attach(struct vm *vm, uint16_t base, unsigned irq, int out_fd)
{
	if ((uint32_t)base + 8 > 0x10000)
		return err_set(EINVAL, "uart: base port 0x%x out of range", base);
	struct uart_console *c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(ENOMEM, "uart: out of memory");
	c->vm = vm;
	c->irq = irq;
	c->out_fd = out_fd;
	c->uart = uart_new(console_irq, console_tx, c);
	if (!c->uart) {
		free(c);
		return -ENOMEM;
	}
	int r = io_register_pio(&vm->io, base, 8, console_pio, c, "uart");
	if (r < 0) {
		uart_free(c->uart);
		free(c);
		return err_prefix(r, "uart at 0x%x", base);
	}
	r = vm_add_device(vm, &uart_device_ops, c);
	if (r < 0) {
		/* The port range stays registered (there is no io_unregister_pio), so keep
		 * the state alive rather than leave a dangling handler. */
		return r;
	}
	vm->uart = c->uart;
	return 0;
}
