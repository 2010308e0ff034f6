/* BTF type information through libbpf; see include/vmsvc/vmi.h.
 * The blob comes from guest memory: libbpf validates its structure, and every
 * lookup here fails closed with a message naming the struct and member. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vmsvc/err.h>
#include <vmsvc/vmi.h>

#ifdef HAVE_LIBBPF
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define BTF_MAX_DEPTH 16 /* anonymous nesting / modifier chains */

/* libbpf's btf__find_by_name_kind is a linear scan (~95,000 types in a
 * distribution kernel): the checks look up dozens of structs, so struct and
 * union names are indexed once in an open-addressing table. */
struct vmi_btf {
	struct btf *btf;
	uint32_t *ids; /* type ids, 0 = empty */
	size_t size;   /* power of two */
};

static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static void index_types(struct vmi_btf *v)
{
	unsigned n = btf__type_cnt(v->btf);
	size_t size = 1024;
	while (size < 2 * (size_t)n)
		size *= 2;
	v->ids = calloc(size, sizeof(*v->ids));
	if (!v->ids)
		return; /* lookups fall back to libbpf's scan */
	v->size = size;
	for (unsigned id = 1; id < n; id++) {
		const struct btf_type *t = btf__type_by_id(v->btf, id);
		if (!t || !btf_is_composite(t))
			continue;
		const char *name = btf__name_by_offset(v->btf, t->name_off);
		if (!name || !*name)
			continue;
		size_t h = name_hash(name) & (size - 1);
		for (; v->ids[h]; h = (h + 1) & (size - 1)) {
			const struct btf_type *o = btf__type_by_id(v->btf, v->ids[h]);
			if (!strcmp(btf__name_by_offset(v->btf, o->name_off), name))
				break;
		}
		/* The lowest id wins, a struct over a union of the same name
		 * (the order btf__find_by_name_kind would give). */
		if (!v->ids[h] || (btf_is_union(btf__type_by_id(v->btf, v->ids[h])) && btf_is_struct(t)))
			v->ids[h] = id;
	}
}

int vmi_btf_new(struct vmi_btf **out, const void *data, size_t len)
{
	*out = NULL;
	if (len < 24 || len > (1u << 30))
		return err_set(EINVAL, "BTF blob of %zu bytes is implausible", len);
	struct btf *b = btf__new(data, (uint32_t)len);
	long e = libbpf_get_error(b);
	if (!b || e)
		return err_set(EINVAL, "BTF blob rejected by libbpf (%s)", strerror(e ? (int)-e : errno));
	struct vmi_btf *v = calloc(1, sizeof(*v));
	if (!v) {
		btf__free(b);
		return err_set(ENOMEM, "out of memory");
	}
	v->btf = b;
	index_types(v);
	*out = v;
	return 0;
}

void vmi_btf_free(struct vmi_btf *b)
{
	if (!b)
		return;
	btf__free(b->btf);
	free(b->ids);
	free(b);
}

unsigned vmi_btf_ntypes(const struct vmi_btf *b)
{
	return btf__type_cnt(b->btf);
}

/* Follow typedefs and const/volatile/restrict to the underlying type. */
static const struct btf_type *strip(const struct btf *b, uint32_t *id)
{
	const struct btf_type *t = btf__type_by_id(b, *id);
	for (int i = 0; t && i < BTF_MAX_DEPTH && (btf_is_mod(t) || btf_is_typedef(t)); i++) {
		*id = t->type;
		t = btf__type_by_id(b, *id);
	}
	return t;
}

static int find_type(const struct vmi_btf *v, const char *type, uint32_t *id)
{
	if (v->ids) {
		for (size_t h = name_hash(type) & (v->size - 1); v->ids[h]; h = (h + 1) & (v->size - 1)) {
			const struct btf_type *t = btf__type_by_id(v->btf, v->ids[h]);
			if (!strcmp(btf__name_by_offset(v->btf, t->name_off), type)) {
				*id = v->ids[h];
				return 0;
			}
		}
		return err_set(ENOENT, "BTF: no struct or union '%s'", type);
	}
	const struct btf *b = v->btf;
	int r = btf__find_by_name_kind(b, type, BTF_KIND_STRUCT);
	if (r < 0)
		r = btf__find_by_name_kind(b, type, BTF_KIND_UNION);
	if (r < 0)
		return err_set(ENOENT, "BTF: no struct or union '%s'", type);
	*id = (uint32_t)r;
	return 0;
}

/* Member `name` of composite type `id`, searching anonymous members too.
 * Adds its bit offset to *bits; returns its type id, 0 if absent. */
static uint32_t find_member(const struct btf *b, uint32_t id, const char *name, size_t name_len, uint64_t *bits,
			    uint64_t *bitfield, int depth)
{
	const struct btf_type *t = strip(b, &id);
	if (!t || !btf_is_composite(t) || depth > BTF_MAX_DEPTH)
		return 0;
	const struct btf_member *m = btf_members(t);
	for (unsigned i = 0; i < btf_vlen(t); i++, m++) {
		const char *mn = btf__name_by_offset(b, m->name_off);
		uint64_t off = btf_member_bit_offset(t, i);
		if (mn && *mn) {
			if (strlen(mn) == name_len && !memcmp(mn, name, name_len)) {
				*bits += off;
				*bitfield = btf_member_bitfield_size(t, i);
				return m->type;
			}
			continue;
		}
		uint64_t sub = 0;
		uint32_t r = find_member(b, m->type, name, name_len, &sub, bitfield, depth + 1);
		if (r) {
			*bits += off + sub;
			return r;
		}
	}
	return 0;
}

