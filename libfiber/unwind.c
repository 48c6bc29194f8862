// SPDX-License-Identifier: MIT
/*
 * A DWARF call frame information reader for walking fiber stacks.
 *
 * The upcall must know whether any frame of the interrupted fiber is in
 * code that may not be interrupted (libc, ld.so, libfiber): libc calls
 * back into the program while holding locks (pthread_once, qsort,
 * dl_iterate_phdr, fopencookie, an interposed malloc), and only a walk of
 * the whole stack sees that. The walk runs inside the upcall, on the
 * preempted fiber's stack, possibly while that fiber holds any lock of
 * the process, so it:
 *  - takes no lock and allocates nothing: the objects it can look up are
 *    indexed when the scheduler starts (their .eh_frame_hdr search table),
 *    never with dl_iterate_phdr() per walk;
 *  - reads the stack only inside the fiber's own stack mapping, so a
 *    corrupt or foreign stack pointer ends the walk instead of faulting;
 *  - is bounded: FIBER_UNWIND_MAX_FRAMES, and the stack pointer may never
 *    move away from the stack's base.
 * Every object loaded when the scheduler starts is indexed, so that
 * backtraces and dumps go on through libc and other libraries; the
 * upcall's check stops at the first frame outside preemptible code
 * without reading that frame's CFI.
 *
 * libunwind was the alternative: its local unwinder finds CFI through
 * dl_iterate_phdr() (the loader's lock) and caches with malloc, both of
 * which the interrupted fiber may hold.
 *
 * What is understood: the CIE/FDE forms GCC, Clang and binutils emit
 * (augmentations z, R, P, L, S, B), every DW_CFA rule, and the DWARF
 * expression operators used in CFI (PLT entries, stack realignment).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unwind.h"

#define DW_EH_PE_omit		0xff
#define DW_EH_PE_absptr		0x00
#define DW_EH_PE_uleb128	0x01
#define DW_EH_PE_udata2		0x02
#define DW_EH_PE_udata4		0x03
#define DW_EH_PE_udata8		0x04
#define DW_EH_PE_sleb128	0x09
#define DW_EH_PE_sdata2		0x0a
#define DW_EH_PE_sdata4		0x0b
#define DW_EH_PE_sdata8		0x0c
#define DW_EH_PE_pcrel		0x10
#define DW_EH_PE_datarel	0x30
#define DW_EH_PE_indirect	0x80

#define MAX_OBJECTS		64
#define MAX_STATE_DEPTH		8
#define EXPR_STACK		16

/* An indexed object: its executable segments and .eh_frame_hdr table. */
struct unwind_object {
	uintptr_t text_start, text_end;	/* the span of its PF_X segments */
	const int32_t *table;		/* pairs (initial_loc, fde), hdr-relative */
	uint64_t count;
	uintptr_t hdr;
};

static struct unwind_object objects[MAX_OBJECTS];
static unsigned int nr_objects;

enum rule_kind {
	RULE_SAME = 0,		/* the caller's value is this frame's */
	RULE_UNDEFINED,
	RULE_OFFSET,		/* saved at CFA + n */
	RULE_VAL_OFFSET,	/* the value is CFA + n */
	RULE_REGISTER,		/* in register n */
	RULE_EXPRESSION,	/* saved at the address the expression gives */
	RULE_VAL_EXPRESSION,	/* the value the expression gives */
};

struct rule {
	enum rule_kind kind;
	union {
		int64_t n;
		const uint8_t *expr;	/* length-prefixed (uleb128) block */
	};
};

struct row {
	struct rule reg[UNWIND_NR_REGS];
	/* The CFA: reg + offset, or an expression when cfa_expr is set. */
	unsigned int cfa_reg;
	int64_t cfa_offset;
	const uint8_t *cfa_expr;
	bool ra_signed;		/* AArch64 pointer authentication state */
};

struct cie {
	uint64_t code_align;
	int64_t data_align;
	unsigned int ra_column;
	uint8_t fde_enc;
	bool signal_frame;
	const uint8_t *insns, *end;
};

