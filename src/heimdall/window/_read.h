/* The read path of a ring: a batch's key lookups (through the key table, _keys.h) and
 * windows()'s gather. Internal; included by _native.c only (after _ring_core.h).
 */
#ifndef HEIMDALL_READ_H
#define HEIMDALL_READ_H

#include "_ring_core.h"

/* lookup() over an index that is a mapping but not a dict: one __getitem__ per key. */
static PyObject *
lookup_mapping(PyObject *index, PyObject *keys, int strict, long long absent,
               PyArrayObject *out)
{
    long long *slots = (long long *)PyArray_DATA(out);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *slot = PyObject_GetItem(index, PyList_GET_ITEM(keys, i));
        if (slot == NULL) {
            if (!strict && PyErr_ExceptionMatches(PyExc_KeyError)) {
                PyErr_Clear();
                slots[i] = absent;
                continue;
            }
            Py_DECREF(out);
            if (!strict)
                return NULL;
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        slots[i] = PyLong_AsLongLong(slot);
        Py_DECREF(slot);
        if (slots[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return (PyObject *)out;
}

/* lookup() through the key table. Each key's hash is taken LOOKAHEAD keys ahead of its
 * probe, and its home bucket prefetched then (its key object LOOKAHEAD keys before that);
 * half way, while the keys probed are equal objects made afresh (as by a decoder), compared
 * byte by byte, the key held in that bucket is prefetched. While they are the objects the
 * table holds (a caller that keeps its keys), that step is skipped: it would read the bucket
 * before its line arrives and wait for it. So a batch's misses overlap. 1: every slot
 * written (``absent`` for a key not held); 0: a key not held under ``strict``; -1: a key that
 * is not an exact str or int (no error set). */
#define LOOKAHEAD 8
static int
lookup_table(RingCore *self, PyObject *keys, int strict, long long absent, long long *slots)
{
    const KeyTable *t = &self->keys;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject **items = PySequence_Fast_ITEMS(keys);
    Py_hash_t *hs = (Py_hash_t *)slots; /* the hash of key i, until its slot replaces it */
    int same = 1; /* the last key probed was the object the table holds */
    for (Py_ssize_t j = 0; j < n + LOOKAHEAD; j++) {
        if (j < n) {
            if (j + LOOKAHEAD < n)
                __builtin_prefetch(items[j + LOOKAHEAD], 0);
            PyObject *key = items[j];
            if (!keys_plain(key))
                return -1;
            Py_hash_t h = keys_hash(key);
            hs[j] = h;
            __builtin_prefetch(&t->entries[keys_home(t, h)], 0);
        }
        Py_ssize_t m = j - LOOKAHEAD / 2;
        if (!same && m >= 0 && m < n) {
            PyObject *held = t->entries[keys_home(t, hs[m])].key;
            if (held != NULL && held != items[m]) {
                __builtin_prefetch(held, 0);
                __builtin_prefetch((char *)held + 64, 0); /* a str's characters */
            }
        }
        Py_ssize_t i = j - LOOKAHEAD;
        if (i < 0)
            continue;
        KeyEntry *e = keys_find(t, items[i], hs[i]);
        same = e != NULL && e->key == items[i];
        if (e != NULL)
            slots[i] = e->slot;
        else if (strict)
            return 0;
        else
            slots[i] = absent;
    }
    return 1;
}

PyDoc_STRVAR(ring_lookup_doc,
"lookup($self, keys, absent=None, /)\n--\n\n"
"Each key's slot as an int64 array. A key the index does not hold: ``absent`` (an int) in\n"
"its place, or, when ``absent`` is None, the whole answer is None (an unhashable key too).\n"
"With an int ``absent`` an unhashable key raises the dict's TypeError.");

static PyObject *
ring_lookup(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "lookup() takes keys and an optional absent");
        return NULL;
    }
    PyObject *keys = args[0];
    long long absent = 0;
    int strict = nargs < 2 || args[1] == Py_None; /* a missing key answers None */
    if (!strict && (absent = PyLong_AsLongLong(args[1])) == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(keys) || self->index == NULL) {
        PyErr_SetString(PyExc_TypeError, "lookup() takes a list (and a bound ring)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    npy_intp dims[1] = {n};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT64);
    if (out == NULL)
        return NULL;
    long long *slots = (long long *)PyArray_DATA(out);
    if (!PyDict_CheckExact(self->index)) /* an attached reader's index over shared memory */
        return lookup_mapping(self->index, keys, strict, absent, out);
    if (keys_in_step(self)) {
        int r = lookup_table(self, keys, strict, absent, slots);
        if (r == 1)
            return (PyObject *)out;
        if (r == 0) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        /* r == -1: a key of another type; the dict decides */
    }
    PyObject **found = (PyObject **)slots; /* the same 8 bytes per key, read in place below */
    PyObject *index = self->index;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH < n) /* its hash is read from the key object */
            __builtin_prefetch(PyList_GET_ITEM(keys, i + PREFETCH), 0);
        PyObject *slot = PyDict_GetItemWithError(index, PyList_GET_ITEM(keys, i));
        if (slot == NULL && !strict && !PyErr_Occurred()) {
            found[i] = NULL;
            continue;
        }
        if (slot == NULL || !PyLong_CheckExact(slot)) {
            Py_DECREF(out);
            if (!strict)
                return NULL; /* unhashable: the dict's TypeError */
            PyErr_Clear(); /* unhashable: the Python path names it */
            Py_RETURN_NONE;
        }
        /* the int is read in a second pass: its memory is fetched meanwhile */
        __builtin_prefetch(slot, 0);
        found[i] = slot;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        slots[i] = found[i] ? PyLong_AsLongLong(found[i]) : absent;
    return (PyObject *)out;
}

PyDoc_STRVAR(ring_gather_doc,
"gather($self, slots, keys, rows, span_ns, /)\n--\n\n"
"``windows()``'s read in one pass: each key's window (its last ``rows`` rows, within\n"
"``span_ns`` of its newest when > 0) copied right-aligned into new (B, rows, F) values and\n"
"(B, rows) timestamps, zeros before it, and its length; a slot of -1 (a key not held) reads\n"
"as empty. Returns (values, ts_ns, lengths), or None when the Python path must decide: a\n"
"slot a writer was changing, a slot that is no longer its key's (the owner compared by\n"
"identity, or as an exact str / int), or a ring whose keys are not a list. A large read\n"
"copies with the GIL released (the seqlock vouches for each key's rows).");

/* Copy one key's window into its output row under the seqlock; 1: consistent. Reads only
 * C memory (no GIL needed); bounds are checked before they index the ring. */
static inline int
gather_one(RingCore *r, Py_ssize_t s, Py_ssize_t W, long long span, char *row_v,
           long long *row_t, long long *len_out, long long *gen_out)
{
    Py_ssize_t rb = r->row_bytes, cap = r->cap;
    long long *m = r->meta + s * META_COLS;
    *gen_out = __atomic_load_n(&m[KEYGEN], __ATOMIC_ACQUIRE);
    long long c0 = __atomic_load_n(&m[CSEQ], __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&m[WSEQ], __ATOMIC_RELAXED) != c0)
        return 0;
    long long b = m[POS], len = m[FILL];
    if (len > W)
        len = W;
    if (len < 0 || b > cap || b - len < 0)
        return 0; /* torn bounds: the WSEQ re-read would fail too */
    const long long *st = r->ts + s * cap;
    if (span > 0) { /* as _kernels._select */
        long long lo = m[NEWEST] - span;
        while (len > 0 && st[b - len] < lo)
            len -= 1;
    }
    long long a = b - len;
    memset(row_v, 0, (W - len) * rb);
    memset(row_t, 0, (W - len) * 8);
    memcpy(row_v + (W - len) * rb, r->data + (s * cap + a) * rb, len * rb);
    memcpy(row_t + (W - len), st + a, len * 8);
    *len_out = len;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&m[WSEQ], __ATOMIC_RELAXED) == c0;
}

