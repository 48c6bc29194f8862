// SPDX-License-Identifier: MIT
/*
 * Function names for fiber_dump() and the stall report, which may run in
 * a signal handler: no loader lock (dladdr() takes one) and no malloc
 * there. So the names are read beforehand, when the scheduler starts:
 * each loaded object's symbol table, from its file (.symtab, which has
 * the program's static functions too, else .dynsym), sorted by address.
 * A lookup is then a binary search.
 *
 * The table stays until a later start finds objects loaded or unloaded
 * (the loader's dlpi_adds/dlpi_subs counts); the old one is freed once no
 * dump reads it. Objects loaded after the start are shown by address.
 */
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct symbol {
	uintptr_t addr;
	uintptr_t size;
	uint32_t name;			/* offset in the object's string table */
};

struct symbol_object {
	uintptr_t lo, hi;		/* its loaded segments' extent */
	char *path;
	struct symbol *syms;		/* by address */
	size_t nr_syms;
	char *strtab;
	size_t strtab_size;
};

struct symbol_table {
	unsigned long long adds, subs;	/* the loader's counts it was made at */
	struct symbol_object *objs;
	size_t nr_objs, cap;
};

static struct symbol_table *symbols;	/* atomic */

static bool read_at(int fd, void *buf, size_t len, off_t off)
{
	ssize_t n;

	while (len) {
		n = pread(fd, buf, len, off);
		if (n <= 0)
			return false;
		buf = (char *)buf + n;
		len -= n;
		off += n;
	}
	return true;
}

