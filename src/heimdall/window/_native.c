/* The window store's hot paths in C: one event in, one window out, a batch's key lookups.
 *
 * Internal. ``RingCore`` is the base of ``_ring.Ring`` and holds what these paths read as C
 * fields (Python sets and reads them as attributes); ``StoreCore`` is the base of
 * ``store.WindowStore`` and implements ``append`` and ``window``. Each fast path handles the
 * common case whole and hands anything else (a mapping, a new key, an out-of-order row, a
 * value that needs a conversion, a writer holding the stream's lock, ...) to the Python
 * method it stands in for, before it has changed anything. So the Python code stays the one
 * place where the rules and the error messages live.
 *
 * Threads: every function here holds the GIL throughout and calls no Python code once it has
 * checked that no other writer holds the stream's lock, so to threads of this process a
 * write is atomic. For readers in other processes (shared memory) the writer keeps the
 * seqlock order: WSEQ raised before row memory is written, CSEQ set equal after (see
 * _ring.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <float.h>
#include <math.h>
#include <string.h>

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include "_keys.h"

/* meta columns, as in _kernels.py */
enum { POS = 0, FILL = 1, WSEQ = 2, CSEQ = 3, NEWEST = 4, TOUCH = 5, TICK = 6, KEYGEN = 7,
       META_COLS = 8 };

/* the Window class (view.py), set once by setup() */
static PyTypeObject *window_type = NULL;
static PyObject *str_append_py = NULL, *str_window_slow = NULL;

/* ---- RingCore ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *index;       /* dict: key -> slot */
    PyObject *slot_keys;   /* list: slot -> key */
    PyObject *lock;        /* threading.Lock of the writers */
    PyObject *values_flat; /* read-only (max_keys * cap, F) view of data */
    PyObject *fields;      /* tuple of field names */
    PyObject *name;        /* the stream's name */
    PyObject *buffers;     /* (data, ts, meta, stats): keeps the bound memory alive */
    PyObject *locked;      /* lock.locked, bound */
    Py_ssize_t cap, W, F, row_bytes;
    long long span_ns, lateness_ns, ttl_ns, next_sweep_ns, tick, events;
    long long reread; /* keys gather() read again: a writer changed them under the copy */
    char time_ordered, reject_nan;
    char kind; /* 'd', 'f', 'q', 'i': the row dtype (0 until bound) */
    char *data;
    long long *ts, *meta, *stats, *counters; /* counters: late, out of order, expired */
    char *scratch; /* one row */
    KeyTable keys; /* the index mirrored for the batch lookups (_keys.h) */
} RingCore;

static int
ring_traverse(RingCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->index);
    Py_VISIT(self->slot_keys);
    Py_VISIT(self->lock);
    Py_VISIT(self->values_flat);
    Py_VISIT(self->fields);
    Py_VISIT(self->name);
    Py_VISIT(self->buffers);
    Py_VISIT(self->locked);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
ring_clear(RingCore *self)
{
    Py_CLEAR(self->index);
    Py_CLEAR(self->slot_keys);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->values_flat);
    Py_CLEAR(self->fields);
    Py_CLEAR(self->name);
    Py_CLEAR(self->buffers);
    Py_CLEAR(self->locked);
    keys_free(&self->keys);
    self->kind = 0;
    return 0;
}

static void
ring_dealloc(RingCore *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ring_clear(self);
    PyMem_Free(self->scratch);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static char *
array_bytes(PyObject *obj, const char *what, Py_ssize_t min_bytes)
{
    if (!PyArray_Check(obj) || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj)
        || PyArray_NBYTES((PyArrayObject *)obj) < min_bytes) {
        PyErr_Format(PyExc_ValueError, "bind: %s must be a C-contiguous array of at least %zd "
                     "bytes", what, min_bytes);
        return NULL;
    }
    return PyArray_BYTES((PyArrayObject *)obj);
}

/* The key table from the dict index: empty, sized for the ring's slots, then every key. */
static int
keys_rebuild(RingCore *self, Py_ssize_t max_keys)
{
    if (keys_init(&self->keys, max_keys) < 0)
        return -1;
    if (self->index == NULL || !PyDict_CheckExact(self->index))
        return 0; /* an attached reader's index: lookups read it, not the table */
    PyObject *key, *slot;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->index, &pos, &key, &slot)) {
        if (!keys_plain(key)) {
            self->keys.exotic += 1;
            continue;
        }
        Py_ssize_t s = PyLong_AsSsize_t(slot);
        if ((s == -1 && PyErr_Occurred()) || keys_put(&self->keys, key, s) < 0)
            return -1;
    }
    return 0;
}

/* The table answers for the dict: it holds every key of it, and only plain ones. */
static inline int
keys_in_step(RingCore *self)
{
    return self->keys.entries != NULL && self->keys.exotic == 0
           && PyDict_CheckExact(self->index)
           && self->keys.count == PyDict_GET_SIZE(self->index);
}

