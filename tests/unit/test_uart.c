/* Unit tests for the 16550A UART model (no VM, no /dev/kvm). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <vmsvc/devices.h>

enum { RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

struct harness {
	struct uart *u;
	bool level;
	unsigned irq_calls;
	uint8_t tx[256];
	size_t ntx;
};

static void on_irq(void *opaque, bool level)
{
	struct harness *h = opaque;
	h->level = level;
	h->irq_calls++;
}

static void on_tx(void *opaque, uint8_t byte)
{
	struct harness *h = opaque;
	if (h->ntx < sizeof(h->tx))
		h->tx[h->ntx++] = byte;
}

static int setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	h->u = uart_new(on_irq, on_tx, h);
	if (!h->u)
		return -1;
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;
	uart_free(h->u);
	free(h);
	return 0;
}

static void test_reset_values(void **state)
{
	struct harness *h = *state;
	assert_int_equal(uart_read(h->u, IER), 0);
	assert_int_equal(uart_read(h->u, IIR), 0x01);
	assert_int_equal(uart_read(h->u, LCR), 0);
	assert_int_equal(uart_read(h->u, MCR), 0);
	assert_int_equal(uart_read(h->u, LSR), 0x60);
	assert_int_equal(uart_read(h->u, MSR) & 0xf0, 0xb0);
	assert_false(h->level);
}

static void test_dlab_and_scratch(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, IER, 0x05);
	uart_write(h->u, LCR, 0x83);           /* DLAB + 8N1 */
	uart_write(h->u, DLL, 0x01);
	uart_write(h->u, DLM, 0x02);
	assert_int_equal(uart_read(h->u, DLL), 0x01);
	assert_int_equal(uart_read(h->u, DLM), 0x02);
	assert_int_equal(uart_read(h->u, LCR), 0x83);
	assert_int_equal(h->ntx, 0);           /* DLL write is not a transmit */
	uart_write(h->u, LCR, 0x03);
	assert_int_equal(uart_read(h->u, IER), 0x05);   /* IER untouched by the DLM write */
	uart_write(h->u, THR, 'A');
	assert_int_equal(h->ntx, 1);
	assert_int_equal(h->tx[0], 'A');
	uart_write(h->u, LCR, 0x80);
	assert_int_equal(uart_read(h->u, DLL), 0x01);   /* divisor survived */
	uart_write(h->u, LCR, 0x03);

	uart_write(h->u, SCR, 0x55);
	assert_int_equal(uart_read(h->u, SCR), 0x55);
	uart_write(h->u, SCR, 0xaa);
	assert_int_equal(uart_read(h->u, SCR), 0xaa);
}

/* The probe sequence of Linux's 8250 autoconfig(), reduced to what it checks. */
static void test_linux_autoconfig_detects_16550a(void **state)
{
	struct harness *h = *state;
	struct uart *u = h->u;

	/* IER: upper nibble absent, lower nibble read/write. */
	uint8_t saved = uart_read(u, IER);
	uart_write(u, IER, 0);
	assert_int_equal(uart_read(u, IER) & 0x0f, 0);
	uart_write(u, IER, 0x0f);
	assert_int_equal(uart_read(u, IER) & 0x0f, 0x0f);
	uart_write(u, IER, 0xff);
	assert_int_equal(uart_read(u, IER), 0x0f);   /* no UUE (XScale) bit */
	uart_write(u, IER, saved);

	/* Loopback test: MCR = LOOP | RTS | OUT2 must read back MSR[7:4] = DCD|CTS. */
	uint8_t save_mcr = uart_read(u, MCR);
	uart_write(u, MCR, 0x1a);
	assert_int_equal(uart_read(u, MSR) & 0xf0, 0x90);
	uart_write(u, MCR, save_mcr);

	/* FIFO test: IIR bits 7:6 == 3 means 16550A. */
	uart_write(u, FCR, 0x01);
	assert_int_equal(uart_read(u, IIR) >> 6, 3);

	/* EFR probes (16650 detection) read offset 2 with LCR = 0x80 / 0xbf: a 16550A
	 * has no EFR there, so the read must be non-zero (it is IIR). */
	uart_write(u, LCR, 0x80);
	assert_int_not_equal(uart_read(u, IIR), 0);
	uart_write(u, LCR, 0xbf);
	assert_int_not_equal(uart_read(u, IIR), 0);
	uart_write(u, LCR, 0);
	/* NatSemi SuperIO test: MCR bit 7 must not stick. */
	uart_write(u, MCR, 0x80);
	assert_int_equal(uart_read(u, MCR) & 0x80, 0);
	uart_write(u, MCR, 0);
	/* TI16C750 test: the 64-byte FIFO bit (IIR bit 5) must stay clear. */
	uart_write(u, FCR, 0x21);
	assert_int_equal(uart_read(u, IIR) & 0xe0, 0xc0);
}