/* A frame's row, its CFI run to the PC looked up: all a step needs. */
struct frame_rule {
	uintptr_t pc;		/* that PC (a return address - 1); 0: none */
	struct row row;
	uint64_t ruled;		/* bit n: register n's rule is not RULE_SAME */
	unsigned int ra_column;
	bool signal_frame;
};

/*
 * Rows by PC, direct-mapped: a walk from the same places (a loop the timer
 * keeps interrupting, the same callers) then skips the FDE search and the
 * CFI program. The index does not change while fibers run, so entries stay
 * valid until the scheduler stops.
 */
#define CACHE_ENTRIES		64

struct fiber_unwind_cache {
	struct frame_rule entry[CACHE_ENTRIES];
};

/* What a walk reads: the stack it may touch, and its registers. */
struct walk {
	uintptr_t lo, hi;
	const struct fiber_unwind_regs *regs;
};

void fiber_unwind_reset(void)
{
	nr_objects = 0;
}

/* LEB128 at *p: unsigned, or sign-extended when is_signed. */
static uint64_t read_leb(const uint8_t **p, const uint8_t *end, bool is_signed)
{
	uint64_t v = 0;
	unsigned int shift = 0;
	uint8_t b;

	do {
		if (*p >= end)
			return 0;
		b = *(*p)++;
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while (b & 0x80);
	if (is_signed && shift < 64 && (b & 0x40))
		v |= ~(uint64_t)0 << shift;
	return v;
}

static uint64_t read_uleb(const uint8_t **p, const uint8_t *end)
{
	return read_leb(p, end, false);
}

static int64_t read_sleb(const uint8_t **p, const uint8_t *end)
{
	return (int64_t)read_leb(p, end, true);
}

#define READ_FIXED(type, p) ({ type __v; memcpy(&__v, *(p), sizeof(__v)); *(p) += sizeof(__v); __v; })

/*
 * Reads a pointer encoded as enc at *p; data is the base for datarel.
 * False for an encoding this reader does not know.
 */
static bool read_encoded(const uint8_t **p, const uint8_t *end, uint8_t enc, uintptr_t data,
			 uint64_t *out)
{
	uintptr_t field = (uintptr_t)*p;
	uint64_t v;

	if (enc == DW_EH_PE_omit) {
		*out = 0;
		return true;
	}
	switch (enc & 0x0f) {
	case DW_EH_PE_absptr:
	case DW_EH_PE_udata8:
	case DW_EH_PE_sdata8:
		if (end - *p < 8)
			return false;
		v = READ_FIXED(uint64_t, p);
		break;
	case DW_EH_PE_uleb128:
		v = read_uleb(p, end);
		break;
	case DW_EH_PE_sleb128:
		v = (uint64_t)read_sleb(p, end);
		break;
	case DW_EH_PE_udata2:
		if (end - *p < 2)
			return false;
		v = READ_FIXED(uint16_t, p);
		break;
	case DW_EH_PE_sdata2:
		if (end - *p < 2)
			return false;
		v = (uint64_t)(int64_t)READ_FIXED(int16_t, p);
		break;
	case DW_EH_PE_udata4:
		if (end - *p < 4)
			return false;
		v = READ_FIXED(uint32_t, p);
		break;
	case DW_EH_PE_sdata4:
		if (end - *p < 4)
			return false;
		v = (uint64_t)(int64_t)READ_FIXED(int32_t, p);
		break;
	default:
		return false;
	}
	switch (enc & 0x70) {
	case 0:
		break;
	case DW_EH_PE_pcrel:
		v += field;
		break;
	case DW_EH_PE_datarel:
		v += data;
		break;
	default:
		return false;
	}
	if (enc & DW_EH_PE_indirect)
		v = *(const uint64_t *)(uintptr_t)v;
	*out = v;
	return true;
}

int fiber_unwind_add_object(const struct dl_phdr_info *info)
{
	const uint8_t *hdr = NULL, *p;
	struct unwind_object *o;
	uint64_t eh_frame, count;
	int i;

	if (nr_objects == MAX_OBJECTS)
		return -ENOSPC;
	o = &objects[nr_objects];
	o->text_start = UINTPTR_MAX;
	o->text_end = 0;
	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_GNU_EH_FRAME)
			hdr = (const uint8_t *)start;
		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
			if (start < o->text_start)
				o->text_start = start;
			if (start + ph->p_memsz > o->text_end)
				o->text_end = start + ph->p_memsz;
		}
	}
	for (i = 0; i < (int)nr_objects; i++)
		if (objects[i].hdr == (uintptr_t)hdr && hdr)
			return 0;	/* indexed already */
	/* Version 1, and the search table GNU ld writes: datarel sdata4 pairs. */
	if (!hdr || hdr[0] != 1 || hdr[3] != (DW_EH_PE_datarel | DW_EH_PE_sdata4))
		return -ENOEXEC;
	p = hdr + 4;
	if (!read_encoded(&p, p + 16, hdr[1], (uintptr_t)hdr, &eh_frame) ||
	    !read_encoded(&p, p + 16, hdr[2], (uintptr_t)hdr, &count) || !count)
		return -ENOEXEC;
	o->table = (const int32_t *)p;
	o->count = count;
	o->hdr = (uintptr_t)hdr;
	nr_objects++;
	return 0;
}

