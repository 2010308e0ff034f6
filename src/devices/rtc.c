/* MC146818-compatible CMOS RTC at ports 0x70 (index) / 0x71 (data).
 *
 * The clock registers are computed from the host's UTC clock at read time plus an
 * offset that changes when the guest sets the time, so the guest's clock runs in
 * real time (also across snapshots). While register B's SET bit is set, the time is
 * frozen in a broken-down copy that the guest edits; clearing SET commits it.
 * No interrupts are generated (periodic/alarm/update-ended): register C reads 0,
 * which Linux's rtc-cmos copes with; reading the time is all a guest needs at boot.
 * The rest of the 128 bytes are plain CMOS storage, pre-filled with the memory
 * sizes the way PC firmware (and QEMU) do.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmsvc/devices.h>
#include <vmsvc/err.h>
#include <vmsvc/vm.h>

#define RTC_INDEX_PORT 0x70
#define CMOS_SIZE 128

enum {
	REG_SECONDS = 0x00,
	REG_SECONDS_ALARM = 0x01,
	REG_MINUTES = 0x02,
	REG_MINUTES_ALARM = 0x03,
	REG_HOURS = 0x04,
	REG_HOURS_ALARM = 0x05,
	REG_WEEKDAY = 0x06,
	REG_DAY = 0x07,
	REG_MONTH = 0x08,
	REG_YEAR = 0x09,
	REG_A = 0x0a,
	REG_B = 0x0b,
	REG_C = 0x0c,
	REG_D = 0x0d,
	REG_CENTURY = 0x32,
};

#define REGA_UIP 0x80
#define REGB_SET 0x80
#define REGB_UIE 0x10
#define REGB_DM_BINARY 0x04
#define REGB_24H 0x02
#define REGD_VRT 0x80
#define HOUR_PM 0x80

struct rtc {
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[CMOS_SIZE];   /* storage; the clock registers are computed instead */
	int64_t offset;            /* guest time - host time, seconds */
	bool frozen;               /* register B SET: time held in `held` */
	struct tm held;
};

static uint8_t to_bcd(unsigned v)
{
	return (uint8_t)(((v / 10) % 10) << 4 | (v % 10));
}

static unsigned from_bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t encode(const struct rtc *r, unsigned v)
{
	return (r->cmos[REG_B] & REGB_DM_BINARY) ? (uint8_t)v : to_bcd(v);
}

static unsigned decode(const struct rtc *r, uint8_t v)
{
	return (r->cmos[REG_B] & REGB_DM_BINARY) ? v : from_bcd(v);
}

static void current_tm(const struct rtc *r, struct tm *tm)
{
	if (r->frozen) {
		*tm = r->held;
		return;
	}
	time_t t = time(NULL) + (time_t)r->offset;
	gmtime_r(&t, tm);
}

static void commit_tm(struct rtc *r, struct tm *tm)
{
	if (r->frozen) {
		r->held = *tm;
		return;
	}
	tm->tm_isdst = 0;
	r->offset = (int64_t)timegm(tm) - (int64_t)time(NULL);
}

static uint8_t encode_hours(const struct rtc *r, int hour)
{
	if (r->cmos[REG_B] & REGB_24H)
		return encode(r, (unsigned)hour);
	unsigned h12 = hour % 12 == 0 ? 12 : (unsigned)hour % 12;
	return encode(r, h12) | (hour >= 12 ? HOUR_PM : 0);
}

static int decode_hours(const struct rtc *r, uint8_t v)
{
	if (r->cmos[REG_B] & REGB_24H)
		return (int)decode(r, v);
	int h = (int)decode(r, v & ~HOUR_PM) % 12;
	return (v & HOUR_PM) ? h + 12 : h;
}

static uint8_t read_reg(struct rtc *r, uint8_t reg)
{
	struct tm tm;
	switch (reg) {
	case REG_SECONDS:
	case REG_MINUTES:
	case REG_HOURS:
	case REG_WEEKDAY:
	case REG_DAY:
	case REG_MONTH:
	case REG_YEAR:
	case REG_CENTURY:
		current_tm(r, &tm);
		break;
	}
	switch (reg) {
	case REG_SECONDS:
		return encode(r, (unsigned)(tm.tm_sec > 59 ? 59 : tm.tm_sec));
	case REG_MINUTES:
		return encode(r, (unsigned)tm.tm_min);
	case REG_HOURS:
		return encode_hours(r, tm.tm_hour);
	case REG_WEEKDAY:
		return encode(r, (unsigned)tm.tm_wday + 1);   /* 1 = Sunday */
	case REG_DAY:
		return encode(r, (unsigned)tm.tm_mday);
	case REG_MONTH:
		return encode(r, (unsigned)tm.tm_mon + 1);
	case REG_YEAR:
		return encode(r, (unsigned)((tm.tm_year + 1900) % 100));
	case REG_CENTURY:
		return encode(r, (unsigned)((tm.tm_year + 1900) / 100));
	case REG_A:
		return r->cmos[REG_A] & ~REGA_UIP;   /* never mid-update */
	case REG_C:
		return 0;                             /* no interrupt flags, ever */
	case REG_D:
		return REGD_VRT;                      /* the battery is always good */
	default:
		return r->cmos[reg];
	}
}