PyDoc_STRVAR(ring_bind_doc,
"bind($self, data, ts, meta, stats, counters, /)\n--\n\n"
"Point the C paths at the ring's arrays (``stats``: the shared-memory stats, or None;\n"
"``counters``: int64 late, out of order, expired on arrival).\n"
"Set cap, W, F, row_bytes, lock, index, slot_keys, values_flat, fields and name first.");

static PyObject *
ring_bind(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "bind() takes data, ts, meta, stats, counters");
        return NULL;
    }
    if (self->lock == NULL || self->cap <= 0 || self->F <= 0) {
        PyErr_SetString(PyExc_ValueError, "bind: set lock, cap and F first");
        return NULL;
    }
    PyArray_Descr *d = PyArray_Check(args[0]) ? PyArray_DESCR((PyArrayObject *)args[0]) : NULL;
    char kind = 0;
    if (d != NULL && PyDataType_ISNOTSWAPPED(d)) {
        if (d->type_num == NPY_FLOAT64) kind = 'd';
        else if (d->type_num == NPY_FLOAT32) kind = 'f';
        else if (d->type_num == NPY_INT64) kind = 'q';
        else if (d->type_num == NPY_INT32) kind = 'i';
    }
    if (kind == 0 || self->row_bytes != self->F * (Py_ssize_t)PyDataType_ELSIZE(d)) {
        PyErr_SetString(PyExc_ValueError, "bind: data must be float64, float32, int64 or int32 "
                        "with row_bytes = F * itemsize");
        return NULL;
    }
    Py_ssize_t slots = PyArray_DIM((PyArrayObject *)args[0], 0);
    char *data = array_bytes(args[0], "data", slots * self->cap * self->row_bytes);
    char *ts = data ? array_bytes(args[1], "ts", slots * self->cap * 8) : NULL;
    char *meta = ts ? array_bytes(args[2], "meta", slots * META_COLS * 8) : NULL;
    if (meta == NULL)
        return NULL;
    char *stats = NULL;
    if (args[3] != Py_None && (stats = array_bytes(args[3], "stats", 8)) == NULL)
        return NULL;
    char *counters = array_bytes(args[4], "counters", 3 * 8);
    if (counters == NULL)
        return NULL;
    char *scratch = PyMem_Realloc(self->scratch, self->row_bytes);
    if (scratch == NULL)
        return PyErr_NoMemory();
    self->scratch = scratch;
    PyObject *locked = PyObject_GetAttrString(self->lock, "locked");
    if (locked == NULL)
        return NULL;
    PyObject *buffers = PyTuple_Pack(5, args[0], args[1], args[2], args[3], args[4]);
    if (buffers == NULL) {
        Py_DECREF(locked);
        return NULL;
    }
    if (keys_rebuild(self, slots) < 0) {
        Py_DECREF(locked);
        Py_DECREF(buffers);
        return NULL;
    }
    Py_XSETREF(self->locked, locked);
    Py_XSETREF(self->buffers, buffers);
    self->data = data;
    self->ts = (long long *)ts;
    self->meta = (long long *)meta;
    self->stats = (long long *)stats;
    self->counters = (long long *)counters;
    self->kind = kind;
    Py_RETURN_NONE;
}

/* Pack an exact tuple or list of F exact floats / ints into ``out`` as the row dtype.
 * 1: packed; 0: not a case for C (no error set; the Python path decides). */
static int
pack_row(RingCore *r, PyObject *seq, char *out)
{
    PyObject **items;
    if (PyTuple_CheckExact(seq))
        items = &PyTuple_GET_ITEM(seq, 0);
    else if (PyList_CheckExact(seq))
        items = ((PyListObject *)seq)->ob_item;
    else
        return 0;
    if (Py_SIZE(seq) != r->F)
        return 0;
    for (Py_ssize_t j = 0; j < r->F; j++) {
        PyObject *v = items[j];
        if (r->kind == 'd' || r->kind == 'f') {
            double x;
            if (PyFloat_CheckExact(v))
                x = PyFloat_AS_DOUBLE(v);
            else if (PyLong_CheckExact(v)) {
                x = PyLong_AsDouble(v);
                if (x == -1.0 && PyErr_Occurred()) {
                    PyErr_Clear();
                    return 0;
                }
            }
            else
                return 0;
            if (!isfinite(x)) {
                if (r->reject_nan)
                    return 0;
            }
            else if (r->kind == 'f' && fabs(x) > FLT_MAX)
                return 0;
            if (r->kind == 'd')
                memcpy(out + 8 * j, &x, 8);
            else {
                float f = (float)x;
                memcpy(out + 4 * j, &f, 4);
            }
        }
        else {
            if (!PyLong_CheckExact(v))
                return 0;
            int overflow;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (x == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return 0;
            }
            if (r->kind == 'q')
                memcpy(out + 8 * j, &x, 8);
            else {
                if (x < INT32_MIN || x > INT32_MAX)
                    return 0;
                int32_t y = (int32_t)x;
                memcpy(out + 4 * j, &y, 4);
            }
        }
    }
    return 1;
}