/* Resolve a path like "mem[0].base" or "cred.uid". */
static int resolve(const struct vmi_btf *v, const char *type, const char *path, uint64_t *bit_off,
		   uint64_t *bit_size, uint32_t *out_id)
{
	const struct btf *b = v->btf;
	uint32_t id = 0;
	int rc = find_type(v, type, &id);
	if (rc < 0)
		return rc;
	uint64_t bits = 0, bitfield = 0;
	const char *p = path;
	while (*p) {
		size_t n = strcspn(p, ".[");
		if (!n)
			return err_set(EINVAL, "BTF: bad member path '%s'", path);
		id = find_member(b, id, p, n, &bits, &bitfield, 0);
		if (!id)
			return err_set(ENOENT, "BTF: struct %s has no member '%.*s' (path '%s')", type, (int)n, p,
				       path);
		p += n;
		while (*p == '[') {
			char *end;
			unsigned long idx = strtoul(p + 1, &end, 10);
			if (*end != ']')
				return err_set(EINVAL, "BTF: bad index in member path '%s'", path);
			const struct btf_type *t = strip(b, &id);
			if (!t || !btf_is_array(t))
				return err_set(EINVAL, "BTF: %s.%s: indexing a member that is not an array", type, path);
			const struct btf_array *a = btf_array(t);
			long long esz = btf__resolve_size(b, a->type);
			if (esz < 0 || (a->nelems && idx >= a->nelems))
				return err_set(EINVAL, "BTF: %s.%s: index %lu out of range", type, path, idx);
			bits += (uint64_t)idx * (uint64_t)esz * 8;
			id = a->type;
			bitfield = 0;
			p = end + 1;
		}
		if (*p == '.')
			p++;
	}
	if (bitfield) {
		*bit_size = bitfield;
	} else {
		long long sz = btf__resolve_size(b, id);
		if (sz < 0)
			return err_set(EINVAL, "BTF: %s.%s has no size", type, path);
		*bit_size = (uint64_t)sz * 8;
	}
	*bit_off = bits;
	if (out_id)
		*out_id = id;
	return 0;
}

int vmi_btf_member(const struct vmi_btf *b, const char *type, const char *path, uint64_t *bit_off,
		   uint64_t *bit_size)
{
	return resolve(b, type, path, bit_off, bit_size, NULL);
}

int vmi_btf_offset(const struct vmi_btf *b, const char *type, const char *path, uint64_t *off)
{
	uint64_t bits, size;
	int rc = resolve(b, type, path, &bits, &size, NULL);
	if (rc < 0)
		return rc;
	if (bits & 7)
		return err_set(EINVAL, "BTF: %s.%s is a bitfield at bit %llu", type, path, (unsigned long long)bits);
	*off = bits / 8;
	return 0;
}

int vmi_btf_sizeof(const struct vmi_btf *b, const char *type, uint64_t *size)
{
	uint32_t id = 0;
	int rc = find_type(b, type, &id);
	if (rc < 0)
		return rc;
	long long sz = btf__resolve_size(b->btf, id);
	if (sz < 0)
		return err_set(EINVAL, "BTF: struct %s has no size", type);
	*size = (uint64_t)sz;
	return 0;
}

int vmi_btf_array_len(const struct vmi_btf *b, const char *type, const char *path, uint64_t *n)
{
	uint64_t bits, size;
	uint32_t id = 0;
	int rc = resolve(b, type, path, &bits, &size, &id);
	if (rc < 0)
		return rc;
	const struct btf_type *t = strip(b->btf, &id);
	if (!t || !btf_is_array(t))
		return err_set(EINVAL, "BTF: %s.%s is not an array", type, path);
	*n = btf_array(t)->nelems;
	return 0;
}

#else /* !HAVE_LIBBPF */

static int no_btf(void)
{
	return err_set(ENOTSUP, "built without libbpf: no BTF type information (apt-get install libbpf-dev)");
}
int vmi_btf_new(struct vmi_btf **out, const void *data, size_t len)
{
	*out = NULL;
	return no_btf();
}
void vmi_btf_free(struct vmi_btf *b) {}
unsigned vmi_btf_ntypes(const struct vmi_btf *b) { return 0; }
int vmi_btf_member(const struct vmi_btf *b, const char *type, const char *path, uint64_t *bit_off,
		   uint64_t *bit_size) { return no_btf(); }
int vmi_btf_offset(const struct vmi_btf *b, const char *type, const char *path, uint64_t *off) { return no_btf(); }
int vmi_btf_sizeof(const struct vmi_btf *b, const char *type, uint64_t *size) { return no_btf(); }
int vmi_btf_array_len(const struct vmi_btf *b, const char *type, const char *path, uint64_t *n) { return no_btf(); }

#endif
