/* The OCR confusion model's candidate search, compiled: the same walk as
 * ConfusionModel._walk in confusions.py (which stays as the reference and the fallback where
 * this module is not built), step for step, so both give the same candidates, the same
 * log-probabilities and the same dict order (tests/corpus/ocr/test_walk.py checks them against
 * each other).
 *
 * Why in C: the walk undoes rules left to right, testing each new beginning against every prefix
 * of the period lexicon's words; in Python that is one string built and hashed per rule tried,
 * ~90 us per unknown word, and most of a first pass over OCR text (BENCHMARKS.md). Here the
 * lexicon's keys are a trie (a prefix is a node; a rule tried is a step or two from the node of
 * the text before it, near the root and so in cache), and no Python object is made until a
 * candidate is found.
 *
 * `scored` goes one step further for the corrector (OcrRepairer._candidates): given each known
 * key's log-prior (Walker(..., logps=...)), it scores the candidates it finds against the word
 * as the corrector's Python loop did (weight * (prior - own) + channel, kept above `least`), so
 * that a Python object is made only for a candidate that survives (~10% of a cold pass's time
 * went to that loop). Built with -ffp-contract=off: the same sums, rounded the same way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the lexicon's trie */
/* Nodes in breadth-first order; a node's children are consecutive, from first_child, sorted by
 * the letter on the edge into them (letter[child]). */
typedef struct {
    uint32_t *first_child, *nchildren;
    Py_UCS4 *letter;
    uint8_t *known;
    uint32_t *key_index;  /* per known node: its key's index in the sorted keys */
    size_t nnodes;
    int empty;            /* no keys at all: not even the empty prefix is one (as in Python) */
    /* A node with many children (the root, the first letters) also has a row of `dense`: its
     * child by ASCII letter, NO_NODE where none. Finding a child is most of the walk's time, and
     * these nodes are where it is asked most and a search of their children is longest. */
    uint32_t *dense_row;  /* per node: its row, or NO_NODE */
    uint32_t *dense;
} Trie;

#define NO_NODE UINT32_MAX
#define DENSE_FROM 9      /* children from which a node gets a row (up to 8: a scan is as quick) */
#define DENSE_WIDTH 128