/* One row into a slot, by the seqlock: begin() raises WSEQ before any of the slot's rows
 * change, end() stamps the slot and sets CSEQ equal. */
static inline long long
begin(long long *m, long long by)
{
    long long w = m[WSEQ] + by;
    __atomic_store_n(&m[WSEQ], w, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return w;
}

static inline void
end(long long *m, long long w, long long now, long long tick)
{
    m[TOUCH] = now;
    m[TICK] = tick;
    __atomic_store_n(&m[CSEQ], w, __ATOMIC_RELEASE);
}

/* Move the newest ``keep`` rows of the slot to the front of its ring; returns keep. */
static inline long long
compact(RingCore *r, char *data, long long *ts, long long pos, long long keep)
{
    memmove(data, data + (pos - keep) * r->row_bytes, keep * r->row_bytes);
    memmove(ts, ts + (pos - keep), keep * 8);
    return keep;
}

/* The in-order append (between begin and end). */
static inline void
put_in_order(RingCore *r, long long *m, Py_ssize_t slot, const char *row, long long t)
{
    char *data = r->data + slot * r->cap * r->row_bytes;
    long long *ts = r->ts + slot * r->cap;
    long long pos = m[POS], fill = m[FILL];
    if (pos == r->cap)
        pos = compact(r, data, ts, pos, fill < r->W - 1 ? fill : r->W - 1);
    memcpy(data + pos * r->row_bytes, row, r->row_bytes);
    ts[pos] = t;
    pos += 1;
    m[POS] = pos;
    if (r->time_ordered || fill == 0 || t > m[NEWEST])
        m[NEWEST] = t;
    if (fill < r->W)
        fill += 1;
    if (r->span_ns > 0) {
        long long lo = m[NEWEST] - r->span_ns;
        while (fill > 1 && ts[pos - fill] < lo)
            fill -= 1;
    }
    m[FILL] = fill;
}

/* A time window's row older than its newest, within the lateness allowed: inserted in
 * order (between begin, by cap + 1 as it ends every view of the slot, and end). */
static inline void
put_out_of_order(RingCore *r, long long *m, Py_ssize_t slot, const char *row, long long t)
{
    char *data = r->data + slot * r->cap * r->row_bytes;
    long long *ts = r->ts + slot * r->cap;
    long long pos = m[POS], fill = m[FILL];
    if (pos == r->cap)
        pos = compact(r, data, ts, pos, fill);
    long long ins = pos;
    while (ins > pos - fill && ts[ins - 1] > t)
        ins -= 1;
    memmove(data + (ins + 1) * r->row_bytes, data + ins * r->row_bytes,
            (pos - ins) * r->row_bytes);
    memmove(ts + ins + 1, ts + ins, (pos - ins) * 8);
    memcpy(data + ins * r->row_bytes, row, r->row_bytes);
    ts[ins] = t;
    m[POS] = pos + 1;
    m[FILL] = fill < r->W ? fill + 1 : r->W;
}

static inline void
count_events(RingCore *r, Py_ssize_t n)
{
    r->tick += n;
    r->events += n;
    if (r->stats != NULL)
        r->stats[0] = r->events;
}

/* Append one row to ``slot`` (no other writer may run meanwhile). Returns 1 and writes
 * nothing when the row is older than a time window's newest (the caller's out-of-order
 * path); else 0. */
static int
write_row(RingCore *r, Py_ssize_t slot, const char *row, long long t, long long now)
{
    long long *m = r->meta + slot * META_COLS;
    if (r->time_ordered && m[FILL] && t < m[NEWEST])
        return 1;
    long long w = begin(m, 1);
    put_in_order(r, m, slot, row, t);
    end(m, w, now, r->tick);
    count_events(r, 1);
    return 0;
}

PyDoc_STRVAR(ring_write_row_doc,
"write_row($self, slot, row, ts_ns, now_ns, /)\n--\n\n"
"Append ``row`` (bytes-like, one packed row) to ``slot``; the caller holds ``lock``.\n"
"Returns False, writing nothing, when a time window's row is older than its newest.");

static PyObject *
ring_write_row(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "write_row() takes slot, row, ts_ns, now_ns");
        return NULL;
    }
    if (self->kind == 0) {
        PyErr_SetString(PyExc_RuntimeError, "write_row: the ring is not bound");
        return NULL;
    }
    Py_ssize_t slot = PyLong_AsSsize_t(args[0]);
    long long t = PyLong_AsLongLong(args[2]);
    long long now = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t slots = PyArray_DIM((PyArrayObject *)PyTuple_GET_ITEM(self->buffers, 2), 0);
    if (slot < 0 || slot >= slots) {
        PyErr_Format(PyExc_IndexError, "write_row: slot %zd out of range", slot);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != self->row_bytes) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "write_row: a row is %zd bytes; received %zd",
                     self->row_bytes, view.len);
        return NULL;
    }
    int late = write_row(self, slot, view.buf, t, now);
    PyBuffer_Release(&view);
    return PyBool_FromLong(!late);
}


