/* Fingerprint tables for deduplication (heimdall.sources.dedup). Internal.
 *
 * ``FpTable`` maps a message's fingerprint (any hashable; its Python hash is what is kept) to
 * a handle, in an open-addressing table of (hash, index) pairs with linear probing, and the
 * handles in a Python list in the order they came. It replaces a dict of ~100,000 entries per
 * generation: a batch of 10,000 messages is looked up and remembered in two C loops, each
 * probe prefetched a few messages ahead, and no Python object is made per message but the
 * handle's place in the list. Two fingerprints with equal hashes are one entry: the caller
 * compares message ids wherever fingerprints meet, so that only makes a candidate more.
 *
 * Not thread-safe: the stream's ingest lock guards it, as it guards the AppliedIds around it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    Py_hash_t fp;
    Py_ssize_t idx; /* into handles; -1: empty */
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *table;
    size_t mask;       /* table size - 1 (a power of two) */
    Py_ssize_t count;  /* entries in use */
    PyObject *handles; /* list */
    Py_hash_t *hashes; /* scratch: a batch's hashes */
    Py_ssize_t *first; /* scratch: a batch's own table (index of the first with a hash) */
    Py_ssize_t scratch;
} FpTable;

#define PREFETCH 8

static PyTypeObject *fptable_type; /* set when the module is made */

static inline size_t
slot_of(Py_hash_t h, size_t mask)
{
    /* Fibonacci hashing: the product's top log2(size) bits */
    return (size_t)(((unsigned long long)h * 0x9E3779B97F4A7C15ULL)
                    >> (64 - __builtin_ctzll((unsigned long long)mask + 1)));
}

/* The entry holding ``h``, or the empty one where it would go. */
static inline Entry *
probe(FpTable *t, Py_hash_t h)
{
    size_t i = slot_of(h, t->mask);
    for (;;) {
        Entry *e = &t->table[i];
        if (e->idx < 0 || e->fp == h)
            return e;
        i = (i + 1) & t->mask;
    }
}

/* The smallest power of two >= ``n``, and >= ``least`` (a power of two). */
static inline size_t
pow2_at_least(size_t n, size_t least)
{
    size_t size = least;
    while (size < n)
        size *= 2;
    return size;
}

static int
alloc_table(FpTable *t, size_t size)
{
    Entry *table = PyMem_Malloc(size * sizeof(Entry));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(table, 0xff, size * sizeof(Entry)); /* idx -1 everywhere */
    PyMem_Free(t->table);
    t->table = table;
    t->mask = size - 1;
    return 0;
}

/* Room for ``more`` entries at a load of at most one half. */
static int
reserve(FpTable *t, Py_ssize_t more)
{
    size_t need = (size_t)(t->count + more) * 2;
    if (need <= t->mask + 1)
        return 0;
    size_t size = pow2_at_least(need, t->mask + 1);
    Entry *old = t->table;
    size_t old_size = t->mask + 1;
    t->table = NULL;
    if (alloc_table(t, size) < 0) {
        t->table = old;
        return -1;
    }
    for (size_t i = 0; i < old_size; i++)
        if (old[i].idx >= 0)
            *probe(t, old[i].fp) = old[i];
    PyMem_Free(old);
    return 0;
}

/* The hashes of a sequence's items into the scratch buffer; returns the fast sequence (a new
 * reference) or NULL. */
static PyObject *
hash_all(FpTable *t, PyObject *seq, Py_ssize_t *n_out)
{
    PyObject *fast = PySequence_Fast(seq, "fingerprints must be a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > t->scratch || t->first == NULL) {
        Py_ssize_t cap = (Py_ssize_t)pow2_at_least((size_t)n, 64);
        Py_hash_t *h = PyMem_Realloc(t->hashes, cap * sizeof(Py_hash_t));
        if (h == NULL) {
            Py_DECREF(fast);
            PyErr_NoMemory();
            return NULL;
        }
        t->hashes = h;
        Py_ssize_t *f = PyMem_Realloc(t->first, 2 * cap * sizeof(Py_ssize_t));
        if (f == NULL) {
            Py_DECREF(fast);
            PyErr_NoMemory();
            return NULL;
        }
        t->first = f;
        t->scratch = cap;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_hash_t h = PyObject_Hash(items[i]);
        if (h == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return NULL;
        }
        t->hashes[i] = h;
    }
    *n_out = n;
    return fast;
}