static inline uint32_t trie_child(const Trie *t, uint32_t node, Py_UCS4 c) {
    uint32_t row = t->dense_row[node];
    if (row != NO_NODE && c < DENSE_WIDTH) return t->dense[(size_t)row * DENSE_WIDTH + c];
    uint32_t lo = t->first_child[node], hi = lo + t->nchildren[node];
    if (hi - lo <= 8) {
        for (uint32_t k = lo; k < hi; k++)
            if (t->letter[k] == c) return k;
        return NO_NODE;
    }
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (t->letter[mid] < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < t->first_child[node] + t->nchildren[node] && t->letter[lo] == c ? lo : NO_NODE;
}

/* the node of s read from node, or NO_NODE where s begins no key */
static inline uint32_t trie_walk(const Trie *t, uint32_t node, const Py_UCS4 *s, size_t n) {
    for (size_t i = 0; i < n && node != NO_NODE; i++) node = trie_child(t, node, s[i]);
    return node;
}

/* ------------------------------------------------------------------ a table of strings: the rules' OCR sides */
typedef struct {
    uint64_t hash;
    uint32_t off, len;   /* the string: arena[off : off + len] */
    uint32_t value;      /* 1 + the rule's index (0: no rule) */
    uint32_t used;
} Entry;

typedef struct {
    Entry *slots;
    size_t mask, count;
} Table;

typedef struct {
    Py_UCS4 *data;
    size_t len, cap;
} Arena;

typedef struct {
    uint32_t g_off, g_len, gk_off, gk_len;
    double lp;
} Alt;

typedef struct {
    PyObject_HEAD
    Arena arena;
    Trie trie;            /* the known keys; every prefix of one is a node */
    Table rules;          /* OCR string -> 1 + its rule's index */
    uint32_t *rule_start, *rule_count;   /* rule i's alternatives: alts[rule_start[i] : + rule_count[i]] */
    Alt *alts;
    size_t nalts;
    int lengths[16];      /* the OCR strings' lengths, longest first, as the Python walk tries them */
    int nlengths;
    uint32_t max_gk;
    double *node_lp;      /* per known node: its key's log-prior (NULL: not given, no `scored`) */
} Walker;

static uint64_t hash_ucs4(const Py_UCS4 *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;   /* FNV-1a over code points */
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static int arena_add(Arena *a, const Py_UCS4 *s, size_t n, uint32_t *off) {
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 1024;
        while (cap < a->len + n) cap *= 2;
        Py_UCS4 *d = PyMem_Realloc(a->data, cap * sizeof(Py_UCS4));
        if (!d) { PyErr_NoMemory(); return -1; }
        a->data = d;
        a->cap = cap;
    }
    if (a->len + n > UINT32_MAX) { PyErr_SetString(PyExc_OverflowError, "lexicon too large"); return -1; }
    memcpy(a->data + a->len, s, n * sizeof(Py_UCS4));
    *off = (uint32_t)a->len;
    a->len += n;
    return 0;
}

static int table_init(Table *t, size_t expected) {
    size_t size = 16;
    while (size < expected * 2 + 16) size *= 2;
    t->slots = PyMem_Calloc(size, sizeof(Entry));
    if (!t->slots) { PyErr_NoMemory(); return -1; }
    t->mask = size - 1;
    t->count = 0;
    return 0;
}

/* the slot holding s, or the empty slot where it would go */
static Entry *table_slot(const Table *t, const Arena *a, const Py_UCS4 *s, size_t n, uint64_t h) {
    size_t i = (size_t)h & t->mask;
    for (;;) {
        Entry *e = &t->slots[i];
        if (!e->used) return e;
        if (e->hash == h && e->len == n && memcmp(a->data + e->off, s, n * sizeof(Py_UCS4)) == 0) return e;
        i = (i + 1) & t->mask;
    }
}

static inline uint32_t table_get(const Table *t, const Arena *a, const Py_UCS4 *s, size_t n) {
    Entry *e = table_slot(t, a, s, n, hash_ucs4(s, n));
    return e->used ? e->value : 0;
}

/* the slot of s, added (value 0) if absent; NULL on error */
static Entry *table_put(Table *t, Arena *a, const Py_UCS4 *s, size_t n) {
    uint64_t h = hash_ucs4(s, n);
    Entry *e = table_slot(t, a, s, n, h);
    if (!e->used) {
        uint32_t off;
        if (arena_add(a, s, n, &off) < 0) return NULL;
        e->hash = h; e->off = off; e->len = (uint32_t)n; e->value = 0; e->used = 1;
        t->count++;
    }
    return e;
}

/* a str as UCS-4 (a new buffer the caller frees) */
static Py_UCS4 *as_ucs4(PyObject *o, Py_ssize_t *n) {
    if (!PyUnicode_Check(o)) { PyErr_SetString(PyExc_TypeError, "expected str"); return NULL; }
    *n = PyUnicode_GET_LENGTH(o);
    return PyUnicode_AsUCS4Copy(o);
}

/* ------------------------------------------------------------------ building */
typedef struct {
    uint32_t lo, hi, depth;   /* the keys keys[lo:hi] share this node's prefix, depth letters long */
} Span;

/* The rows of `dense` for the nodes with DENSE_FROM children or more. */
static int build_dense(Trie *t) {
    size_t rows = 0;
    t->dense_row = PyMem_Malloc((t->nnodes + 1) * sizeof(uint32_t));
    if (!t->dense_row) { PyErr_NoMemory(); return -1; }
    for (size_t k = 0; k < t->nnodes; k++)
        t->dense_row[k] = t->nchildren[k] >= DENSE_FROM ? (uint32_t)rows++ : NO_NODE;
    t->dense = PyMem_Malloc((rows * DENSE_WIDTH + 1) * sizeof(uint32_t));
    if (!t->dense) { PyErr_NoMemory(); return -1; }
    for (size_t k = 0; k < rows * DENSE_WIDTH; k++) t->dense[k] = NO_NODE;
    for (size_t k = 0; k < t->nnodes; k++) {
        if (t->dense_row[k] == NO_NODE) continue;
        uint32_t *row = t->dense + (size_t)t->dense_row[k] * DENSE_WIDTH;
        for (uint32_t ch = t->first_child[k]; ch < t->first_child[k] + t->nchildren[k]; ch++)
            if (t->letter[ch] < DENSE_WIDTH) row[t->letter[ch]] = ch;
    }
    return 0;
}

/* The trie of keys (sorted by code point, as Python sorts str, no repeats), breadth first. */
static int build_trie(Trie *t, Py_UCS4 **keys, Py_ssize_t *lens, uint32_t nkeys) {
    size_t total = 1;
    for (uint32_t k = 0; k < nkeys; k++) total += (size_t)lens[k];   /* at most this many nodes */
    if (total >= NO_NODE) { PyErr_SetString(PyExc_OverflowError, "lexicon too large"); return -1; }
    t->first_child = PyMem_Calloc(total, sizeof(uint32_t));
    t->nchildren = PyMem_Calloc(total, sizeof(uint32_t));
    t->letter = PyMem_Calloc(total, sizeof(Py_UCS4));
    t->known = PyMem_Calloc(total, 1);
    t->key_index = PyMem_Calloc(total, sizeof(uint32_t));
    Span *queue = PyMem_Calloc(total, sizeof(Span));
    if (!t->first_child || !t->nchildren || !t->letter || !t->known || !t->key_index || !queue) {
        PyMem_Free(queue);
        PyErr_NoMemory();
        return -1;
    }
    size_t head = 0, next = 1;
    queue[0] = (Span){0, nkeys, 0};
    while (head < next) {   /* node `head`: its span; its children get the next free numbers */
        Span sp = queue[head];
        uint32_t lo = sp.lo;
        if (lo < sp.hi && (uint32_t)lens[lo] == sp.depth) { t->known[head] = 1; t->key_index[head] = lo++; }  /* the shortest sorts first */
        t->first_child[head] = (uint32_t)next;
        while (lo < sp.hi) {
            Py_UCS4 c = keys[lo][sp.depth];
            uint32_t hi = lo + 1;
            while (hi < sp.hi && keys[hi][sp.depth] == c) hi++;
            t->letter[next] = c;
            queue[next++] = (Span){lo, hi, sp.depth + 1};
            t->nchildren[head]++;
            lo = hi;
        }
        head++;
    }
    t->nnodes = next;
    t->empty = nkeys == 0;
    PyMem_Free(queue);
    return build_dense(t);
}

static int add_words(Walker *self, PyObject *sorted_keys) {
    PyObject *seq = PySequence_Fast(sorted_keys, "known: a sequence of str");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_UCS4 **keys = PyMem_Calloc((size_t)n + 1, sizeof(Py_UCS4 *));
    Py_ssize_t *lens = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    int rc = keys && lens ? 0 : -1;
    if (rc) PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < n && rc == 0; k++) {
        keys[k] = as_ucs4(PySequence_Fast_GET_ITEM(seq, k), &lens[k]);
        if (!keys[k]) rc = -1;
        else if (k && PyUnicode_Compare(PySequence_Fast_GET_ITEM(seq, k - 1), PySequence_Fast_GET_ITEM(seq, k)) >= 0) {
            PyErr_SetString(PyExc_ValueError, "known: keys must be sorted and distinct");
            rc = -1;
        }
    }
    if (rc == 0) rc = build_trie(&self->trie, keys, lens, (uint32_t)n);
    for (Py_ssize_t k = 0; k < n && keys; k++) PyMem_Free(keys[k]);
    PyMem_Free(keys);
    PyMem_Free(lens);
    Py_DECREF(seq);
    return rc;
}