static int
int64_vector(PyObject *obj, Py_ssize_t n, const char *what)
{
    if (!PyArray_Check(obj) || PyArray_NDIM((PyArrayObject *)obj) != 1
        || PyArray_DIM((PyArrayObject *)obj, 0) != n
        || PyArray_TYPE((PyArrayObject *)obj) != NPY_INT64
        || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj)) {
        PyErr_Format(PyExc_ValueError, "scatter: %s must be a contiguous int64 array of %zd",
                     what, n);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(ring_scatter_doc,
"scatter($self, slots, values, ts_ns, now_ns, /)\n--\n\n"
"Append validated rows (the caller holds ``lock``): row i of ``values`` (n, F), C-contiguous\n"
"in the ring's dtype, to slot ``slots[i]``, in order. In a time window a row older than its\n"
"key's newest is inserted in order, or counted and dropped when later than the lateness\n"
"allowed or older than the span.");

#define PREFETCH 8

static PyObject *
ring_scatter(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "scatter() takes slots, values, ts_ns, now_ns");
        return NULL;
    }
    if (self->kind == 0) {
        PyErr_SetString(PyExc_RuntimeError, "scatter: the ring is not bound");
        return NULL;
    }
    PyArrayObject *meta_arr = (PyArrayObject *)PyTuple_GET_ITEM(self->buffers, 2);
    PyArrayObject *data_arr = (PyArrayObject *)PyTuple_GET_ITEM(self->buffers, 0);
    Py_ssize_t n = PyArray_Check(args[0]) ? PyArray_SIZE((PyArrayObject *)args[0]) : -1;
    if (!int64_vector(args[0], n, "slots") || !int64_vector(args[2], n, "ts_ns"))
        return NULL;
    PyArrayObject *values = (PyArrayObject *)args[1];
    if (!PyArray_Check(args[1]) || PyArray_NDIM(values) != 2 || PyArray_DIM(values, 0) != n
        || PyArray_DIM(values, 1) != self->F || !PyArray_IS_C_CONTIGUOUS(values)
        || !PyArray_EquivTypes(PyArray_DESCR(values), PyArray_DESCR(data_arr))) {
        PyErr_Format(PyExc_ValueError, "scatter: values must be a contiguous (%zd, %zd) array "
                     "of the ring's dtype", n, self->F);
        return NULL;
    }
    long long now = PyLong_AsLongLong(args[3]);
    if (now == -1 && PyErr_Occurred())
        return NULL;
    const long long *slots = (const long long *)PyArray_DATA((PyArrayObject *)args[0]);
    const long long *ts_in = (const long long *)PyArray_DATA((PyArrayObject *)args[2]);
    const char *rows = PyArray_BYTES(values);
    Py_ssize_t max_slots = PyArray_DIM(meta_arr, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= max_slots) {
            PyErr_Format(PyExc_IndexError, "scatter: slot %lld out of range", slots[i]);
            return NULL;
        }
    }
    long long *counters = self->counters;
    long long tick0 = self->tick;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* the rows are far apart in memory: ask for the next rows' lines early */
        if (i + PREFETCH < n)
            __builtin_prefetch(self->meta + slots[i + PREFETCH] * META_COLS, 1);
        if (i + PREFETCH / 2 < n) {
            Py_ssize_t s2 = slots[i + PREFETCH / 2];
            long long p2 = self->meta[s2 * META_COLS + POS];
            __builtin_prefetch(self->data + (s2 * self->cap + p2) * self->row_bytes, 1);
            __builtin_prefetch(self->ts + s2 * self->cap + p2, 1);
        }
        Py_ssize_t s = slots[i];
        long long t = ts_in[i];
        const char *row = rows + i * self->row_bytes;
        long long *m = self->meta + s * META_COLS;
        long long w;
        if (self->time_ordered && m[FILL] > 0 && t < m[NEWEST]) {
            long long newest = m[NEWEST];
            if (t < newest - self->lateness_ns) {
                counters[0] += 1;
                continue;
            }
            if (self->span_ns > 0 && t < newest - self->span_ns) {
                counters[2] += 1;
                continue;
            }
            counters[1] += 1;
            w = begin(m, self->cap + 1);
            put_out_of_order(self, m, s, row, t);
        }
        else {
            w = begin(m, 1);
            put_in_order(self, m, s, row, t);
        }
        end(m, w, now, tick0 + i);
    }
    count_events(self, n);
    Py_RETURN_NONE;
}

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
 * half way, the key held in that bucket is prefetched when it is another object than the
 * one looked up (an equal key made afresh, as by a decoder, is compared byte by byte). So a
 * batch's misses overlap. 1: every slot written (``absent`` for a key not held); 0: a key
 * not held under ``strict``; -1: a key that is not an exact str or int (no error set). */