/* The FDE covering pc, or NULL. */
static const uint8_t *find_fde(uintptr_t pc)
{
	const struct unwind_object *o = NULL;
	uint64_t lo, hi, mid;
	unsigned int i;

	for (i = 0; i < nr_objects; i++)
		if (pc >= objects[i].text_start && pc < objects[i].text_end)
			o = &objects[i];
	if (!o || pc < o->hdr + o->table[0])
		return NULL;
	/* The last entry whose initial location is <= pc. */
	lo = 0;
	hi = o->count;
	while (hi - lo > 1) {
		mid = lo + (hi - lo) / 2;
		if (o->hdr + o->table[2 * mid] <= pc)
			lo = mid;
		else
			hi = mid;
	}
	return (const uint8_t *)(o->hdr + o->table[2 * lo + 1]);
}

/* Parses the CIE at p (its length field). */
static bool parse_cie(const uint8_t *p, struct cie *cie)
{
	uint32_t len = READ_FIXED(uint32_t, &p);
	const uint8_t *end = p + len, *aug, *aug_end = NULL;
	uint64_t ignored;
	uint8_t version;

	if (len == 0xffffffff || READ_FIXED(uint32_t, &p) != 0)
		return false;		/* 64-bit DWARF, or not a CIE */
	version = *p++;
	if (version != 1 && version != 3)
		return false;
	aug = p;
	while (p < end && *p)
		p++;
	p++;
	if (aug[0] && aug[0] != 'z')
		return false;		/* no way to skip unknown augmentation data */
	cie->code_align = read_uleb(&p, end);
	cie->data_align = read_sleb(&p, end);
	cie->ra_column = version == 1 ? *p++ : (unsigned int)read_uleb(&p, end);
	cie->fde_enc = DW_EH_PE_absptr;
	cie->signal_frame = false;
	if (aug[0] == 'z') {
		uint64_t aug_len = read_uleb(&p, end);

		aug_end = p + aug_len;
		for (aug++; *aug && p <= aug_end; aug++) {
			switch (*aug) {
			case 'R':
				cie->fde_enc = *p++;
				break;
			case 'P': {
				/* The personality routine: skipped, not dereferenced. */
				uint8_t enc = *p++ & ~DW_EH_PE_indirect;

				if (!read_encoded(&p, aug_end, enc, 0, &ignored))
					return false;
				break;
			}
			case 'L':
				p++;
				break;
			case 'S':
				cie->signal_frame = true;
				break;
			case 'B':		/* AArch64: return addresses signed with key B */
				break;
			default:
				return false;
			}
		}
		p = aug_end;
	}
	if (p > end || cie->ra_column >= UNWIND_NR_REGS)
		return false;
	cie->insns = p;
	cie->end = end;
	return true;
}