static int add_rules(Walker *self, PyObject *rules) {
    Py_ssize_t pos = 0, total = 0;
    PyObject *o, *alts;
    while (PyDict_Next(rules, &pos, &o, &alts)) {
        if (!PyList_Check(alts)) { PyErr_SetString(PyExc_TypeError, "rules: lists of (g, gk, lp)"); return -1; }
        total += PyList_GET_SIZE(alts);
    }
    self->alts = PyMem_Calloc((size_t)total + 1, sizeof(Alt));
    self->rule_start = PyMem_Calloc((size_t)PyDict_GET_SIZE(rules) + 1, sizeof(uint32_t));
    self->rule_count = PyMem_Calloc((size_t)PyDict_GET_SIZE(rules) + 1, sizeof(uint32_t));
    if (!self->alts || !self->rule_start || !self->rule_count) { PyErr_NoMemory(); return -1; }
    if (table_init(&self->rules, (size_t)PyDict_GET_SIZE(rules)) < 0) return -1;
    pos = 0;
    uint32_t index = 0;
    while (PyDict_Next(rules, &pos, &o, &alts)) {
        Py_ssize_t n;
        Py_UCS4 *s = as_ucs4(o, &n);
        if (!s) return -1;
        Entry *e = table_put(&self->rules, &self->arena, s, (size_t)n);
        PyMem_Free(s);
        if (!e) return -1;
        e->value = index + 1;   /* so that 0 means "no rule" */
        self->rule_start[index] = (uint32_t)self->nalts;
        if (n > 0) {
            int have = 0;
            for (int k = 0; k < self->nlengths; k++) have |= self->lengths[k] == n;
            if (!have) {
                if (self->nlengths == 16) { PyErr_SetString(PyExc_ValueError, "rules: too many lengths"); return -1; }
                self->lengths[self->nlengths++] = (int)n;
            }
        }
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(alts); j++) {
            PyObject *alt = PyList_GET_ITEM(alts, j);
            PyObject *g, *gk;
            double lp;
            if (!PyArg_ParseTuple(alt, "UUd", &g, &gk, &lp)) return -1;
            Alt *a = &self->alts[self->nalts++];
            Py_ssize_t gn, gkn;
            Py_UCS4 *gs = as_ucs4(g, &gn), *gks;
            if (!gs) return -1;
            if (arena_add(&self->arena, gs, (size_t)gn, &a->g_off) < 0) { PyMem_Free(gs); return -1; }
            PyMem_Free(gs);
            gks = as_ucs4(gk, &gkn);
            if (!gks) return -1;
            if (arena_add(&self->arena, gks, (size_t)gkn, &a->gk_off) < 0) { PyMem_Free(gks); return -1; }
            PyMem_Free(gks);
            a->g_len = (uint32_t)gn; a->gk_len = (uint32_t)gkn; a->lp = lp;
            if ((uint32_t)gkn > self->max_gk) self->max_gk = (uint32_t)gkn;
        }
        self->rule_count[index] = (uint32_t)self->nalts - self->rule_start[index];
        index++;
    }
    /* longest first (sorted(reverse=True), as the Python walk) */
    for (int a = 0; a < self->nlengths; a++)
        for (int b = a + 1; b < self->nlengths; b++)
            if (self->lengths[b] > self->lengths[a]) { int t = self->lengths[a]; self->lengths[a] = self->lengths[b]; self->lengths[b] = t; }
    return 0;
}