static void write_time_field(struct rtc *r, uint8_t reg, uint8_t val)
{
	struct tm tm;
	current_tm(r, &tm);
	switch (reg) {
	case REG_SECONDS:
		tm.tm_sec = (int)decode(r, val);
		break;
	case REG_MINUTES:
		tm.tm_min = (int)decode(r, val);
		break;
	case REG_HOURS:
		tm.tm_hour = decode_hours(r, val);
		break;
	case REG_WEEKDAY:
		return;   /* derived from the date */
	case REG_DAY:
		tm.tm_mday = (int)decode(r, val);
		break;
	case REG_MONTH:
		tm.tm_mon = (int)decode(r, val) - 1;
		break;
	case REG_YEAR: {
		int century = (tm.tm_year + 1900) / 100;
		tm.tm_year = century * 100 + (int)decode(r, val) - 1900;
		break;
	}
	case REG_CENTURY: {
		int yy = (tm.tm_year + 1900) % 100;
		tm.tm_year = (int)decode(r, val) * 100 + yy - 1900;
		break;
	}
	}
	commit_tm(r, &tm);
}

static void write_reg(struct rtc *r, uint8_t reg, uint8_t val)
{
	switch (reg) {
	case REG_SECONDS:
	case REG_MINUTES:
	case REG_HOURS:
	case REG_WEEKDAY:
	case REG_DAY:
	case REG_MONTH:
	case REG_YEAR:
	case REG_CENTURY:
		write_time_field(r, reg, val);
		break;
	case REG_A:
		r->cmos[REG_A] = val & ~REGA_UIP;
		break;
	case REG_B:
		if ((val & REGB_SET) && !r->frozen) {
			current_tm(r, &r->held);
			r->frozen = true;
			val &= ~REGB_UIE;   /* SET clears UIE (MC146818 data sheet) */
		} else if (!(val & REGB_SET) && r->frozen) {
			struct tm tm = r->held;
			r->frozen = false;
			commit_tm(r, &tm);
		}
		r->cmos[REG_B] = val;
		break;
	case REG_C:
	case REG_D:
		break;   /* read-only */
	default:
		r->cmos[reg] = val;
		break;
	}
}

static void rtc_pio(void *opaque, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct rtc *r = opaque;
	uint8_t *bytes = data;
	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < size; i++) {
		if (offset + i == 0) {
			/* Index port; bit 7 is the NMI mask, which we ignore. The port is
			 * write-only on real chipsets. */
			if (is_write)
				r->index = bytes[i] & 0x7f;
			else
				bytes[i] = 0xff;
		} else if (offset + i == 1) {
			if (is_write)
				write_reg(r, r->index, bytes[i]);
			else
				bytes[i] = read_reg(r, r->index);
		} else if (!is_write) {
			bytes[i] = 0xff;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

/* Memory size bytes as PC firmware reports them (QEMU's layout). */
static void fill_memory_sizes(struct rtc *r, uint64_t ram)
{
	uint64_t low = ram < MEM_HOLE_START ? ram : MEM_HOLE_START;
	uint64_t high = ram - low;
	r->cmos[0x15] = 0x80;   /* base memory: 640 KiB */
	r->cmos[0x16] = 0x02;
	uint64_t ext_kib = low > (1 << 20) ? (low - (1 << 20)) >> 10 : 0;   /* above 1 MiB, KiB */
	if (ext_kib > 0xfc00)
		ext_kib = 0xfc00;
	r->cmos[0x17] = r->cmos[0x30] = (uint8_t)ext_kib;
	r->cmos[0x18] = r->cmos[0x31] = (uint8_t)(ext_kib >> 8);
	uint64_t ext16 = low > (16 << 20) ? (low - (16 << 20)) >> 16 : 0;   /* above 16 MiB, 64 KiB units */
	if (ext16 > 0xffff)
		ext16 = 0xffff;
	r->cmos[0x34] = (uint8_t)ext16;
	r->cmos[0x35] = (uint8_t)(ext16 >> 8);
	uint64_t above4g = high >> 16;                                      /* above 4 GiB, 64 KiB units */
	if (above4g > 0xffffff)
		above4g = 0xffffff;
	r->cmos[0x5b] = (uint8_t)above4g;
	r->cmos[0x5c] = (uint8_t)(above4g >> 8);
	r->cmos[0x5d] = (uint8_t)(above4g >> 16);
}

static void rtc_power_on(struct rtc *r, uint64_t ram)
{
	memset(r->cmos, 0, sizeof(r->cmos));
	r->index = 0;
	r->offset = 0;
	r->frozen = false;
	r->cmos[REG_A] = 0x26;                   /* 32.768 kHz time base, 1024 Hz rate */
	r->cmos[REG_B] = REGB_24H;               /* BCD, 24-hour */
	fill_memory_sizes(r, ram);
}

/* ---- device ops ---- */

struct rtc_dev {
	struct rtc rtc;
	uint64_t ram;
};

static void rtc_reset(void *dev)
{
	struct rtc_dev *d = dev;
	pthread_mutex_lock(&d->rtc.lock);
	/* A reset does not clear CMOS or the clock on a PC: the battery keeps them.
	 * Only the update-control state is reset. */
	d->rtc.index = 0;
	if (d->rtc.frozen) {
		struct tm tm = d->rtc.held;
		d->rtc.frozen = false;
		commit_tm(&d->rtc, &tm);
	}
	d->rtc.cmos[REG_B] &= ~REGB_SET;
	pthread_mutex_unlock(&d->rtc.lock);
}

/* Blob (version 1): "RTC1", version byte, index, frozen, reserved, offset (int64 LE),
 * held time as int64 LE seconds (meaningful when frozen), cmos[128]. */
#define RTC_STATE_LEN (8 + 8 + 8 + CMOS_SIZE)

static void put_le64(uint8_t *p, int64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)((uint64_t)v >> (8 * i));
}

static int64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return (int64_t)v;
}

