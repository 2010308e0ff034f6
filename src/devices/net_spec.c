/* `--net` option parsing and MAC address helpers (no I/O besides getrandom). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <vmsvc/err.h>
#include <vmsvc/net.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int net_mac_parse(const char *s, uint8_t mac[6])
{
	uint8_t m[6];
	if (!s || strlen(s) != 17)
		return err_set(EINVAL, "bad MAC address '%s' (want aa:bb:cc:dd:ee:ff)", s ? s : "");
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return err_set(EINVAL, "bad MAC address '%s' (want aa:bb:cc:dd:ee:ff)", s);
		m[i] = (uint8_t)(hi << 4 | lo);
	}
	if (m[0] & 1)
		return err_set(EINVAL, "MAC address %s is multicast (the first octet must be even)", s);
	if (!(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]))
		return err_set(EINVAL, "MAC address %s is all zero", s);
	memcpy(mac, m, 6);
	return 0;
}

char *net_mac_format(const uint8_t mac[6], char buf[18])
{
	snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	return buf;
}

static void mac_with_prefix(uint8_t mac[6], uint32_t low)
{
	mac[0] = NET_MAC_PREFIX0;
	mac[1] = NET_MAC_PREFIX1;
	mac[2] = NET_MAC_PREFIX2;
	mac[3] = (uint8_t)(low >> 16);
	mac[4] = (uint8_t)(low >> 8);
	mac[5] = (uint8_t)low;
}

void net_mac_random(uint8_t mac[6])
{
	uint32_t r = 0;
	/* getrandom of 4 bytes never blocks after boot-time seeding and is not interrupted;
	 * if it somehow fails, fall back to something that still varies per process. */
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = (uint32_t)getpid() * 2654435761u;
	mac_with_prefix(mac, r);
}

void net_mac_from_name(const char *name, uint8_t mac[6])
{
	uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a 64 */
	for (const unsigned char *p = (const unsigned char *)name; p && *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	mac_with_prefix(mac, (uint32_t)(h ^ (h >> 32)));
}

/* Linux's dev_valid_name() plus our own refusals: no '%' (TUNSETIFF would treat it as
 * a template and pick a name we don't know) and no ',' (cannot occur here anyway). */
static int check_ifname(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n >= NET_IFNAME_MAX)
		return err_set(EINVAL, "--net: tap name '%s' must be 1..%d characters", v, NET_IFNAME_MAX - 1);
	if (!strcmp(v, ".") || !strcmp(v, ".."))
		return err_set(EINVAL, "--net: '%s' is not a valid interface name", v);
	for (const char *p = v; *p; p++)
		if (*p == '/' || *p == ':' || *p == '%' || *p <= ' ' || *p == 0x7f)
			return err_set(EINVAL, "--net: interface name '%s' contains '%c'", v, *p > ' ' ? *p : '?');
	return 0;
}

static int parse_bool(const char *key, const char *v, bool *out)
{
	if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1"))
		*out = true;
	else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0"))
		*out = false;
	else
		return err_set(EINVAL, "--net: %s=%s: want on or off", key, v);
	return 0;
}

int net_parse_spec(const char *spec, struct net_spec *out)
{
	memset(out, 0, sizeof(*out));
	out->up = true;
	if (!spec || !*spec)
		return err_set(EINVAL, "--net: empty option (want tap=NAME[,mac=MAC][,capture=FILE][,create=on])");

	bool seen_tap = false, seen_mac = false, seen_cap = false, seen_create = false, seen_up = false;
	const char *p = spec;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t itemlen = end ? (size_t)(end - p) : strlen(p);
		char item[NET_PATH_MAX + 16];
		if (itemlen >= sizeof(item))
			return err_set(EINVAL, "--net: option item too long");
		memcpy(item, p, itemlen);
		item[itemlen] = 0;

		char *eq = strchr(item, '=');
		if (!eq || eq == item)
			return err_set(EINVAL, "--net: '%s' is not key=value", item);
		*eq = 0;
		const char *key = item, *val = eq + 1;
		if (!*val)
			return err_set(EINVAL, "--net: %s= needs a value", key);

		int ret = 0;
		bool *seen;
		if (!strcmp(key, "tap")) {
			seen = &seen_tap;
			if (!(ret = check_ifname(val)))
				strcpy(out->ifname, val);   /* length checked above */
		} else if (!strcmp(key, "mac")) {
			seen = &seen_mac;
			ret = net_mac_parse(val, out->mac);
			if (ret < 0)
				ret = err_prefix(ret, "--net: ");
			out->has_mac = true;
		} else if (!strcmp(key, "capture")) {
			seen = &seen_cap;
			if (strlen(val) >= sizeof(out->capture))
				ret = err_set(EINVAL, "--net: capture path too long");
			else
				strcpy(out->capture, val);
		} else if (!strcmp(key, "create")) {
			seen = &seen_create;
			ret = parse_bool(key, val, &out->create);
		} else if (!strcmp(key, "up")) {
			seen = &seen_up;
			ret = parse_bool(key, val, &out->up);
		} else {
			return err_set(EINVAL, "--net: unknown key '%s' (known: tap, mac, capture, create, up)", key);
		}
		if (ret < 0)
			return ret;
		if (*seen)
			return err_set(EINVAL, "--net: %s= given twice", key);
		*seen = true;

		if (!end)
			break;
		p = end + 1;
	}
	if (!seen_tap)
		return err_set(EINVAL, "--net: tap=NAME is required");
	return 0;
}