static void *read_alloc(int fd, size_t len, off_t off)
{
	void *buf = malloc(len ? len : 1);

	if (buf && !read_at(fd, buf, len, off)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int by_addr(const void *a, const void *b)
{
	const struct symbol *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* Reads the functions of section sec (a symbol table) of the ELF file fd. */
static void read_functions(struct symbol_object *o, int fd, const ElfW(Shdr) *shdrs,
			   unsigned int nr_shdrs, unsigned int sec, uintptr_t bias)
{
	const ElfW(Shdr) *sh = &shdrs[sec];
	size_t i, nr = sh->sh_size / sizeof(ElfW(Sym));
	ElfW(Sym) *syms;

	if (sh->sh_entsize != sizeof(ElfW(Sym)) || sh->sh_link >= nr_shdrs)
		return;
	syms = read_alloc(fd, sh->sh_size, sh->sh_offset);
	o->strtab_size = shdrs[sh->sh_link].sh_size;
	o->strtab = read_alloc(fd, o->strtab_size, shdrs[sh->sh_link].sh_offset);
	o->syms = malloc(nr * sizeof(*o->syms) + 1);
	if (!syms || !o->strtab || !o->syms) {
		free(syms);
		return;
	}
	for (i = 0; i < nr; i++) {
		unsigned int type = ELF64_ST_TYPE(syms[i].st_info);

		if ((type != STT_FUNC && type != STT_GNU_IFUNC) || syms[i].st_shndx == SHN_UNDEF ||
		    !syms[i].st_value || syms[i].st_name >= o->strtab_size)
			continue;
		o->syms[o->nr_syms].addr = bias + syms[i].st_value;
		o->syms[o->nr_syms].size = syms[i].st_size;
		o->syms[o->nr_syms].name = syms[i].st_name;
		o->nr_syms++;
	}
	free(syms);
	qsort(o->syms, o->nr_syms, sizeof(*o->syms), by_addr);
}

static void read_object_file(struct symbol_object *o, uintptr_t bias)
{
	ElfW(Shdr) *shdrs = NULL;
	ElfW(Ehdr) eh;
	unsigned int i, sec = 0;
	int fd = open(o->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (!read_at(fd, &eh, sizeof(eh), 0) || memcmp(eh.e_ident, ELFMAG, SELFMAG) ||
	    eh.e_shentsize != sizeof(ElfW(Shdr)) || !eh.e_shnum)
		goto out;
	shdrs = read_alloc(fd, eh.e_shnum * sizeof(ElfW(Shdr)), eh.e_shoff);
	if (!shdrs)
		goto out;
	for (i = 0; i < eh.e_shnum; i++) {
		if (shdrs[i].sh_type == SHT_SYMTAB)
			sec = i;
		else if (shdrs[i].sh_type == SHT_DYNSYM && !sec)
			sec = i;
	}
	if (sec)
		read_functions(o, fd, shdrs, eh.e_shnum, sec, bias);
out:
	free(shdrs);
	close(fd);
}

static int count_objects(struct dl_phdr_info *info, size_t size, void *data)
{
	struct symbol_table *t = data;

	t->adds = info->dlpi_adds;
	t->subs = info->dlpi_subs;
	t->nr_objs++;
	return 0;
}

static int add_object(struct dl_phdr_info *info, size_t size, void *data)
{
	struct symbol_table *t = data;
	struct symbol_object *o;
	char exe[4096];
	ssize_t len;
	int i;

	if (t->nr_objs == t->cap)	/* loaded since they were counted */
		return 1;
	o = &t->objs[t->nr_objs++];
	o->lo = UINTPTR_MAX;
	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type != PT_LOAD)
			continue;
		if (info->dlpi_addr + ph->p_vaddr < o->lo)
			o->lo = info->dlpi_addr + ph->p_vaddr;
		if (info->dlpi_addr + ph->p_vaddr + ph->p_memsz > o->hi)
			o->hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
	}
	/* The first object is the program, which the loader leaves unnamed. */
	if (!info->dlpi_name || !info->dlpi_name[0]) {
		len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		exe[len > 0 ? len : 0] = 0;
		o->path = strdup(exe);
	} else {
		o->path = strdup(info->dlpi_name);
	}
	if (o->path && o->path[0] == '/')
		read_object_file(o, info->dlpi_addr);
	return 0;
}

static void free_table(struct symbol_table *t)
{
	size_t i;

	for (i = 0; t && i < t->nr_objs; i++) {
		free(t->objs[i].path);
		free(t->objs[i].syms);
		free(t->objs[i].strtab);
	}
	if (t)
		free(t->objs);
	free(t);
}

int fiber_symbols_load(void)
{
	struct symbol_table *t, *old = __atomic_load_n(&symbols, __ATOMIC_ACQUIRE);
	struct symbol_table now = { 0 };

	dl_iterate_phdr(count_objects, &now);
	if (old && old->adds == now.adds && old->subs == now.subs)
		return 0;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->objs = calloc(now.nr_objs, sizeof(*t->objs));
	if (!t->objs) {
		free(t);
		return -ENOMEM;
	}
	/* Objects loaded meanwhile are left out; the next start reads them. */
	t->cap = now.nr_objs;
	dl_iterate_phdr(add_object, t);
	t->adds = now.adds;
	t->subs = now.subs;
	__atomic_store_n(&symbols, t, __ATOMIC_RELEASE);
	fiber_registry_quiesce();
	free_table(old);
	return 0;
}

bool fiber_symbolize(uintptr_t pc, const char **fn, uintptr_t *off, const char **obj)
{
	const struct symbol_table *t = __atomic_load_n(&symbols, __ATOMIC_ACQUIRE);
	const struct symbol_object *o;
	size_t i, lo, hi;

	*fn = NULL;
	*obj = NULL;
	for (i = 0; t && i < t->nr_objs; i++)
		if (pc >= t->objs[i].lo && pc < t->objs[i].hi)
			break;
	if (!t || i == t->nr_objs)
		return false;
	o = &t->objs[i];
	*obj = o->path;
	*off = pc - o->lo;
	/* The last symbol at or below pc. */
	lo = 0;
	hi = o->nr_syms;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (o->syms[mid].addr <= pc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo)
		return true;
	i = lo - 1;
	/* Past a sized function's end: not in any function we know. */
	if (o->syms[i].size && pc >= o->syms[i].addr + o->syms[i].size)
		return true;
	*fn = o->strtab + o->syms[i].name;
	*off = pc - o->syms[i].addr;
	return true;
}