/* node_lp from logps, one float per key of the sorted keys */
static int add_logps(Walker *self, PyObject *logps, Py_ssize_t nkeys) {
    PyObject *seq = PySequence_Fast(logps, "logps: a sequence of float, one per key");
    if (!seq) return -1;
    int rc = 0;
    if (PySequence_Fast_GET_SIZE(seq) != nkeys) {
        PyErr_SetString(PyExc_ValueError, "logps: one per key of known");
        rc = -1;
    }
    const Trie *t = &self->trie;
    if (rc == 0 && !(self->node_lp = PyMem_Calloc(t->nnodes + 1, sizeof(double)))) { PyErr_NoMemory(); rc = -1; }
    for (size_t k = 0; k < t->nnodes && rc == 0; k++) {
        if (!t->known[k]) continue;
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, t->key_index[k]));
        if (v == -1.0 && PyErr_Occurred()) rc = -1;
        self->node_lp[k] = v;
    }
    Py_DECREF(seq);
    return rc;
}

static int Walker_init(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"rules", "known", "logps", NULL};
    PyObject *rules, *known, *logps = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O|O", kw, &PyDict_Type, &rules, &known, &logps)) return -1;
    if (self->trie.first_child) { PyErr_SetString(PyExc_RuntimeError, "Walker is built once"); return -1; }
    if (add_words(self, known) < 0) return -1;
    if (logps != Py_None && add_logps(self, logps, PySequence_Size(known)) < 0) return -1;
    return add_rules(self, rules);
}