#define GATHER_NOGIL_BYTES (256 << 10) /* copies smaller than this keep the GIL */

static PyObject *
ring_gather(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "gather() takes slots, keys, rows, span_ns");
        return NULL;
    }
    if (self->kind == 0 || self->slot_keys == NULL || !PyList_CheckExact(self->slot_keys))
        Py_RETURN_NONE;
    PyObject *keys = args[1];
    Py_ssize_t n = PyList_Check(keys) ? PyList_GET_SIZE(keys) : -1;
    if (n < 0 || !int64_vector(args[0], n, "slots"))
        return NULL;
    Py_ssize_t W = PyLong_AsSsize_t(args[2]);
    long long span = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (W < 0 || W > self->W) {
        PyErr_Format(PyExc_ValueError, "gather: rows must be in [0, %zd]", self->W);
        return NULL;
    }
    PyArrayObject *data_arr = (PyArrayObject *)PyTuple_GET_ITEM(self->buffers, 0);
    Py_ssize_t max_slots = PyArray_DIM(data_arr, 0);
    const long long *slots = (const long long *)PyArray_DATA((PyArrayObject *)args[0]);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (slots[i] >= max_slots) {
            PyErr_Format(PyExc_IndexError, "gather: slot %lld out of range", slots[i]);
            return NULL;
        }
    }
    npy_intp dv[3] = {n, W, self->F}, dl[1] = {n};
    PyArray_Descr *descr = PyArray_DESCR(data_arr);
    Py_INCREF(descr);
    PyObject *values = PyArray_NewFromDescr(&PyArray_Type, descr, 3, dv, NULL, NULL, 0, NULL);
    PyObject *ts = PyArray_SimpleNew(2, dv, NPY_INT64);
    PyObject *lengths = PyArray_SimpleNew(1, dl, NPY_INT64);
    long long *gens = PyMem_Malloc((n > 0 ? n : 1) * sizeof(long long));
    if (values == NULL || ts == NULL || lengths == NULL || gens == NULL) {
        Py_XDECREF(values);
        Py_XDECREF(ts);
        Py_XDECREF(lengths);
        PyMem_Free(gens);
        return gens == NULL ? PyErr_NoMemory() : NULL;
    }
    char *out_v = PyArray_BYTES((PyArrayObject *)values);
    long long *out_t = (long long *)PyArray_DATA((PyArrayObject *)ts);
    long long *out_n = (long long *)PyArray_DATA((PyArrayObject *)lengths);
    Py_ssize_t rb = self->row_bytes, cap = self->cap;
    int ok = 1;
    /* the copies: C memory only, so a large read lets other threads run meanwhile (a
     * writer among them changes a slot only under the seqlock, which the read checks); a
     * key a writer changed under the copy is read again once the GIL is back, when no
     * writer of this process can be mid-write */
    PyThreadState *save = (Py_ssize_t)n * W * (rb + 8) >= GATHER_NOGIL_BYTES
                              ? PyEval_SaveThread() : NULL;
    Py_ssize_t torn = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* the next keys' lines early: a batch of random keys reads cold memory */
        if (i + 4 < n && slots[i + 4] >= 0)
            __builtin_prefetch(self->meta + slots[i + 4] * META_COLS, 0);
        if (i + 2 < n && slots[i + 2] >= 0) {
            Py_ssize_t s2 = slots[i + 2];
            long long b2 = self->meta[s2 * META_COLS + POS];
            long long a2 = b2 - W > 0 ? (b2 < cap ? b2 - W : cap - W) : 0;
            __builtin_prefetch(self->data + (s2 * cap + a2) * rb, 0);
            __builtin_prefetch(self->ts + s2 * cap + a2, 0);
        }
        char *row_v = out_v + i * W * rb;
        long long *row_t = out_t + i * W;
        if (slots[i] < 0) { /* not held */
            memset(row_v, 0, W * rb);
            memset(row_t, 0, W * 8);
            out_n[i] = 0;
            continue;
        }
        if (!gather_one(self, slots[i], W, span, row_v, row_t, &out_n[i], &gens[i])) {
            out_n[i] = -1; /* read it again below */
            torn += 1;
            if (save == NULL)
                break; /* with the GIL held throughout, a second read would see the same */
        }
    }
    if (save != NULL) {
        PyEval_RestoreThread(save);
        for (Py_ssize_t i = 0; i < n && torn > 0; i++) {
            if (out_n[i] != -1)
                continue;
            torn -= 1;
            self->reread += 1;
            if (!gather_one(self, slots[i], W, span, out_v + i * W * rb, out_t + i * W,
                            &out_n[i], &gens[i]))
                break;
        }
    }
    ok = torn == 0;
    /* each slot was its key's from before its read (KEYGEN read first) to now: the owner is
     * read, then KEYGEN again */
    PyObject **key_items = PySequence_Fast_ITEMS(keys);
    for (Py_ssize_t i = 0; i < n && ok; i++) {
        if (slots[i] < 0)
            continue;
        PyObject *owner = PyList_GET_ITEM(self->slot_keys, slots[i]), *key = key_items[i];
        ok = owner == key || (keys_plain(owner) && keys_plain(key) && keys_equal(owner, key));
        long long *m = self->meta + slots[i] * META_COLS;
        ok = ok && __atomic_load_n(&m[KEYGEN], __ATOMIC_ACQUIRE) == gens[i];
    }
    PyMem_Free(gens);
    if (!ok) {
        Py_DECREF(values);
        Py_DECREF(ts);
        Py_DECREF(lengths);
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NNN)", values, ts, lengths);
}

#endif
