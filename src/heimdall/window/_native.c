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
 * Threads: append() holds the GIL throughout and calls no Python code once it has checked
 * that no other writer holds the stream's lock, so to threads of this process it is atomic.
 * A batch's writes hold the stream's lock; a large scatter (SCATTER_NOGIL_ROWS, _write.h)
 * runs without the GIL. For readers (in other threads, or other processes through shared
 * memory) the writer keeps the seqlock order: WSEQ raised before row memory is written, CSEQ
 * set equal after (see _ring.py). A large gather() copies with the GIL released and reads
 * again what a writer changed meanwhile.
 *
 * Files (one translation unit): _ring_core.h (RingCore's fields, shared helpers), _keys.h
 * (the key table), _write.h (the write path), _split.h (a large batch's scatter on two
 * threads), _read.h (lookups, the gather), _index.h (the key index's upkeep), and here the
 * two types and the module. (A batch's eviction plan is the native core's: native/.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <float.h>
#include <math.h>
#include <string.h>

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include "_ring_core.h" /* RingCore, the key table */
#include "_write.h"     /* pack_row, write_row, scatter */
#include "_read.h"      /* lookup, gather */
#include "_index.h"     /* the key index's upkeep, slots freed */

/* the Window class (view.py), set once by setup() */
static PyTypeObject *window_type = NULL;
static PyObject *str_append_py = NULL, *str_window_slow = NULL;

/* ---- RingCore ------------------------------------------------------------------------ */

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
    PyMem_Free(self->full);
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
    Py_ssize_t full_cap = slots < FULL_SLOTS ? (slots > 0 ? slots : 1) : FULL_SLOTS;
    long long *full = PyMem_Realloc(self->full, full_cap * sizeof(long long));
    if (full == NULL)
        return PyErr_NoMemory();
    self->full = full;
    self->full_cap = full_cap;
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
    self->full_count = 0; /* slots of the arrays before, if any */
    self->kind = kind;
    Py_RETURN_NONE;
}

static PyMethodDef ring_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))ring_bind, METH_FASTCALL, ring_bind_doc},
    {"write_row", (PyCFunction)(void (*)(void))ring_write_row, METH_FASTCALL,
     ring_write_row_doc},
    {"lookup", (PyCFunction)(void (*)(void))ring_lookup, METH_FASTCALL, ring_lookup_doc},
    {"scatter", (PyCFunction)(void (*)(void))ring_scatter, METH_FASTCALL, ring_scatter_doc},
    {"append_rows", (PyCFunction)(void (*)(void))ring_append_rows, METH_FASTCALL,
     ring_append_rows_doc},
    {"compact_full", (PyCFunction)ring_compact_full, METH_NOARGS, ring_compact_full_doc},
    {"gather", (PyCFunction)(void (*)(void))ring_gather, METH_FASTCALL, ring_gather_doc},
    {"index_put", (PyCFunction)(void (*)(void))ring_index_put, METH_FASTCALL,
     ring_index_put_doc},
    {"index_remove", (PyCFunction)ring_index_remove, METH_O, ring_index_remove_doc},
    {"own_slots_index", (PyCFunction)(void (*)(void))ring_own_slots_index, METH_FASTCALL,
     ring_own_slots_index_doc},
    {"free_slots", (PyCFunction)ring_free_slots, METH_O, ring_free_slots_doc},
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
    {"key_table_bytes", T_PYSSIZET, offsetof(RingCore, key_table_bytes), READONLY,
     "bytes of the C key table's buckets"},
    {"full_cap", T_PYSSIZET, offsetof(RingCore, full_cap), READONLY,
     "entries of the list of rings a scatter left full (8 bytes each)"},
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

PyDoc_STRVAR(set_split_doc,
"set_split(min_rows, /)\n--\n\n"
"Scatter batches of at least ``min_rows`` rows on two threads (0: never); returns the\n"
"previous value. The default is 4096 on a machine with two or more CPUs, else 0.");

static PyObject *
set_split(PyObject *module, PyObject *arg)
{
    Py_ssize_t v = PyLong_AsSsize_t(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, "set_split: min_rows must be >= 0");
        return NULL;
    }
    Py_ssize_t before = split_min_rows;
    split_min_rows = v;
    return PyLong_FromSsize_t(before);
}

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_O, setup_doc},
    {"set_split", set_split, METH_O, set_split_doc},
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
    split_min_rows = sysconf(_SC_NPROCESSORS_ONLN) >= 2 ? 4096 : 0;
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