#define LOOKAHEAD 8
static int
lookup_table(RingCore *self, PyObject *keys, int strict, long long absent, long long *slots)
{
    const KeyTable *t = &self->keys;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject **items = PySequence_Fast_ITEMS(keys);
    Py_hash_t *hs = (Py_hash_t *)slots; /* the hash of key i, until its slot replaces it */
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
        if (m >= 0 && m < n) {
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

PyDoc_STRVAR(ring_index_put_doc,
"index_put($self, key, slot, /)\n--\n\n"
"``index[key] = slot``, in the dict and in the C key table.");

static PyObject *
ring_index_put(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "index_put() takes a key and an int slot");
        return NULL;
    }
    PyObject *key = args[0];
    if (self->index == NULL || !PyDict_CheckExact(self->index)) {
        PyErr_SetString(PyExc_TypeError, "index_put: the ring's index is not a dict");
        return NULL;
    }
    Py_ssize_t slot = PyLong_AsSsize_t(args[1]);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    int held = PyDict_Contains(self->index, key);
    if (held < 0 || PyDict_SetItem(self->index, key, args[1]) < 0)
        return NULL;
    if (!keys_plain(key)) {
        self->keys.exotic += !held;
        Py_RETURN_NONE;
    }
    if (keys_put(&self->keys, key, slot) < 0) {
        if (!held) { /* as it was */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyDict_DelItem(self->index, key);
            PyErr_Restore(type, value, tb);
        }
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ring_index_remove_doc,
"index_remove($self, key, /)\n--\n\n"
"``index.pop(key, None)``, in the dict and in the C key table.");

static PyObject *
ring_index_remove(RingCore *self, PyObject *key)
{
    if (self->index == NULL || !PyDict_CheckExact(self->index)) {
        PyErr_SetString(PyExc_TypeError, "index_remove: the ring's index is not a dict");
        return NULL;
    }
    int held = PyDict_Contains(self->index, key);
    if (held < 0)
        return NULL;
    if (!held)
        Py_RETURN_NONE;
    if (keys_plain(key) && keys_remove(&self->keys, key) < 0)
        return NULL;
    if (!keys_plain(key) && self->keys.exotic > 0)
        self->keys.exotic -= 1; /* (an equal plain key held instead: out of step until
                                   index_rebuild, and lookups read the dict) */
    if (PyDict_DelItem(self->index, key) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ring_index_rebuild_doc,
"index_rebuild($self, /)\n--\n\n"
"Rebuild the C key table from ``index`` (after ``index`` was replaced).");

static PyObject *
ring_index_rebuild(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->kind == 0) {
        PyErr_SetString(PyExc_RuntimeError, "index_rebuild: the ring is not bound");
        return NULL;
    }
    Py_ssize_t slots = PyArray_DIM((PyArrayObject *)PyTuple_GET_ITEM(self->buffers, 2), 0);
    if (keys_rebuild(self, slots) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ring_index_check_doc,
"index_check($self, /)\n--\n\n"
"Whether the C key table answers for ``index``: it holds exactly the dict's keys, each with\n"
"the dict's slot, and every entry can be found from its home bucket (for tests).");

static PyObject *
ring_index_check(RingCore *self, PyObject *Py_UNUSED(ignored))
{
    if (!keys_in_step(self))
        Py_RETURN_FALSE;
    const KeyTable *t = &self->keys;
    Py_ssize_t seen = 0;
    for (uint64_t i = 0; i <= t->mask; i++) {
        KeyEntry *e = &t->entries[i];
        if (e->key == NULL)
            continue;
        seen += 1;
        Py_hash_t h = keys_hash(e->key);
        PyObject *slot = PyDict_GetItemWithError(self->index, e->key);
        if (slot == NULL || keys_find(t, e->key, h) != e || (uint32_t)h != e->hash
            || PyLong_AsSsize_t(slot) != e->slot) {
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_FALSE;
        }
    }
    return PyBool_FromLong(seen == t->count);
}

static PyMethodDef ring_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))ring_bind, METH_FASTCALL, ring_bind_doc},
    {"write_row", (PyCFunction)(void (*)(void))ring_write_row, METH_FASTCALL,
     ring_write_row_doc},
    {"lookup", (PyCFunction)(void (*)(void))ring_lookup, METH_FASTCALL, ring_lookup_doc},
    {"scatter", (PyCFunction)(void (*)(void))ring_scatter, METH_FASTCALL, ring_scatter_doc},
    {"gather", (PyCFunction)(void (*)(void))ring_gather, METH_FASTCALL, ring_gather_doc},
    {"index_put", (PyCFunction)(void (*)(void))ring_index_put, METH_FASTCALL,
     ring_index_put_doc},
    {"index_remove", (PyCFunction)ring_index_remove, METH_O, ring_index_remove_doc},
    {"index_rebuild", (PyCFunction)ring_index_rebuild, METH_NOARGS, ring_index_rebuild_doc},
    {"index_check", (PyCFunction)ring_index_check, METH_NOARGS, ring_index_check_doc},
    {NULL, NULL, 0, NULL},
};