static void Walker_dealloc(Walker *self) {
    PyMem_Free(self->arena.data);
    PyMem_Free(self->trie.first_child);
    PyMem_Free(self->trie.nchildren);
    PyMem_Free(self->trie.letter);
    PyMem_Free(self->trie.known);
    PyMem_Free(self->trie.key_index);
    PyMem_Free(self->node_lp);
    PyMem_Free(self->trie.dense_row);
    PyMem_Free(self->trie.dense);
    PyMem_Free(self->rules.slots);
    PyMem_Free(self->rule_start);
    PyMem_Free(self->rule_count);
    PyMem_Free(self->alts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------------ the walk */
typedef struct {
    double total;
    size_t order;          /* the Python walk's sort is stable: ties keep the order found */
    Py_UCS4 *cand, *ck;
    size_t cand_len, ck_len, nxt;
} Deeper;

/* a candidate `scored` found: its best channel log-probability, its key's node and the key */
typedef struct {
    double total;
    uint32_t node;
    Py_UCS4 *ck;
    size_t ckn;
} Found;

typedef struct {
    double floor, beam;
    Py_ssize_t fanout;
    PyObject *out;        /* candidates: {cand: log P(word | cand)}; `scored`: {cand: index into found} */
    Found *found;         /* `scored` only (NULL otherwise), in the order first found */
    size_t nfound, found_cap;
} Search;

static int deeper_cmp(const void *pa, const void *pb) {
    const Deeper *a = pa, *b = pb;
    if (a->total > b->total) return -1;
    if (a->total < b->total) return 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* `scored`: a new candidate's entry (its key copied), its index the dict's value */
static int found_new(Search *s, PyObject *key, double total, uint32_t node, const Py_UCS4 *ck, size_t ckn) {
    if (s->nfound == s->found_cap) {
        size_t nc = s->found_cap ? s->found_cap * 2 : 16;
        Found *f = PyMem_Realloc(s->found, nc * sizeof(Found));
        if (!f) { PyErr_NoMemory(); return -1; }
        s->found = f; s->found_cap = nc;
    }
    Found *f = &s->found[s->nfound];
    if (!(f->ck = PyMem_Malloc((ckn + 1) * sizeof(Py_UCS4)))) { PyErr_NoMemory(); return -1; }
    memcpy(f->ck, ck, ckn * sizeof(Py_UCS4));
    f->ckn = ckn; f->total = total; f->node = node;
    PyObject *index = PyLong_FromSize_t(s->nfound);
    int rc = index ? PyDict_SetItem(s->out, key, index) : -1;
    Py_XDECREF(index);
    if (rc == 0) s->nfound++;
    else PyMem_Free(f->ck);
    return rc;
}

/* cand (key ck, at trie node `node`) is a known word, total = log P(word | cand) this way: kept
 * if it is new or likelier this way than any found before */
static int found(Search *s, const Py_UCS4 *cand, size_t n, double total, uint32_t node, const Py_UCS4 *ck, size_t ckn) {
    PyObject *key = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, cand, (Py_ssize_t)n);
    if (!key) return -1;
    PyObject *have = PyDict_GetItemWithError(s->out, key);
    int rc = 0;
    if (!have && PyErr_Occurred()) rc = -1;
    else if (s->found) {
        if (!have) rc = found_new(s, key, total, node, ck, ckn);
        else {
            Found *f = &s->found[PyLong_AsSize_t(have)];
            if (total > f->total) f->total = total;
        }
    } else if (!have || total > PyFloat_AS_DOUBLE(have)) {
        PyObject *v = PyFloat_FromDouble(total);
        rc = v ? PyDict_SetItem(s->out, key, v) : -1;
        Py_XDECREF(v);
    }
    Py_DECREF(key);
    return rc;
}

/* the Python walk's string w[:i] + g + w[i+ln:] (slices clipped as Python clips them) */
static size_t splice(Py_UCS4 *dst, const Py_UCS4 *w, size_t n, size_t i, size_t ln, const Py_UCS4 *g, size_t gn) {
    size_t head = i < n ? i : n, tail = i + ln < n ? i + ln : n;
    memcpy(dst, w, head * sizeof(Py_UCS4));
    memcpy(dst + head, g, gn * sizeof(Py_UCS4));
    memcpy(dst + head + gn, w + tail, (n - tail) * sizeof(Py_UCS4));
    return head + gn + (n - tail);
}

static int walk(Walker *self, Search *s, const Py_UCS4 *w, size_t n, const Py_UCS4 *wk, size_t nk,
                size_t start, double base, int edits) {
    const Py_UCS4 *arena = self->arena.data;
    size_t cap = nk + self->max_gk + 1, wcap = n + self->max_gk + 1;
    Py_UCS4 *buf = PyMem_Malloc(cap * sizeof(Py_UCS4)), *cbuf = PyMem_Malloc(wcap * sizeof(Py_UCS4));
    Deeper *deeper = NULL;
    size_t ndeeper = 0, deeper_cap = 0;
    int rc = 0;
    if (!buf || !cbuf) { PyErr_NoMemory(); rc = -1; goto done; }
    const Trie *t = &self->trie;
    uint32_t node_h = 0;   /* the node of hk = wk[:i], read `at` letters into wk */
    size_t at = 0;
    for (size_t i = start; i < n && rc == 0; i++) {
        size_t hn = i < nk ? i : nk;
        node_h = trie_walk(t, node_h, wk + at, hn - at);
        at = hn;
        if (node_h == NO_NODE) break;   /* every later edit keeps this head, which begins no word */
        for (int L = 0; L < self->nlengths; L++) {
            size_t ln = (size_t)self->lengths[L];
            if (i + ln > n) continue;
            uint32_t r = table_get(&self->rules, &self->arena, w + i, ln);
            if (!r) continue;
            uint32_t first = self->rule_start[r - 1], last = first + self->rule_count[r - 1];
            for (uint32_t a = first; a < last; a++) {
                const Alt *A = &self->alts[a];
                double total = base + A->lp;
                if (total < s->floor) break;              /* alternatives come likeliest first */
                uint32_t node_n = trie_walk(t, node_h, arena + A->gk_off, A->gk_len);   /* nk = hk + gk */
                if (node_n == NO_NODE || (t->empty && hn + A->gk_len == 0)) continue;
                size_t tail = i + ln < nk ? i + ln : nk;   /* ck = nk + wk[i+ln:] */
                uint32_t node_c = trie_walk(t, node_n, wk + tail, nk - tail);
                int is_known = node_c != NO_NODE && t->known[node_c];
                int go_deeper = edits > 1 && total > s->beam;
                if (!is_known && !go_deeper) continue;
                size_t ckn = hn + A->gk_len + (nk - tail);
                memcpy(buf, wk, hn * sizeof(Py_UCS4));
                memcpy(buf + hn, arena + A->gk_off, A->gk_len * sizeof(Py_UCS4));
                memcpy(buf + hn + A->gk_len, wk + tail, (nk - tail) * sizeof(Py_UCS4));
                size_t cn = splice(cbuf, w, n, i, ln, arena + A->g_off, A->g_len);
                if (is_known && found(s, cbuf, cn, total, node_c, buf, ckn) < 0) { rc = -1; break; }
                if (go_deeper) {
                    if (ndeeper == deeper_cap) {
                        size_t nc = deeper_cap ? deeper_cap * 2 : 16;
                        Deeper *d = PyMem_Realloc(deeper, nc * sizeof(Deeper));
                        if (!d) { PyErr_NoMemory(); rc = -1; break; }
                        deeper = d; deeper_cap = nc;
                    }
                    Deeper *d = &deeper[ndeeper];
                    d->cand = PyMem_Malloc((cn + 1) * sizeof(Py_UCS4));
                    d->ck = PyMem_Malloc((ckn + 1) * sizeof(Py_UCS4));
                    if (!d->cand || !d->ck) { PyMem_Free(d->cand); PyMem_Free(d->ck); PyErr_NoMemory(); rc = -1; break; }
                    memcpy(d->cand, cbuf, cn * sizeof(Py_UCS4));
                    memcpy(d->ck, buf, ckn * sizeof(Py_UCS4));
                    d->cand_len = cn; d->ck_len = ckn; d->total = total; d->order = ndeeper;
                    d->nxt = i + A->g_len;
                    ndeeper++;
                }
            }
            if (rc) break;
        }
    }
    if (rc == 0 && ndeeper) {   /* a second undoing, from the likeliest first ones only */
        qsort(deeper, ndeeper, sizeof(Deeper), deeper_cmp);
        /* deeper[:fanout], as Python slices (a negative fanout drops from the end) */
        Py_ssize_t f = s->fanout < 0 ? (Py_ssize_t)ndeeper + s->fanout : s->fanout;
        size_t take = f < 0 ? 0 : (size_t)f < ndeeper ? (size_t)f : ndeeper;
        for (size_t k = 0; k < take && rc == 0; k++)
            rc = walk(self, s, deeper[k].cand, deeper[k].cand_len, deeper[k].ck, deeper[k].ck_len,
                      deeper[k].nxt, deeper[k].total, edits - 1);
    }
done:
    for (size_t k = 0; k < ndeeper; k++) { PyMem_Free(deeper[k].cand); PyMem_Free(deeper[k].ck); }
    PyMem_Free(deeper);
    PyMem_Free(buf);
    PyMem_Free(cbuf);
    return rc;
}

static PyObject *Walker_candidates(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"word", "key", "max_edits", "floor", "beam", "fanout", NULL};
    PyObject *word, *key;
    int max_edits;
    Search s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UUiddn", kw, &word, &key, &max_edits, &s.floor, &s.beam, &s.fanout))
        return NULL;
    if (!self->trie.first_child || !self->trie.dense_row) { PyErr_SetString(PyExc_RuntimeError, "Walker not built"); return NULL; }
    Py_ssize_t n, nk;
    Py_UCS4 *w = as_ucs4(word, &n), *wk = w ? as_ucs4(key, &nk) : NULL;
    s.out = wk ? PyDict_New() : NULL;
    if (s.out && walk(self, &s, w, (size_t)n, wk, (size_t)nk, 0, 0.0, max_edits) < 0) Py_CLEAR(s.out);
    PyMem_Free(w);
    PyMem_Free(wk);
    return s.out;
}

/* The candidates' scores against the word itself (OcrRepairer._candidates' loop): for each
 * candidate other than the word, whose key is not the word's, in the order first found,
 * static = weight * (log-prior - own) + log P(word | cand); those with static > least as
 * (static, cand, key, log P(word | cand), log-prior). */
static PyObject *scored_list(Search *s, const Py_UCS4 *wk, size_t nk, const double *node_lp,
                             double own, double weight, double least) {
    PyObject *out = PyList_New(0), *cand, *index;
    Py_ssize_t pos = 0;
    while (out && PyDict_Next(s->out, &pos, &cand, &index)) {   /* insertion order: first found first */
        const Found *f = &s->found[PyLong_AsSize_t(index)];
        if (f->ckn == nk && memcmp(f->ck, wk, nk * sizeof(Py_UCS4)) == 0) continue;   /* the word's key: the word too */
        double p = node_lp[f->node];
        double st = weight * (p - own) + f->total;
        if (!(st > least)) continue;
        PyObject *k = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, f->ck, (Py_ssize_t)f->ckn);
        PyObject *row = k ? Py_BuildValue("(dONdd)", st, cand, k, f->total, p) : NULL;
        if (!row || PyList_Append(out, row) < 0) Py_CLEAR(out);
        Py_XDECREF(row);
    }
    return out;
}