static void test_loopback_routes_tx_to_rx(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, MCR, 0x10);
	uart_write(h->u, THR, 0x5a);
	assert_int_equal(h->ntx, 0);                 /* nothing leaves in loopback */
	assert_true(uart_read(h->u, LSR) & 0x01);
	assert_int_equal(uart_read(h->u, RBR), 0x5a);
	assert_false(uart_read(h->u, LSR) & 0x01);
	/* Host input is not accepted while the receiver is looped back. */
	assert_int_equal(uart_rx_space(h->u), 0);
	assert_int_equal(uart_receive(h->u, (const uint8_t *)"x", 1), 0);
	/* MSR mapping: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
	uart_write(h->u, MCR, 0x10 | 0x01);
	assert_int_equal(uart_read(h->u, MSR) & 0xf0, 0x20);
	uart_write(h->u, MCR, 0x10 | 0x04);
	assert_int_equal(uart_read(h->u, MSR), 0x40 | 0x02);  /* RI on, DSR dropped (DDSR) */
	uart_write(h->u, MCR, 0x10);
	assert_int_equal(uart_read(h->u, MSR), 0x04);         /* RI trailing edge -> TERI */
	uart_write(h->u, MCR, 0);
	assert_int_equal(uart_rx_space(h->u), 1);
}

static void test_fifo_fill_and_overrun(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, FCR, 0x07);   /* enable + clear both */
	assert_int_equal(uart_rx_space(h->u), 16);
	uint8_t buf[20];
	for (int i = 0; i < 20; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(uart_receive(h->u, buf, 20), 16);   /* host input is flow-controlled */
	assert_int_equal(uart_rx_space(h->u), 0);
	assert_int_equal(uart_read(h->u, LSR) & 0x03, 0x01);  /* DR, no overrun */

	/* Overrun via loopback: the 17th byte is lost and OE is set. */
	uart_write(h->u, MCR, 0x10);
	uart_write(h->u, THR, 0xee);
	uint8_t lsr = uart_read(h->u, LSR);
	assert_true(lsr & 0x02);
	assert_false(uart_read(h->u, LSR) & 0x02);   /* OE clears on read */
	uart_write(h->u, MCR, 0);
	for (int i = 0; i < 16; i++)
		assert_int_equal(uart_read(h->u, RBR), i);   /* FIFO order, overrun byte dropped */
	assert_false(uart_read(h->u, LSR) & 0x01);

	/* FCR clear-RX empties the FIFO. */
	uart_receive(h->u, buf, 5);
	uart_write(h->u, FCR, 0x03);
	assert_false(uart_read(h->u, LSR) & 0x01);
	assert_int_equal(uart_rx_space(h->u), 16);
}

static void test_fifo_disabled_mode(void **state)
{
	struct harness *h = *state;
	assert_int_equal(uart_read(h->u, IIR) & 0xc0, 0);   /* no FIFO bits */
	assert_int_equal(uart_rx_space(h->u), 1);
	assert_int_equal(uart_receive(h->u, (const uint8_t *)"ab", 2), 1);
	uart_write(h->u, IER, 0x01);
	assert_int_equal(uart_read(h->u, IIR), 0x04);   /* RDA even below any trigger */
	assert_int_equal(uart_read(h->u, RBR), 'a');
	/* Overrun of the single RBR in loopback. */
	uart_write(h->u, IER, 0x00);
	uart_write(h->u, MCR, 0x10);
	uart_write(h->u, THR, '1');
	uart_write(h->u, THR, '2');
	assert_int_equal(uart_read(h->u, LSR) & 0x03, 0x03);
	assert_int_equal(uart_read(h->u, RBR), '1');
	/* Enabling the FIFO clears it; disabling again clears it again. */
	uart_write(h->u, THR, '3');
	uart_write(h->u, FCR, 0x01);
	assert_false(uart_read(h->u, LSR) & 0x01);
	uart_write(h->u, THR, '4');
	uart_write(h->u, FCR, 0x00);
	assert_false(uart_read(h->u, LSR) & 0x01);
}