static int
fptable_init(FpTable *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    Py_ssize_t capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n", kwlist, &capacity))
        return -1;
    if (capacity < 1) {
        PyErr_Format(PyExc_ValueError, "FpTable: capacity must be >= 1, received %zd", capacity);
        return -1;
    }
    if (alloc_table(self, pow2_at_least((size_t)capacity * 2, 16)) < 0)
        return -1;
    self->count = 0;
    Py_XSETREF(self->handles, PyList_New(0));
    return self->handles == NULL ? -1 : 0;
}

static void
fptable_dealloc(FpTable *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->handles);
    PyMem_Free(self->table);
    PyMem_Free(self->hashes);
    PyMem_Free(self->first);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
fptable_traverse(FpTable *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handles);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
fptable_clear_refs(FpTable *self)
{
    Py_CLEAR(self->handles);
    return 0;
}

static int
ready(FpTable *self)
{
    if (self->handles == NULL || self->table == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FpTable is not initialised");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(add_doc,
"add($self, fingerprints, handles, /)\n--\n\n"
"Remember each handle under its fingerprint, in order, unless the fingerprint is held\n"
"already (by an earlier entry, or one earlier in this call). Returns the indices of those\n"
"not added: the caller decides what a clash means.");

static PyObject *
fptable_add(FpTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add() takes fingerprints, handles");
        return NULL;
    }
    if (!ready(self))
        return NULL;
    Py_ssize_t n;
    PyObject *fps = hash_all(self, args[0], &n);
    if (fps == NULL)
        return NULL;
    PyObject *hs = PySequence_Fast(args[1], "handles must be a sequence");
    PyObject *clash = hs == NULL ? NULL : PyList_New(0);
    if (clash == NULL)
        goto fail;
    if (PySequence_Fast_GET_SIZE(hs) != n) {
        PyErr_Format(PyExc_ValueError, "add: %zd fingerprints but %zd handles", n,
                     PySequence_Fast_GET_SIZE(hs));
        goto fail;
    }
    if (reserve(self, n) < 0)
        goto fail;
    PyObject **items = PySequence_Fast_ITEMS(hs);
    const Py_hash_t *h = self->hashes;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH < n)
            __builtin_prefetch(&self->table[slot_of(h[i + PREFETCH], self->mask)], 1);
        Entry *e = probe(self, h[i]);
        if (e->idx >= 0) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(clash, at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
            continue;
        }
        if (PyList_Append(self->handles, items[i]) < 0)
            goto fail;
        e->fp = h[i];
        e->idx = PyList_GET_SIZE(self->handles) - 1;
        self->count++;
    }
    Py_DECREF(fps);
    Py_DECREF(hs);
    return clash;
fail:
    Py_DECREF(fps);
    Py_XDECREF(hs);
    Py_XDECREF(clash);
    return NULL;
}

PyDoc_STRVAR(get_doc,
"get($self, fingerprint, /)\n--\n\n"
"The handle held under the fingerprint, or None.");

/* The entry of one fingerprint (idx -1: not held), or NULL with an error set. */
static Entry *
entry_of(FpTable *self, PyObject *fp)
{
    if (!ready(self))
        return NULL;
    Py_hash_t h = PyObject_Hash(fp);
    if (h == -1 && PyErr_Occurred())
        return NULL;
    return probe(self, h);
}

static PyObject *
fptable_get(FpTable *self, PyObject *fp)
{
    Entry *e = entry_of(self, fp);
    if (e == NULL)
        return NULL;
    if (e->idx < 0)
        Py_RETURN_NONE;
    return Py_NewRef(PyList_GET_ITEM(self->handles, e->idx));
}

PyDoc_STRVAR(put_doc,
"put($self, fingerprint, handle, /)\n--\n\n"
"Hold ``handle`` under a fingerprint already held, in place of what was there.");

static PyObject *
fptable_put(FpTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "put() takes fingerprint, handle");
        return NULL;
    }
    Entry *e = entry_of(self, args[0]);
    if (e == NULL)
        return NULL;
    if (e->idx < 0) {
        PyErr_SetString(PyExc_KeyError, "put: the fingerprint is not held");
        return NULL;
    }
    if (PyList_SetItem(self->handles, e->idx, Py_NewRef(args[1])) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(reset_doc,
"reset($self, /)\n--\n\n"
"Forget every entry; returns the list of handles held (the caller frees it when it likes).");

static PyObject *
fptable_reset(FpTable *self, PyObject *unused)
{
    (void)unused;
    if (!ready(self))
        return NULL;
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL)
        return NULL;
    memset(self->table, 0xff, (self->mask + 1) * sizeof(Entry));
    self->count = 0;
    PyObject *old = self->handles;
    self->handles = fresh;
    return old;
}