static bool stack_read(const struct walk *w, uint64_t addr, uint64_t *v)
{
	if (addr < w->lo || addr > w->hi - 8 || addr % 8)
		return false;
	*v = *(const uint64_t *)(uintptr_t)addr;
	return true;
}

/*
 * Evaluates the length-prefixed DWARF expression at expr, with initial
 * pushed first (the CFA, for register rules). Memory reads stay in the
 * stack. False for an operator the walker does not evaluate.
 */
static bool eval_expr(const struct walk *w, const uint8_t *expr, bool push_initial,
		      uint64_t initial, uint64_t *out)
{
	uint64_t st[EXPR_STACK], a;
	const uint8_t *p = expr, *end;
	int sp = 0;
	uint8_t op;

	end = p + read_uleb(&p, p + 10);
	if (push_initial)
		st[sp++] = initial;
	while (p < end) {
		op = *p++;
		if (sp >= EXPR_STACK - 1)
			return false;
		if (op >= 0x30 && op <= 0x4f) {			/* DW_OP_lit0..31 */
			st[sp++] = op - 0x30;
			continue;
		}
		if (op >= 0x70 && op <= 0x8f) {			/* DW_OP_breg0..31 */
			unsigned int reg = op - 0x70;

			if (reg >= UNWIND_NR_REGS)
				return false;
			st[sp++] = w->regs->reg[reg] + read_sleb(&p, end);
			continue;
		}
		switch (op) {
		case 0x08: st[sp++] = *p++; continue;			/* const1u */
		case 0x09: st[sp++] = (uint64_t)(int8_t)*p++; continue;	/* const1s */
		case 0x0a: st[sp++] = READ_FIXED(uint16_t, &p); continue;
		case 0x0b: st[sp++] = (uint64_t)READ_FIXED(int16_t, &p); continue;
		case 0x0c: st[sp++] = READ_FIXED(uint32_t, &p); continue;
		case 0x0d: st[sp++] = (uint64_t)READ_FIXED(int32_t, &p); continue;
		case 0x0e:
		case 0x0f: st[sp++] = READ_FIXED(uint64_t, &p); continue;
		case 0x10: st[sp++] = read_uleb(&p, end); continue;	/* constu */
		case 0x11: st[sp++] = (uint64_t)read_sleb(&p, end); continue;
		case 0x12:						/* dup */
			if (sp < 1)
				return false;
			st[sp] = st[sp - 1];
			sp++;
			continue;
		case 0x23:						/* plus_uconst */
			if (sp < 1)
				return false;
			st[sp - 1] += read_uleb(&p, end);
			continue;
		case 0x92: {						/* bregx */
			uint64_t reg = read_uleb(&p, end);

			if (reg >= UNWIND_NR_REGS)
				return false;
			st[sp++] = w->regs->reg[reg] + read_sleb(&p, end);
			continue;
		}
		case 0x96:						/* nop */
			continue;
		case 0x06:						/* deref */
			if (sp < 1 || !stack_read(w, st[sp - 1], &st[sp - 1]))
				return false;
			continue;
		}
		/* Binary operators. */
		if (sp < 2)
			return false;
		a = st[--sp];
		switch (op) {
		case 0x1a: st[sp - 1] &= a; break;			/* and */
		case 0x1c: st[sp - 1] -= a; break;			/* minus */
		case 0x1e: st[sp - 1] *= a; break;			/* mul */
		case 0x21: st[sp - 1] |= a; break;			/* or */
		case 0x22: st[sp - 1] += a; break;			/* plus */
		case 0x24: st[sp - 1] = a < 64 ? st[sp - 1] << a : 0; break;	/* shl */
		case 0x25: st[sp - 1] = a < 64 ? st[sp - 1] >> a : 0; break;	/* shr */
		case 0x27: st[sp - 1] ^= a; break;			/* xor */
		case 0x29: st[sp - 1] = st[sp - 1] == a; break;		/* eq */
		case 0x2a: st[sp - 1] = (int64_t)st[sp - 1] >= (int64_t)a; break;
		case 0x2b: st[sp - 1] = (int64_t)st[sp - 1] > (int64_t)a; break;
		case 0x2c: st[sp - 1] = (int64_t)st[sp - 1] <= (int64_t)a; break;
		case 0x2d: st[sp - 1] = (int64_t)st[sp - 1] < (int64_t)a; break;
		case 0x2e: st[sp - 1] = st[sp - 1] != a; break;		/* ne */
		default:
			return false;
		}
	}
	if (sp < 1)
		return false;
	*out = st[sp - 1];
	return true;
}

