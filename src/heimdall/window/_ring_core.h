/* The C fields of a Ring (RingCore) and what the write and read paths share. Internal;
 * included by _native.c only (one translation unit, after Python.h and numpy's headers).
 */
#ifndef HEIMDALL_RING_CORE_H
#define HEIMDALL_RING_CORE_H

#include "_keys.h"
#include "_split.h"

/* meta columns, as in _kernels.py */
enum { POS = 0, FILL = 1, WSEQ = 2, CSEQ = 3, NEWEST = 4, TOUCH = 5, TICK = 6, KEYGEN = 7,
       META_COLS = 8 };

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
    Py_ssize_t key_table_bytes; /* the key table's buckets */
    char time_ordered, reject_nan;
    char kind; /* 'd', 'f', 'q', 'i': the row dtype (0 until bound) */
    char *data;
    long long *ts, *meta, *stats, *counters; /* counters: late, out of order, expired */
    char *scratch; /* one row */
    KeyTable keys; /* the index mirrored for the batch lookups (_keys.h) */
    long long *full; /* slots a scatter left full (POS == cap), ``full_cap`` at most: the
                      * helper compacts them during the next large batch's lookup (_write.h) */
    Py_ssize_t full_count; /* entries written to ``full`` (past full_cap: some dropped) */
    Py_ssize_t full_cap;   /* min(slots, FULL_SLOTS), allocated by bind */
} RingCore;

#define FULL_SLOTS 8192

/* The table answers for the dict: it holds every key of it, and only plain ones. */
static inline int
keys_in_step(RingCore *self)
{
    return self->keys.entries != NULL && self->keys.exotic == 0
           && PyDict_CheckExact(self->index)
           && self->keys.count == PyDict_GET_SIZE(self->index);
}

static int
int64_vector(PyObject *obj, Py_ssize_t n, const char *what)
{
    if (!PyArray_Check(obj) || PyArray_NDIM((PyArrayObject *)obj) != 1
        || PyArray_DIM((PyArrayObject *)obj, 0) != n
        || PyArray_TYPE((PyArrayObject *)obj) != NPY_INT64
        || !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)obj)) {
        PyErr_Format(PyExc_ValueError, "%s must be a contiguous int64 array of %zd",
                     what, n);
        return 0;
    }
    return 1;
}

#endif