static int rtc_save(void *dev, void **buf, size_t *len)
{
	struct rtc_dev *d = dev;
	uint8_t *b = calloc(1, RTC_STATE_LEN);
	if (!b)
		return err_set(ENOMEM, "rtc: out of memory saving state");
	pthread_mutex_lock(&d->rtc.lock);
	memcpy(b, "RTC", 3);
	b[3] = '1';
	b[4] = 1;
	b[5] = d->rtc.index;
	b[6] = d->rtc.frozen;
	put_le64(b + 8, d->rtc.offset);
	struct tm held = d->rtc.held;
	put_le64(b + 16, d->rtc.frozen ? (int64_t)timegm(&held) : 0);
	memcpy(b + 24, d->rtc.cmos, CMOS_SIZE);
	pthread_mutex_unlock(&d->rtc.lock);
	*buf = b;
	*len = RTC_STATE_LEN;
	return 0;
}

static int rtc_load(void *dev, const void *buf, size_t len)
{
	struct rtc_dev *d = dev;
	const uint8_t *b = buf;
	if (!buf || len != RTC_STATE_LEN || memcmp(b, "RTC1", 4) != 0)
		return err_set(EINVAL, "rtc state: bad header or length");
	if (b[4] != 1)
		return err_set(EINVAL, "rtc state: unsupported version %u", b[4]);
	pthread_mutex_lock(&d->rtc.lock);
	d->rtc.index = b[5] & 0x7f;
	d->rtc.frozen = b[6] != 0;
	d->rtc.offset = get_le64(b + 8);
	time_t held = (time_t)get_le64(b + 16);
	if (!gmtime_r(&held, &d->rtc.held))
		memset(&d->rtc.held, 0, sizeof(d->rtc.held));
	memcpy(d->rtc.cmos, b + 24, CMOS_SIZE);
	pthread_mutex_unlock(&d->rtc.lock);
	return 0;
}

static void rtc_destroy(void *dev)
{
	struct rtc_dev *d = dev;
	pthread_mutex_destroy(&d->rtc.lock);
	free(d);
}

static const struct device_ops rtc_device_ops = {
	.name = "rtc",
	.reset = rtc_reset,
	.save = rtc_save,
	.load = rtc_load,
	.destroy = rtc_destroy,
};

int rtc_attach(struct vm *vm)
{
	struct rtc_dev *d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(ENOMEM, "rtc: out of memory");
	pthread_mutex_init(&d->rtc.lock, NULL);
	d->ram = vm->mem.ram_size ? vm->mem.ram_size : vm->cfg.mem_size;
	rtc_power_on(&d->rtc, d->ram);
	int r = io_register_pio(&vm->io, RTC_INDEX_PORT, 2, rtc_pio, &d->rtc, "rtc");
	if (r < 0) {
		rtc_destroy(d);
		return err_prefix(r, "rtc");
	}
	/* On failure the ports stay registered (no io_unregister_pio): keep d alive. */
	return vm_add_device(vm, &rtc_device_ops, d);
}