static void set_rule(struct row *row, uint64_t reg, enum rule_kind kind, int64_t n,
		     const uint8_t *expr)
{
	/* Columns past the GPRs (vector registers) do not matter for a walk. */
	if (reg >= UNWIND_NR_REGS)
		return;
	row->reg[reg].kind = kind;
	if (expr)
		row->reg[reg].expr = expr;
	else
		row->reg[reg].n = n;
}

static void skip_block(const uint8_t **p, const uint8_t *end)
{
	uint64_t len = read_uleb(p, end);

	*p = len <= (uint64_t)(end - *p) ? *p + len : end;
}

/*
 * Runs CFA instructions [p, end) from location loc until the row for pc.
 * initial is the row after the CIE's instructions (DW_CFA_restore).
 */
static bool run_cfa(const struct cie *cie, const uint8_t *p, const uint8_t *end, uint64_t loc,
		    uint64_t pc, struct row *row, const struct row *initial)
{
	struct row saved[MAX_STATE_DEPTH];
	unsigned int depth = 0;
	uint64_t reg, delta;
	const uint8_t *expr;
	uint8_t op;

	while (p < end) {
		op = *p++;
		delta = 0;
		switch (op & 0xc0) {
		case 0x40:					/* advance_loc */
			delta = op & 0x3f;
			break;
		case 0x80:					/* offset */
			set_rule(row, op & 0x3f, RULE_OFFSET,
				 (int64_t)read_uleb(&p, end) * cie->data_align, NULL);
			continue;
		case 0xc0:					/* restore */
			if (initial && (op & 0x3f) < UNWIND_NR_REGS)
				row->reg[op & 0x3f] = initial->reg[op & 0x3f];
			continue;
		}
		if (!delta) {
			switch (op) {
			case 0x00:				/* nop */
				continue;
			case 0x01:				/* set_loc */
				if (!read_encoded(&p, end, cie->fde_enc, 0, &delta))
					return false;
				if (delta > pc)
					return true;
				loc = delta;
				continue;
			case 0x02:
				delta = *p++;
				break;
			case 0x03:
				delta = READ_FIXED(uint16_t, &p);
				break;
			case 0x04:
				delta = READ_FIXED(uint32_t, &p);
				break;
			case 0x05:				/* offset_extended */
				reg = read_uleb(&p, end);
				set_rule(row, reg, RULE_OFFSET,
					 (int64_t)read_uleb(&p, end) * cie->data_align, NULL);
				continue;
			case 0x06:				/* restore_extended */
				reg = read_uleb(&p, end);
				if (initial && reg < UNWIND_NR_REGS)
					row->reg[reg] = initial->reg[reg];
				continue;
			case 0x07:				/* undefined */
				set_rule(row, read_uleb(&p, end), RULE_UNDEFINED, 0, NULL);
				continue;
			case 0x08:				/* same_value */
				set_rule(row, read_uleb(&p, end), RULE_SAME, 0, NULL);
				continue;
			case 0x09:				/* register */
				reg = read_uleb(&p, end);
				set_rule(row, reg, RULE_REGISTER, (int64_t)read_uleb(&p, end), NULL);
				continue;
			case 0x0a:				/* remember_state */
				if (depth == MAX_STATE_DEPTH)
					return false;
				saved[depth++] = *row;
				continue;
			case 0x0b:				/* restore_state */
				if (!depth)
					return false;
				/* The CFA rule is part of the state too. */
				*row = saved[--depth];
				continue;
			case 0x0c:				/* def_cfa */
				row->cfa_reg = (unsigned int)read_uleb(&p, end);
				row->cfa_offset = (int64_t)read_uleb(&p, end);
				row->cfa_expr = NULL;
				continue;
			case 0x0d:				/* def_cfa_register */
				row->cfa_reg = (unsigned int)read_uleb(&p, end);
				row->cfa_expr = NULL;
				continue;
			case 0x0e:				/* def_cfa_offset */
				row->cfa_offset = (int64_t)read_uleb(&p, end);
				continue;
			case 0x0f:				/* def_cfa_expression */
				row->cfa_expr = p;
				skip_block(&p, end);
				continue;
			case 0x10:				/* expression */
			case 0x16:				/* val_expression */
				reg = read_uleb(&p, end);
				expr = p;
				skip_block(&p, end);
				set_rule(row, reg, op == 0x10 ? RULE_EXPRESSION : RULE_VAL_EXPRESSION,
					 0, expr);
				continue;
			case 0x11:				/* offset_extended_sf */
				reg = read_uleb(&p, end);
				set_rule(row, reg, RULE_OFFSET, read_sleb(&p, end) * cie->data_align,
					 NULL);
				continue;
			case 0x12:				/* def_cfa_sf */
				row->cfa_reg = (unsigned int)read_uleb(&p, end);
				row->cfa_offset = read_sleb(&p, end) * cie->data_align;
				row->cfa_expr = NULL;
				continue;
			case 0x13:				/* def_cfa_offset_sf */
				row->cfa_offset = read_sleb(&p, end) * cie->data_align;
				continue;
			case 0x14:				/* val_offset */
				reg = read_uleb(&p, end);
				set_rule(row, reg, RULE_VAL_OFFSET,
					 (int64_t)read_uleb(&p, end) * cie->data_align, NULL);
				continue;
			case 0x15:				/* val_offset_sf */
				reg = read_uleb(&p, end);
				set_rule(row, reg, RULE_VAL_OFFSET, read_sleb(&p, end) * cie->data_align,
					 NULL);
				continue;
			case 0x2d:		/* AArch64 negate_ra_state (SPARC window_save) */
#if defined(__aarch64__)
				row->ra_signed = !row->ra_signed;
				continue;
#else
				return false;
#endif
			case 0x2e:				/* GNU_args_size */
				read_uleb(&p, end);
				continue;
			case 0x2f:			/* GNU_negative_offset_extended */
				reg = read_uleb(&p, end);
				set_rule(row, reg, RULE_OFFSET,
					 -(int64_t)read_uleb(&p, end) * cie->data_align, NULL);
				continue;
			default:
				return false;
			}
		}
		loc += delta * cie->code_align;
		if (loc > pc)
			return true;
	}
	return true;
}