static Py_ssize_t
fptable_len(FpTable *self)
{
    return self->count;
}

PyDoc_STRVAR(candidates_doc,
"candidates(new, old, fingerprints, /)\n--\n\n"
"Which entries of a batch need a closer look: those whose fingerprint ``new`` or ``old``\n"
"holds, and those repeating an earlier fingerprint of the batch. Returns (indices, firsts):\n"
"for each index, the index of the first entry of the batch with its fingerprint (itself\n"
"when it is the first). Empty lists: the batch is new.");

static PyObject *
candidates(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "candidates() takes new, old, fingerprints");
        return NULL;
    }
    if (Py_TYPE(args[0]) != fptable_type || Py_TYPE(args[1]) != fptable_type) {
        PyErr_SetString(PyExc_TypeError, "candidates: new and old must be FpTables");
        return NULL;
    }
    FpTable *new = (FpTable *)args[0], *old = (FpTable *)args[1];
    if (!ready(new) || !ready(old))
        return NULL;
    Py_ssize_t n;
    PyObject *fps = hash_all(new, args[2], &n);
    if (fps == NULL)
        return NULL;
    PyObject *idx = PyList_New(0), *firsts = PyList_New(0);
    if (idx == NULL || firsts == NULL)
        goto fail;
    const Py_hash_t *h = new->hashes;
    /* the batch's own table, a power of two at least twice its size (hash_all made room
     * for 2 x scratch >= 2 x n): the index of the first entry of each hash */
    size_t bsize = pow2_at_least((size_t)n * 2, 16);
    Py_ssize_t *first = new->first;
    memset(first, 0xff, bsize * sizeof(Py_ssize_t));
    size_t bmask = bsize - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH < n) {
            __builtin_prefetch(&new->table[slot_of(h[i + PREFETCH], new->mask)]);
            __builtin_prefetch(&old->table[slot_of(h[i + PREFETCH], old->mask)]);
        }
        size_t s = slot_of(h[i], bmask);
        while (first[s] >= 0 && h[first[s]] != h[i])
            s = (s + 1) & bmask;
        Py_ssize_t at = first[s];
        if (at < 0)
            at = first[s] = i;
        if (at < i || probe(new, h[i])->idx >= 0 || probe(old, h[i])->idx >= 0) {
            PyObject *a = PyLong_FromSsize_t(i), *b = PyLong_FromSsize_t(at);
            int bad = a == NULL || b == NULL || PyList_Append(idx, a) < 0
                      || PyList_Append(firsts, b) < 0;
            Py_XDECREF(a);
            Py_XDECREF(b);
            if (bad)
                goto fail;
        }
    }
    Py_DECREF(fps);
    PyObject *out = PyTuple_Pack(2, idx, firsts);
    Py_DECREF(idx);
    Py_DECREF(firsts);
    return out;
fail:
    Py_DECREF(fps);
    Py_XDECREF(idx);
    Py_XDECREF(firsts);
    return NULL;
}

static PyMethodDef fptable_methods[] = {
    {"add", (PyCFunction)(void (*)(void))fptable_add, METH_FASTCALL, add_doc},
    {"get", (PyCFunction)fptable_get, METH_O, get_doc},
    {"put", (PyCFunction)(void (*)(void))fptable_put, METH_FASTCALL, put_doc},
    {"reset", (PyCFunction)fptable_reset, METH_NOARGS, reset_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(fptable_doc,
"FpTable(capacity)\n--\n\n"
"Handles by fingerprint, for about ``capacity`` entries (it grows past that). Internal.");

static PyType_Slot fptable_slots[] = {
    {Py_tp_doc, (void *)fptable_doc},
    {Py_tp_init, fptable_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, fptable_dealloc},
    {Py_tp_traverse, fptable_traverse},
    {Py_tp_clear, fptable_clear_refs},
    {Py_tp_methods, fptable_methods},
    {Py_mp_length, fptable_len},
    {0, NULL},
};

static PyType_Spec fptable_spec = {
    "heimdall.sources._seen.FpTable", sizeof(FpTable), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, fptable_slots,
};

static PyMethodDef module_methods[] = {
    {"candidates", (PyCFunction)(void (*)(void))candidates, METH_FASTCALL, candidates_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "heimdall.sources._seen",
    "Fingerprint tables for deduplication. Internal.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__seen(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    PyObject *tp = PyType_FromSpec(&fptable_spec);
    fptable_type = (PyTypeObject *)tp; /* this reference kept for good */
    if (tp == NULL || PyModule_AddObjectRef(m, "FpTable", tp) < 0) {
        Py_XDECREF(tp);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