static PyObject *Walker_scored(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"word", "key", "max_edits", "floor", "beam", "fanout", "own", "weight", "least", NULL};
    PyObject *word, *key, *result = NULL;
    int max_edits;
    double own, weight, least;
    Search s = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UUiddnddd", kw, &word, &key, &max_edits, &s.floor, &s.beam,
                                     &s.fanout, &own, &weight, &least))
        return NULL;
    if (!self->trie.first_child || !self->trie.dense_row) { PyErr_SetString(PyExc_RuntimeError, "Walker not built"); return NULL; }
    if (!self->node_lp) { PyErr_SetString(PyExc_RuntimeError, "scored needs Walker(..., logps=...)"); return NULL; }
    Py_ssize_t n, nk;
    Py_UCS4 *w = as_ucs4(word, &n), *wk = w ? as_ucs4(key, &nk) : NULL;
    if (wk && nk != n) result = PyList_New(0);   /* a key is letter for letter: no candidates otherwise */
    else if (wk && (s.out = PyDict_New()) && (s.found = PyMem_Malloc(16 * sizeof(Found)))) {
        s.found_cap = 16;
        if (walk(self, &s, w, (size_t)n, wk, (size_t)nk, 0, 0.0, max_edits) == 0)
            result = scored_list(&s, wk, (size_t)nk, self->node_lp, own, weight, least);
    } else if (wk && s.out) PyErr_NoMemory();
    for (size_t k = 0; k < s.nfound; k++) PyMem_Free(s.found[k].ck);
    PyMem_Free(s.found);
    Py_XDECREF(s.out);
    PyMem_Free(w);
    PyMem_Free(wk);
    return result;
}