#define RING_OBJ(name, doc) \
    {#name, T_OBJECT, offsetof(RingCore, name), 0, doc}
static PyMemberDef ring_members[] = {
    RING_OBJ(index, "key -> slot"),
    RING_OBJ(slot_keys, "slot -> key"),
    RING_OBJ(lock, "the writers' lock"),
    RING_OBJ(values_flat, "read-only (slots * cap, F) view of the rows"),
    RING_OBJ(fields, "field names"),
    RING_OBJ(name, "the stream's name"),
    {"cap", T_PYSSIZET, offsetof(RingCore, cap), 0, "rows per slot"},
    {"W", T_PYSSIZET, offsetof(RingCore, W), 0, "window rows"},
    {"F", T_PYSSIZET, offsetof(RingCore, F), 0, "fields"},
    {"row_bytes", T_PYSSIZET, offsetof(RingCore, row_bytes), 0, "bytes per row"},
    {"span_ns", T_LONGLONG, offsetof(RingCore, span_ns), 0, "time window span (0: count)"},
    {"lateness_ns", T_LONGLONG, offsetof(RingCore, lateness_ns), 0, "allowed lateness"},
    {"ttl_ns", T_LONGLONG, offsetof(RingCore, ttl_ns), 0, "idle TTL (0: none)"},
    {"next_sweep_ns", T_LONGLONG, offsetof(RingCore, next_sweep_ns), 0, "next idle sweep"},
    {"tick", T_LONGLONG, offsetof(RingCore, tick), 0, "writes so far (LRU clock)"},
    {"events", T_LONGLONG, offsetof(RingCore, events), 0, "events appended"},
    {"reread", T_LONGLONG, offsetof(RingCore, reread), READONLY,
     "keys gather() read again after a writer changed them under its copy"},
    {"time_ordered", T_BOOL, offsetof(RingCore, time_ordered), 0, "a time window"},
    {"reject_nan", T_BOOL, offsetof(RingCore, reject_nan), 0, "non-finite values rejected"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot ring_slots[] = {
    {Py_tp_doc, "The C fields of a Ring (see _ring.py)."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, ring_dealloc},
    {Py_tp_traverse, ring_traverse},
    {Py_tp_clear, ring_clear},
    {Py_tp_methods, ring_methods},
    {Py_tp_members, ring_members},
    {0, NULL},
};

static PyType_Spec ring_spec = {
    "heimdall.window._native.RingCore", sizeof(RingCore), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, ring_slots,
};

static PyTypeObject *ring_type = NULL;

/* ---- StoreCore ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *rings;    /* dict: stream -> Ring */
    PyObject *clock_ns; /* callable -> int nanoseconds */
} StoreCore;

static int
store_traverse(StoreCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->rings);
    Py_VISIT(self->clock_ns);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
store_clear(StoreCore *self)
{
    Py_CLEAR(self->rings);
    Py_CLEAR(self->clock_ns);
    return 0;
}

static void
store_dealloc(StoreCore *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    store_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static RingCore *
ring_of(StoreCore *self, PyObject *stream)
{
    if (self->rings == NULL || !PyDict_CheckExact(self->rings) || !PyUnicode_CheckExact(stream))
        return NULL;
    PyObject *ring = PyDict_GetItemWithError(self->rings, stream);
    if (ring == NULL || !PyObject_TypeCheck(ring, ring_type)) {
        PyErr_Clear();
        return NULL;
    }
    RingCore *r = (RingCore *)ring;
    if (r->kind == 0 || r->index == NULL || !PyDict_CheckExact(r->index))
        return NULL;
    return r;
}

/* the slot of a plain key, or -1 */
static Py_ssize_t
slot_of(RingCore *r, PyObject *key)
{
    if (!keys_plain(key)) /* exact str and int hash and compare in C: no Python code runs */
        return -1;
    if (keys_in_step(r)) {
        KeyEntry *e = keys_find(&r->keys, key, keys_hash(key));
        return e != NULL ? e->slot : -1;
    }
    PyObject *slot = PyDict_GetItemWithError(r->index, key);
    if (slot == NULL || !PyLong_CheckExact(slot)) {
        PyErr_Clear();
        return -1;
    }
    return PyLong_AsSsize_t(slot);
}

static PyObject *
call_method(PyObject *self, PyObject *name, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *stack[8];
    if (total > 7) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < total; i++)
        stack[i + 1] = args[i];
    return PyObject_VectorcallMethod(name, stack, (nargs + 1), kwnames);
}

PyDoc_STRVAR(store_append_doc,
"append($self, stream, key, values, ts_ns=None)\n--\n\n"
"Append one event. Blocks only on other writers of the same stream.\n\n"
"``values`` is a mapping holding every field (other entries are ignored) or a sequence\n"
"of F numbers in field order. Event time: ``ts_ns``, else the spec's time field in a\n"
"mapping, else arrival time. Raises SchemaError (nothing is written) on bad input.");

static PyObject *
store_append(StoreCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *ts_obj = Py_None;
    if (kwnames != NULL) {
        if (nargs == 3 && PyTuple_GET_SIZE(kwnames) == 1
            && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "ts_ns") == 0)
            ts_obj = args[3];
        else
            goto python;
    }
    else if (nargs == 4)
        ts_obj = args[3];
    else if (nargs != 3)
        goto python;
    RingCore *r = ring_of(self, args[0]);
    if (r == NULL)
        goto python;
    long long now = 0, t;
    if (ts_obj == Py_None || r->ttl_ns) {
        /* the clock is Python code: read it before the lock is checked */
        PyObject *clock = self->clock_ns ? PyObject_CallNoArgs(self->clock_ns) : NULL;
        if (clock == NULL || !PyLong_CheckExact(clock)) {
            Py_XDECREF(clock);
            PyErr_Clear();
            goto python;
        }
        now = PyLong_AsLongLong(clock);
        Py_DECREF(clock);
        if (now == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto python;
        }
        if (r->ttl_ns && now >= r->next_sweep_ns)
            goto python; /* an idle sweep is due */
    }
    if (ts_obj == Py_None)
        t = now;
    else if (PyLong_CheckExact(ts_obj)) {
        int overflow;
        t = PyLong_AsLongLongAndOverflow(ts_obj, &overflow);
        if (overflow || (t == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            goto python;
        }
    }
    else
        goto python;
    if (!pack_row(r, args[2], r->scratch))
        goto python;
    Py_ssize_t slot = slot_of(r, args[1]);
    if (slot < 0)
        goto python;
    /* From here on no Python code runs: if no writer holds the lock now, none can take it
     * before this write is done. */
    PyObject *held = PyObject_CallNoArgs(r->locked);
    if (held == NULL) {
        PyErr_Clear();
        goto python;
    }
    int busy = held != Py_False;
    Py_DECREF(held);
    if (busy || write_row(r, slot, r->scratch, t, now))
        goto python;
    Py_RETURN_NONE;
python:
    return call_method((PyObject *)self, str_append_py, args, nargsf, kwnames);
}

PyDoc_STRVAR(store_window_doc,
"window($self, stream, key)\n--\n\n"
"The key's window as a zero-copy read-only view. O(1); never blocks the writer.");

static PyObject *
store_window(StoreCore *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 2 || window_type == NULL)
        goto python;
    PyObject *stream = args[0], *key = args[1];
    RingCore *r = ring_of(self, stream);
    if (r == NULL || r->values_flat == NULL || !PyArray_Check(r->values_flat)
        || r->slot_keys == NULL || !PyList_CheckExact(r->slot_keys) || r->fields == NULL)
        goto python;
    Py_ssize_t slot = slot_of(r, key);
    if (slot < 0 || slot >= PyList_GET_SIZE(r->slot_keys))
        goto python;
    long long *m = r->meta + slot * META_COLS;
    long long c0 = __atomic_load_n(&m[CSEQ], __ATOMIC_ACQUIRE);
    long long b = m[POS], n = m[FILL];
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&m[WSEQ], __ATOMIC_RELAXED) != c0)
        goto python; /* a writer is mid-append */
    PyObject *owner = PyList_GET_ITEM(r->slot_keys, slot);
    if (owner != key) {
        if (Py_TYPE(owner) != Py_TYPE(key))
            goto python;
        int same = PyObject_RichCompareBool(owner, key, Py_EQ);
        if (same != 1) {
            PyErr_Clear();
            goto python;
        }
    }
    PyArrayObject *flat = (PyArrayObject *)r->values_flat;
    long long a = b - n;
    npy_intp dims[2] = {n, r->F};
    PyArray_Descr *descr = PyArray_DESCR(flat);
    Py_INCREF(descr);
    PyObject *values = PyArray_NewFromDescr(
        &PyArray_Type, descr, 2, dims, NULL,
        PyArray_BYTES(flat) + (slot * r->cap + a) * r->row_bytes,
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (values == NULL)
        return NULL;
    Py_INCREF(flat);
    if (PyArray_SetBaseObject((PyArrayObject *)values, (PyObject *)flat) < 0) {
        Py_DECREF(values);
        return NULL;
    }
    PyObject *item[4] = {PyLong_FromSsize_t(slot), PyLong_FromLongLong(a),
                         PyLong_FromLongLong(b), PyLong_FromLongLong(c0)};
    PyObject *w = window_type->tp_alloc(window_type, 10);
    if (w == NULL || !item[0] || !item[1] || !item[2] || !item[3]) {
        Py_XDECREF(w);
        Py_DECREF(values);
        for (int i = 0; i < 4; i++)
            Py_XDECREF(item[i]);
        return NULL;
    }
    PyTuple_SET_ITEM(w, 0, values);
    PyTuple_SET_ITEM(w, 1, Py_NewRef((PyObject *)r));
    for (int i = 0; i < 4; i++)
        PyTuple_SET_ITEM(w, 2 + i, item[i]);
    PyTuple_SET_ITEM(w, 6, Py_NewRef(key));
    PyTuple_SET_ITEM(w, 7, Py_NewRef(stream));
    PyTuple_SET_ITEM(w, 8, Py_NewRef(r->fields));
    PyTuple_SET_ITEM(w, 9, Py_NewRef(Py_None));
    return w;
python:
    return call_method((PyObject *)self, str_window_slow, args, nargsf, kwnames);
}