static void test_rx_interrupt_raised_and_cleared(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, FCR, 0xc1);   /* FIFO, trigger 14 */
	uart_write(h->u, IER, 0x01);
	assert_false(h->level);
	uart_receive(h->u, (const uint8_t *)"hi", 2);
	assert_true(h->level);
	assert_int_equal(uart_read(h->u, IIR), 0xcc);   /* timeout: below trigger */
	assert_int_equal(uart_read(h->u, RBR), 'h');
	assert_true(h->level);
	assert_int_equal(uart_read(h->u, RBR), 'i');
	assert_false(h->level);
	assert_int_equal(uart_read(h->u, IIR), 0xc1);

	uint8_t buf[14];
	memset(buf, 'x', sizeof(buf));
	uart_receive(h->u, buf, 13);
	assert_int_equal(uart_read(h->u, IIR), 0xcc);
	uart_receive(h->u, buf, 1);
	assert_int_equal(uart_read(h->u, IIR), 0xc4);   /* trigger level reached */

	/* Masking ERBFI drops the line; unmasking raises it again. */
	unsigned calls = h->irq_calls;
	uart_write(h->u, IER, 0);
	assert_false(h->level);
	uart_write(h->u, IER, 0x01);
	assert_true(h->level);
	assert_int_equal(h->irq_calls, calls + 2);   /* only called on changes */
	uart_read(h->u, LSR);
	assert_int_equal(h->irq_calls, calls + 2);
}

static void test_input_with_ier_zero_no_irq(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, FCR, 0x01);
	uart_receive(h->u, (const uint8_t *)"abc", 3);
	assert_false(h->level);
	assert_int_equal(h->irq_calls, 0);
	assert_int_equal(uart_read(h->u, IIR), 0xc1);
	assert_true(uart_read(h->u, LSR) & 0x01);   /* data is there for polling */
}

static void test_thre_interrupt(void **state)
{
	struct harness *h = *state;
	/* Enabling ETBEI with THR empty raises THRE. */
	uart_write(h->u, IER, 0x02);
	assert_true(h->level);
	/* Reading IIR when THRE is the source clears it. */
	assert_int_equal(uart_read(h->u, IIR), 0x02);
	assert_false(h->level);
	assert_int_equal(uart_read(h->u, IIR), 0x01);
	/* Re-enabling re-asserts (Linux's UART_BUG_THRE test expects this). */
	uart_write(h->u, IER, 0);
	uart_write(h->u, IER, 0x02);
	assert_int_equal(uart_read(h->u, IIR), 0x02);
	/* A THR write re-arms it once the byte is gone (instantly here). */
	uart_write(h->u, THR, 'z');
	assert_true(h->level);
	assert_int_equal(uart_read(h->u, LSR) & 0x60, 0x60);
	/* Writing IER with ETBEI unchanged does not re-raise after an IIR ack. */
	assert_int_equal(uart_read(h->u, IIR), 0x02);
	uart_write(h->u, IER, 0x02);
	assert_false(h->level);
	/* Clearing ETBEI drops a pending THRE. */
	uart_write(h->u, THR, 'y');
	assert_true(h->level);
	uart_write(h->u, IER, 0);
	assert_false(h->level);
	assert_int_equal(h->ntx, 2);
}

static void test_iir_priorities(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, FCR, 0x01);
	uart_write(h->u, MCR, 0x10);      /* loopback to create overrun + MSR deltas */
	for (int i = 0; i < 17; i++)
		uart_write(h->u, THR, (uint8_t)i);   /* 17th overruns */
	uart_write(h->u, MCR, 0x10 | 0x02);      /* RTS -> CTS delta */
	uart_write(h->u, IER, 0x0f);
	assert_true(h->level);
	assert_int_equal(uart_read(h->u, IIR), 0xc6);   /* line status first */
	assert_int_equal(uart_read(h->u, IIR), 0xc6);   /* IIR read does not clear it */
	uart_read(h->u, LSR);
	assert_int_equal(uart_read(h->u, IIR), 0xc4);   /* then RX data (16 >= trigger 1) */
	for (int i = 0; i < 16; i++)
		uart_read(h->u, RBR);
	assert_int_equal(uart_read(h->u, IIR), 0xc2);   /* then THRE, acked by this read */
	assert_int_equal(uart_read(h->u, IIR), 0xc0);   /* then modem status */
	assert_true(h->level);
	assert_true(uart_read(h->u, MSR) & 0x01);
	assert_int_equal(uart_read(h->u, IIR), 0xc1);
	assert_false(h->level);
}