/* ------------------------------------------------------------------ near words */
/* The near-word search's scan (OcrRepairer._near_keys): the words of a pool within `limit` edits
 * (Levenshtein) of a key, as rapidfuzz's process.extract(key, pool, scorer=Levenshtein.distance,
 * score_cutoff=limit, limit=None) lists them (by distance, then by their order in the pool), in a
 * fraction of its time: a word whose letters differ from the key's by more than `limit` edits is
 * passed over before any distance is computed, and the distance stops once every way is past
 * `limit`. Each word's signature (near_masks) holds the kinds of letter it has (a bit each) and
 * how many of each: an edit changes one letter's count by one, or two letters' by one each (one
 * up, one down), so the letters the key has more of than the word, or fewer, are edits at least
 * (each other letter than a-z is one kind: counted together, which only lowers that bound). The
 * kinds alone passed half of a pool for a long key; their counts pass a tenth. */
#define NEAR_KINDS 27  /* a-z, and any other letter */
typedef struct {
    uint32_t mask;
    uint8_t count[NEAR_KINDS + 1];  /* (one unused byte: 32 in all) */
} NearSig;

static void near_signature(PyObject *word, NearSig *sig) {
    int kind = PyUnicode_KIND(word);
    const void *data = PyUnicode_DATA(word);
    Py_ssize_t n = PyUnicode_GET_LENGTH(word);
    memset(sig, 0, sizeof(*sig));
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        int k = (c >= 'a' && c <= 'z') ? (int)(c - 'a') : NEAR_KINDS - 1;
        sig->mask |= 1u << k;
        if (sig->count[k] < 255) sig->count[k]++;
    }
}

/* The edits the letters' counts alone prove: the larger of what the key has more of and what it
 * has fewer of (a count capped at 255 only lowers it). */
static int count_bound(const NearSig *a, const NearSig *b) {
    int more = 0, fewer = 0;
    for (int k = 0; k < NEAR_KINDS; k++) {
        int d = (int)a->count[k] - (int)b->count[k];
        if (d > 0) more += d; else fewer -= d;
    }
    return more > fewer ? more : fewer;
}

static PyObject *near_masks(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "near_masks(words): a list of str");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(NearSig));
    if (!out) { Py_DECREF(seq); return NULL; }
    NearSig *m = (NearSig *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *w = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(w)) {
            PyErr_SetString(PyExc_TypeError, "near_masks(words): a list of str");
            Py_DECREF(seq); Py_DECREF(out); return NULL;
        }
        near_signature(w, &m[i]);
    }
    Py_DECREF(seq);
    return out;
}

/* Levenshtein distance of a and b, or limit + 1 once it must exceed limit. */
static Py_ssize_t bounded_distance(PyObject *a, PyObject *b, Py_ssize_t limit, Py_ssize_t *row) {
    int ka = PyUnicode_KIND(a), kb = PyUnicode_KIND(b);
    const void *da = PyUnicode_DATA(a), *db = PyUnicode_DATA(b);
    Py_ssize_t na = PyUnicode_GET_LENGTH(a), nb = PyUnicode_GET_LENGTH(b);
    if ((na > nb ? na - nb : nb - na) > limit) return limit + 1;
    for (Py_ssize_t j = 0; j <= nb; j++) row[j] = j;
    for (Py_ssize_t i = 1; i <= na; i++) {
        Py_UCS4 ca = PyUnicode_READ(ka, da, i - 1);
        Py_ssize_t diag = row[0], least = i;
        row[0] = i;
        for (Py_ssize_t j = 1; j <= nb; j++) {
            Py_ssize_t up = row[j];
            Py_ssize_t best = diag + (ca != PyUnicode_READ(kb, db, j - 1));
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
            if (best < least) least = best;
        }
        if (least > limit) return limit + 1;
    }
    return row[nb];
}

/* A key's letters as bit masks of where it has them (Myers' bit-parallel distance): for a key of
 * at most 64 letters, a pool word's distance is one pass over its letters, a few word operations
 * each, where the table above took one step per letter of each. */
typedef struct {
    uint64_t ascii[128];
    Py_UCS4 other[64];
    uint64_t other_at[64];
    int nother, m;
} KeyBits;

static void key_bits(PyObject *key, KeyBits *kb) {
    int kind = PyUnicode_KIND(key);
    const void *data = PyUnicode_DATA(key);
    memset(kb->ascii, 0, sizeof(kb->ascii));
    kb->nother = 0;
    kb->m = (int)PyUnicode_GET_LENGTH(key);
    for (int i = 0; i < kb->m; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 128) { kb->ascii[c] |= 1ull << i; continue; }
        int j = 0;
        while (j < kb->nother && kb->other[j] != c) j++;
        if (j == kb->nother) { kb->other[j] = c; kb->other_at[j] = 0; kb->nother++; }
        kb->other_at[j] |= 1ull << i;
    }
}

static inline uint64_t key_at(const KeyBits *kb, Py_UCS4 c) {
    if (c < 128) return kb->ascii[c];
    for (int j = 0; j < kb->nother; j++)
        if (kb->other[j] == c) return kb->other_at[j];
    return 0;
}