static PyMethodDef store_methods[] = {
    {"append", (PyCFunction)(void (*)(void))store_append, METH_FASTCALL | METH_KEYWORDS,
     store_append_doc},
    {"window", (PyCFunction)(void (*)(void))store_window, METH_FASTCALL | METH_KEYWORDS,
     store_window_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef store_members[] = {
    {"_rings", T_OBJECT, offsetof(StoreCore, rings), 0, "stream -> Ring"},
    {"_clock_ns", T_OBJECT, offsetof(StoreCore, clock_ns), 0, "the clock"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot store_slots[] = {
    {Py_tp_doc, "The C paths of a WindowStore (see store.py)."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, store_dealloc},
    {Py_tp_traverse, store_traverse},
    {Py_tp_clear, store_clear},
    {Py_tp_methods, store_methods},
    {Py_tp_members, store_members},
    {0, NULL},
};

static PyType_Spec store_spec = {
    "heimdall.window._native.StoreCore", sizeof(StoreCore), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, store_slots,
};

/* ---- module -------------------------------------------------------------------------- */

PyDoc_STRVAR(setup_doc,
"setup(window_type, /)\n--\n\n"
"The Window class window() builds (a tuple subclass of 10 items, see view.py).");

static PyObject *
setup(PyObject *module, PyObject *tp)
{
    if (!PyType_Check(tp) || !PyType_IsSubtype((PyTypeObject *)tp, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "setup() takes a tuple subclass");
        return NULL;
    }
    Py_XSETREF(window_type, (PyTypeObject *)Py_NewRef(tp));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(first_nonfinite_doc,
"first_nonfinite(values, /)\n--\n\n"
"The flat index of the first NaN or infinity in a C-contiguous float64 or float32 array,\n"
"or -1 if there is none; None for another array (the caller checks it in numpy).");

#define SCAN_NONFINITE(T)                                                                  \
    do {                                                                                   \
        const T *x = (const T *)PyArray_DATA(a);                                           \
        for (Py_ssize_t i = 0; i < n; i += 64) { /* blocks: the test vectorizes */         \
            Py_ssize_t end = i + 64 < n ? i + 64 : n;                                      \
            int bad = 0;                                                                   \
            for (Py_ssize_t j = i; j < end; j++)                                           \
                bad |= !(x[j] - x[j] == 0); /* NaN or inf: x - x is NaN */                 \
            if (bad)                                                                       \
                for (Py_ssize_t j = i; j < end; j++)                                       \
                    if (!(x[j] - x[j] == 0))                                               \
                        return PyLong_FromSsize_t(j);                                      \
        }                                                                                  \
    } while (0)

static PyObject *
first_nonfinite(PyObject *module, PyObject *arr)
{
    if (!PyArray_Check(arr) || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)arr)
        || !PyDataType_ISNOTSWAPPED(PyArray_DESCR((PyArrayObject *)arr)))
        Py_RETURN_NONE;
    PyArrayObject *a = (PyArrayObject *)arr;
    Py_ssize_t n = PyArray_SIZE(a);
    if (PyArray_TYPE(a) == NPY_FLOAT64)
        SCAN_NONFINITE(double);
    else if (PyArray_TYPE(a) == NPY_FLOAT32)
        SCAN_NONFINITE(float);
    else
        Py_RETURN_NONE;
    return PyLong_FromLong(-1);
}

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_O, setup_doc},
    {"first_nonfinite", first_nonfinite, METH_O, first_nonfinite_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "heimdall.window._native",
    "The window store's hot paths in C (internal; see _native.c).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    import_array();
    str_append_py = PyUnicode_InternFromString("_append_py");
    str_window_slow = PyUnicode_InternFromString("_window_slow");
    if (str_append_py == NULL || str_window_slow == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    ring_type = (PyTypeObject *)PyType_FromSpec(&ring_spec);
    PyObject *store_type = PyType_FromSpec(&store_spec);
    if (ring_type == NULL || store_type == NULL
        || PyModule_AddObjectRef(m, "RingCore", (PyObject *)ring_type) < 0
        || PyModule_AddObjectRef(m, "StoreCore", store_type) < 0) {
        Py_XDECREF(store_type);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(store_type);
    return m;
}