/* The caller's value of register reg under rule, or false if unreadable. */
static bool recover(const struct walk *w, const struct rule *rule, unsigned int reg,
		    uint64_t cfa, uint64_t *v)
{
	uint64_t addr;

	switch (rule->kind) {
	case RULE_SAME:
		*v = w->regs->reg[reg];
		return true;
	case RULE_OFFSET:
		return stack_read(w, cfa + rule->n, v);
	case RULE_VAL_OFFSET:
		*v = cfa + rule->n;
		return true;
	case RULE_REGISTER:
		if (rule->n < 0 || rule->n >= UNWIND_NR_REGS)
			return false;
		*v = w->regs->reg[rule->n];
		return true;
	case RULE_EXPRESSION:
		return eval_expr(w, rule->expr, true, cfa, &addr) && stack_read(w, addr, v);
	case RULE_VAL_EXPRESSION:
		return eval_expr(w, rule->expr, true, cfa, v);
	case RULE_UNDEFINED:
		break;
	}
	return false;
}

/* Runs the CFI of the frame at lookup into fr. Returns 0 or -errno. */
static int find_rule(uintptr_t lookup, struct frame_rule *fr)
{
	const uint8_t *fde = find_fde(lookup), *p, *end, *cie_field;
	uint64_t start, range;
	struct row initial;
	struct cie cie;
	unsigned int i;
	uint32_t len;

	if (!fde)
		return -ENOENT;
	p = fde;
	len = READ_FIXED(uint32_t, &p);
	if (len == 0xffffffff || len < 8)
		return -EINVAL;
	end = p + len;
	cie_field = p;
	if (!parse_cie(cie_field - READ_FIXED(uint32_t, &p), &cie))
		return -EINVAL;
	if (!read_encoded(&p, end, cie.fde_enc, 0, &start) ||
	    !read_encoded(&p, end, cie.fde_enc & 0x0f, 0, &range))
		return -EINVAL;
	if (lookup < start || lookup - start >= range)
		return -ENOENT;		/* in a gap between FDEs */
	skip_block(&p, end);		/* augmentation data ('z' CIEs: all of ours) */

	memset(&fr->row, 0, sizeof(fr->row));
	if (!run_cfa(&cie, cie.insns, cie.end, 0, UINT64_MAX, &fr->row, NULL))
		return -EINVAL;
	initial = fr->row;
	if (!run_cfa(&cie, p, end, start, lookup, &fr->row, &initial))
		return -EINVAL;
	if (!fr->row.cfa_expr && fr->row.cfa_reg >= UNWIND_NR_REGS)
		return -EINVAL;
	fr->ruled = 0;
	for (i = 0; i < UNWIND_NR_REGS; i++)
		if (fr->row.reg[i].kind != RULE_SAME)
			fr->ruled |= 1ULL << i;
	fr->ra_column = cie.ra_column;
	fr->signal_frame = cie.signal_frame;
	fr->pc = lookup;
	return 0;
}