/* Levenshtein distance of the key (1 to 64 letters) and w (Hyyro's form of Myers' algorithm). */
static Py_ssize_t bits_distance(const KeyBits *kb, PyObject *w) {
    int kind = PyUnicode_KIND(w);
    const void *data = PyUnicode_DATA(w);
    Py_ssize_t n = PyUnicode_GET_LENGTH(w), score = kb->m;
    uint64_t last = 1ull << (kb->m - 1), pv = ~0ull, mv = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        uint64_t eq = key_at(kb, PyUnicode_READ(kind, data, j));
        uint64_t xv = eq | mv;
        uint64_t xh = (((eq & pv) + pv) ^ pv) | eq;
        uint64_t ph = mv | ~(xh | pv);
        uint64_t mh = pv & xh;
        if (ph & last) score++;
        else if (mh & last) score--;
        ph = (ph << 1) | 1;
        mh <<= 1;
        pv = mh | ~(xv | ph);
        mv = ph & xv;
    }
    return score;
}

static PyObject *near(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *key, *pool;
    Py_buffer masks;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "UO!y*n", &key, &PyList_Type, &pool, &masks, &limit)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(pool);
    PyObject *out = NULL;
    Py_ssize_t *row = NULL, *hits = NULL, *dist = NULL;
    KeyBits *kb = NULL;
    if (masks.len != n * (Py_ssize_t)sizeof(NearSig) || limit < 0) {
        PyErr_SetString(PyExc_ValueError, "near(key, pool, masks, limit): masks must be near_masks(pool), limit >= 0");
        goto done;
    }
    const NearSig *m = (const NearSig *)masks.buf;
    NearSig qs;
    near_signature(key, &qs);
    uint32_t q = qs.mask;
    Py_ssize_t longest = PyUnicode_GET_LENGTH(key) + limit + 1, found = 0;
    int bits = PyUnicode_GET_LENGTH(key) >= 1 && PyUnicode_GET_LENGTH(key) <= 64;
    if (bits) {
        kb = PyMem_Malloc(sizeof(KeyBits));
        if (!kb) { PyErr_NoMemory(); goto done; }
        key_bits(key, kb);
    }
    row = PyMem_Malloc((size_t)(longest + 1) * sizeof(Py_ssize_t));
    hits = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    dist = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    if (!row || !hits || !dist) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (__builtin_popcount(q & ~m[i].mask) > limit || __builtin_popcount(m[i].mask & ~q) > limit
            || count_bound(&qs, &m[i]) > limit) continue;
        PyObject *w = PyList_GET_ITEM(pool, i);
        if (!PyUnicode_Check(w) || PyUnicode_GET_LENGTH(w) > longest) continue;
        Py_ssize_t d = bits ? bits_distance(kb, w) : bounded_distance(key, w, limit, row);
        if (d <= limit) { hits[found] = i; dist[found] = d; found++; }
    }
    out = PyList_New(found);
    if (!out) goto done;
    Py_ssize_t k = 0;
    for (Py_ssize_t d = 0; d <= limit; d++)  /* by distance, then by order in the pool */
        for (Py_ssize_t i = 0; i < found; i++)
            if (dist[i] == d) {
                PyObject *w = PyList_GET_ITEM(pool, hits[i]);
                Py_INCREF(w);
                PyList_SET_ITEM(out, k++, w);
            }
done:
    PyMem_Free(row); PyMem_Free(hits); PyMem_Free(dist); PyMem_Free(kb);
    PyBuffer_Release(&masks);
    return out;
}

static PyMethodDef module_methods[] = {
    {"near", near, METH_VARARGS,
     "near(key, pool, masks, limit) -> the words of pool (a list of str) within limit edits of key, by distance "
     "then by their order in pool (as rapidfuzz's process.extract lists them); masks: near_masks(pool)"},
    {"near_masks", near_masks, METH_O, "near_masks(words) -> bytes: each word's letter kinds, for near()"},
    {NULL, NULL, 0, NULL}};

static PyMethodDef Walker_methods[] = {
    {"candidates", (PyCFunction)(void (*)(void))Walker_candidates, METH_VARARGS | METH_KEYWORDS,
     "candidates(word, key, max_edits, floor, beam, fanout) -> {printed word: log P(word | printed)}"},
    {"scored", (PyCFunction)(void (*)(void))Walker_scored, METH_VARARGS | METH_KEYWORDS,
     "scored(word, key, max_edits, floor, beam, fanout, own, weight, least) -> "
     "[(weight * (log-prior - own) + channel, cand, key, channel, log-prior)] above least, first found first"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject WalkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "londonlm.corpus.ocr._walk.Walker",
    .tp_basicsize = sizeof(Walker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Walker(rules, known): the candidate search of one rule set over one lexicon's keys (sorted).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Walker_init,
    .tp_dealloc = (destructor)Walker_dealloc,
    .tp_methods = Walker_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk",
                                    "The OCR confusion model's candidate search and the near-word search's scan, "
                                    "compiled (see confusions.py, repair.py).", -1,
                                    module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__walk(void) {
    if (PyType_Ready(&WalkerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&WalkerType);
    if (PyModule_AddObject(m, "Walker", (PyObject *)&WalkerType) < 0) {
        Py_DECREF(&WalkerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