static void test_save_load_round_trip(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, LCR, 0x80);
	uart_write(h->u, DLL, 0x03);
	uart_write(h->u, DLM, 0x00);
	uart_write(h->u, LCR, 0x1b);
	uart_write(h->u, FCR, 0x81);   /* trigger 8 */
	uart_write(h->u, SCR, 0x42);
	uart_write(h->u, MCR, 0x0b);
	uart_receive(h->u, (const uint8_t *)"0123456789", 10);
	uart_read(h->u, RBR);          /* move the ring head */
	uart_write(h->u, IER, 0x01);
	assert_true(h->level);

	void *blob;
	size_t len;
	assert_int_equal(uart_save(h->u, &blob, &len), 0);

	struct harness h2 = { 0 };
	h2.u = uart_new(on_irq, on_tx, &h2);
	assert_non_null(h2.u);
	assert_int_equal(uart_load(h2.u, blob, len), 0);
	assert_true(h2.level);   /* line re-driven from the loaded state */
	assert_int_equal(uart_read(h2.u, IIR), 0xc4);   /* 9 bytes >= trigger 8 */
	assert_int_equal(uart_read(h2.u, LCR), 0x1b);
	assert_int_equal(uart_read(h2.u, MCR), 0x0b);
	assert_int_equal(uart_read(h2.u, SCR), 0x42);
	assert_int_equal(uart_read(h2.u, IER), 0x01);
	uart_write(h2.u, LCR, 0x9b);
	assert_int_equal(uart_read(h2.u, DLL), 0x03);
	uart_write(h2.u, LCR, 0x1b);
	for (char c = '1'; c <= '9'; c++)
		assert_int_equal(uart_read(h2.u, RBR), c);
	assert_false(uart_read(h2.u, LSR) & 0x01);
	assert_false(h2.level);

	/* Hostile blobs are rejected. */
	uint8_t *b = blob;
	assert_int_equal(uart_load(h2.u, blob, len - 1), -EINVAL);
	assert_int_equal(uart_load(h2.u, blob, 3), -EINVAL);
	b[15] = 200;
	assert_int_equal(uart_load(h2.u, blob, len), -EINVAL);
	b[15] = 9;
	b[4] = 99;
	assert_int_equal(uart_load(h2.u, blob, len), -EINVAL);
	b[4] = 1;
	b[13] = 0;   /* FIFO disabled but 9 bytes queued */
	assert_int_equal(uart_load(h2.u, blob, len), -EINVAL);
	free(blob);
	uart_free(h2.u);
}

static void test_reset(void **state)
{
	struct harness *h = *state;
	uart_write(h->u, IER, 0x02);
	assert_true(h->level);
	uart_write(h->u, SCR, 9);
	uart_reset(h->u);
	assert_false(h->level);
	assert_int_equal(uart_read(h->u, IER), 0);
	assert_int_equal(uart_read(h->u, SCR), 0);
	assert_int_equal(uart_read(h->u, IIR), 0x01);
}

static void test_offsets_wrap_safely(void **state)
{
	struct harness *h = *state;
	/* Out-of-range offsets alias into 0..7 rather than touching memory outside. */
	uart_write(h->u, 8 + SCR, 0x77);
	assert_int_equal(uart_read(h->u, SCR), 0x77);
	assert_int_equal(uart_read(h->u, 0xffffffffu), 0x77);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_reset_values),
		T(test_dlab_and_scratch),
		T(test_linux_autoconfig_detects_16550a),
		T(test_loopback_routes_tx_to_rx),
		T(test_fifo_fill_and_overrun),
		T(test_fifo_disabled_mode),
		T(test_rx_interrupt_raised_and_cleared),
		T(test_input_with_ier_zero_no_irq),
		T(test_thre_interrupt),
		T(test_iir_priorities),
		T(test_save_load_round_trip),
		T(test_reset),
		T(test_offsets_wrap_safely),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