/* Steps r to its caller by the frame's row. */
static int apply_rule(const struct frame_rule *fr, struct fiber_unwind_regs *r, uintptr_t lo,
		      uintptr_t hi)
{
	struct walk w = { .lo = lo, .hi = hi, .regs = r };
	const struct row *row = &fr->row;
	uint64_t cfa, next[UNWIND_NR_REGS], ruled;
	unsigned int i;

	if (row->cfa_expr) {
		if (!eval_expr(&w, row->cfa_expr, false, 0, &cfa))
			return -EINVAL;
	} else {
		cfa = r->reg[row->cfa_reg] + row->cfa_offset;
	}
	if (row->reg[fr->ra_column].kind == RULE_UNDEFINED)
		return 0;		/* the outermost frame */

	/* A caller's frame lies toward the stack's base, never below. */
	if (cfa < r->reg[UNWIND_SP] || cfa > hi)
		return -EFAULT;
	/* Most registers keep their value (RULE_SAME): only the others are worked out. */
	memcpy(next, r->reg, sizeof(next));
	for (ruled = fr->ruled; ruled; ruled &= ruled - 1) {
		i = __builtin_ctzll(ruled);
		next[i] = 0;
		if (row->reg[i].kind != RULE_UNDEFINED &&
		    !recover(&w, &row->reg[i], i, cfa, &next[i]))
			return -EFAULT;
	}
	next[UNWIND_SP] = cfa;
	/* Only the registers in use: the rest of r->reg stays as it was. */
	memcpy(r->reg, next, sizeof(next));
	r->pc = next[fr->ra_column];
	if (row->ra_signed)
		r->pc = fiber_unwind_strip_ra(r->pc);
	r->caller = !fr->signal_frame;
	return 1;
}

int fiber_unwind_step(struct fiber_unwind_regs *r, uintptr_t lo, uintptr_t hi,
		      struct fiber_unwind_cache *cache)
{
	uintptr_t lookup = r->caller ? r->pc - 1 : r->pc;
	struct frame_rule local, *fr = &local;
	int err;

	if (cache) {
		/* Return addresses are at least 1 byte apart; functions 16. */
		fr = &cache->entry[(lookup ^ lookup >> 6 ^ lookup >> 12) % CACHE_ENTRIES];
		if (fr->pc == lookup)
			return apply_rule(fr, r, lo, hi);
	}
	err = find_rule(lookup, fr);
	if (err) {
		fr->pc = 0;
		return err;
	}
	return apply_rule(fr, r, lo, hi);
}

struct fiber_unwind_cache *fiber_unwind_cache_new(void)
{
	return calloc(1, sizeof(struct fiber_unwind_cache));
}
