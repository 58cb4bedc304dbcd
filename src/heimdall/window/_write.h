/* The write path of a ring: pack one row, append it under the seqlock, compact the slot,
 * scatter a batch. Internal; included by _native.c only (after _ring_core.h).
 *
 * The seqlock, for readers in other processes: begin() raises WSEQ (a release fence after
 * it) before any of the slot's rows change, end() stamps the slot and sets CSEQ equal with
 * a release store.
 */
#ifndef HEIMDALL_WRITE_H
#define HEIMDALL_WRITE_H

#include "_ring_core.h"

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

/* One packed row into the ring: a copy of a size known at compile time for the common row
 * sizes (a call to memcpy per row costs as much as the rest of an append). */
static inline void
copy_row(char *dst, const char *src, Py_ssize_t n)
{
    switch (n) {
    case 8: memcpy(dst, src, 8); break;
    case 16: memcpy(dst, src, 16); break;
    case 24: memcpy(dst, src, 24); break;
    case 32: memcpy(dst, src, 32); break;
    case 48: memcpy(dst, src, 48); break;
    case 64: memcpy(dst, src, 64); break;
    default: memcpy(dst, src, n);
    }
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
    copy_row(data + pos * r->row_bytes, row, r->row_bytes);
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
    copy_row(data + ins * r->row_bytes, row, r->row_bytes);
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
        r->stats[0] = r->events; /* S_EVENTS (native/src/layout.rs) */
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


PyDoc_STRVAR(ring_scatter_doc,
"scatter($self, slots, values, ts_ns, now_ns, /)\n--\n\n"
"Append validated rows (the caller holds ``lock``): row i of ``values`` (n, F), C-contiguous\n"
"in the ring's dtype, to slot ``slots[i]``, in order. In a time window a row older than its\n"
"key's newest is inserted in order, or counted and dropped when later than the lateness\n"
"allowed or older than the span.");

#define PREFETCH 8

/* Row k of a scatter's share: ``order[k * step]``, or k itself when ``order`` is NULL. */
static inline Py_ssize_t
row_of(const long long *order, Py_ssize_t step, Py_ssize_t k)
{
    return order != NULL ? (Py_ssize_t)order[k * step] : k;
}

/* Rows ``row_of(order, step, k)`` for k < count of a validated batch, in that order; late,
 * out-of-order and expired rows counted in ``counters``. Touches no Python object: the
 * split scatter runs it on a second thread. */
static void
scatter_rows(RingCore *self, const long long *slots, const long long *ts_in, const char *rows,
             const long long *order, Py_ssize_t step, Py_ssize_t count, long long now,
             long long tick0, long long *counters)
{
    /* the rows are far apart in memory: ask for the lines of the next ones early */
    for (Py_ssize_t k = 0; k < count; k++) {
        if (k + PREFETCH < count)
            __builtin_prefetch(self->meta + slots[row_of(order, step, k + PREFETCH)] * META_COLS,
                               1);
        if (k + PREFETCH / 2 < count) {
            Py_ssize_t s2 = slots[row_of(order, step, k + PREFETCH / 2)];
            long long p2 = self->meta[s2 * META_COLS + POS];
            __builtin_prefetch(self->data + (s2 * self->cap + p2) * self->row_bytes, 1);
            __builtin_prefetch(self->ts + s2 * self->cap + p2, 1);
        }
        Py_ssize_t i = row_of(order, step, k), s = slots[i];
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
            if (m[POS] == self->cap) { /* compacted ahead, by the next large batch */
                Py_ssize_t at = __atomic_fetch_add(&self->full_count, 1, __ATOMIC_RELAXED);
                if (at < self->full_cap)
                    self->full[at] = s;
            }
        }
        end(m, w, now, tick0 + i);
    }
}

/* A large batch's scatter on two threads, split by slot parity: each thread first lists its
 * rows (branch-free, in batch order) in ``order``, the caller's from the front and the
 * helper's from the back (``order`` has n + 1 entries: each list writes one spare entry past
 * its end, the same one), then writes them. */
typedef struct {
    RingCore *ring;
    const long long *slots, *ts_in;
    const char *rows;
    long long *order;
    Py_ssize_t n;
    long long now, tick0;
    long long counters[3]; /* late, out of order, expired: the helper's share */
} ScatterJob;

/* The rows of parity ``part`` into ``order`` at step +1 (part 0) or -1 (part 1, from
 * order[n]); returns how many. */
static Py_ssize_t
list_part(const long long *slots, Py_ssize_t n, long long part, long long *order)
{
    Py_ssize_t c = 0, step = part ? -1 : 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        order[c * step] = i;
        c += (slots[i] & 1) == part;
    }
    return c;
}

static void
scatter_part(ScatterJob *j, long long part, long long *counters)
{
    long long *order = part ? j->order + j->n : j->order;
    Py_ssize_t count = list_part(j->slots, j->n, part, order);
    scatter_rows(j->ring, j->slots, j->ts_in, j->rows, order, part ? -1 : 1, count, j->now,
                 j->tick0, counters);
}

static void
scatter_helper(void *arg)
{
    ScatterJob *j = arg;
    scatter_part(j, 1, j->counters);
}

/* A scatter of this many rows or more runs without the GIL: other threads read and write
 * meanwhile. The caller holds the stream's lock, which every other writer of the stream
 * takes (append()'s C path, finding it held, goes the Python way and waits on it), and the
 * rows it writes are read by the seqlock, as readers in other processes read them. */
#define SCATTER_NOGIL_ROWS 32768

/* Scatter a validated batch (with the GIL held): on two threads when it is large enough,
 * else on this one. */
static void
scatter_batch(RingCore *r, const long long *slots, const long long *ts_in, const char *rows,
              Py_ssize_t n, long long now, long long tick0)
{
    int split = split_wanted(n);
    long long *order = split ? PyMem_Malloc((n + 1) * sizeof(long long)) : NULL;
    if (split && order == NULL) {
        split_release();
        split = 0;
    }
    PyThreadState *released = n >= SCATTER_NOGIL_ROWS ? PyEval_SaveThread() : NULL;
    if (!split)
        scatter_rows(r, slots, ts_in, rows, NULL, 1, n, now, tick0, r->counters);
    else {
        ScatterJob job = {r, slots, ts_in, rows, order, n, now, tick0, {0, 0, 0}};
        split_begin(scatter_helper, &job);
        scatter_part(&job, 0, r->counters);
        split_end(1); /* the helper's half, here if it has not started it */
        for (int k = 0; k < 3; k++)
            r->counters[k] += job.counters[k];
    }
    if (released != NULL)
        PyEval_RestoreThread(released);
    if (split) {
        split_release();
        PyMem_Free(order);
    }
}

/* The rows of a batch's ``values`` (n, F), C-contiguous in the ring's dtype; NULL with
 * ValueError otherwise. */
static const char *
batch_rows(RingCore *self, PyObject *obj, Py_ssize_t n, const char *what)
{
    PyArrayObject *values = (PyArrayObject *)obj;
    PyArrayObject *data_arr = (PyArrayObject *)PyTuple_GET_ITEM(self->buffers, 0);
    if (!PyArray_Check(obj) || PyArray_NDIM(values) != 2 || PyArray_DIM(values, 0) != n
        || PyArray_DIM(values, 1) != self->F || !PyArray_IS_C_CONTIGUOUS(values)
        || !PyArray_EquivTypes(PyArray_DESCR(values), PyArray_DESCR(data_arr))) {
        PyErr_Format(PyExc_ValueError, "%s: values must be a contiguous (%zd, %zd) array of "
                     "the ring's dtype", what, n, self->F);
        return NULL;
    }
    return PyArray_BYTES(values);
}

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
    Py_ssize_t n = PyArray_Check(args[0]) ? PyArray_SIZE((PyArrayObject *)args[0]) : -1;
    if (!int64_vector(args[0], n, "slots") || !int64_vector(args[2], n, "ts_ns"))
        return NULL;
    const char *rows = batch_rows(self, args[1], n, "scatter");
    if (rows == NULL)
        return NULL;
    long long now = PyLong_AsLongLong(args[3]);
    if (now == -1 && PyErr_Occurred())
        return NULL;
    const long long *slots = (const long long *)PyArray_DATA((PyArrayObject *)args[0]);
    const long long *ts_in = (const long long *)PyArray_DATA((PyArrayObject *)args[2]);
    Py_ssize_t max_slots = PyArray_DIM(meta_arr, 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= max_slots) {
            PyErr_Format(PyExc_IndexError, "scatter: slot %lld out of range", slots[i]);
            return NULL;
        }
    }
    scatter_batch(self, slots, ts_in, rows, n, now, self->tick);
    count_events(self, n);
    Py_RETURN_NONE;
}

/* ---- append_rows: a batch's lookup and scatter in one call ------------------------------ */

/* A slot a scatter left full compacts at its next append. The helper does that compaction
 * ahead, while the caller looks up the next batch's keys, so the scatter has less to move.
 * A slot so compacted keeps every row of its window (FILL rows move to the front, one more
 * than the append's own compaction keeps, so one append fewer fits before the next), and its
 * seqlock counts the move as one write: a view it overwrites reads as no longer valid, as
 * the formula in _ring.py says. TOUCH and TICK stay: no event came. */
typedef struct {
    RingCore *ring;
    int stop;        /* set by the caller when its lookup is done */
    Py_ssize_t done; /* slots compacted */
} AheadJob;

static void
compact_ahead(void *arg)
{
    AheadJob *j = arg;
    RingCore *r = j->ring;
    Py_ssize_t n = r->full_count < r->full_cap ? r->full_count : r->full_cap;
    while (n > 0 && !__atomic_load_n(&j->stop, __ATOMIC_ACQUIRE)) {
        Py_ssize_t s = r->full[--n];
        long long *m = r->meta + s * META_COLS;
        if (m[POS] != r->cap)
            continue; /* compacted by an append since, or the slot was reset */
        long long w = begin(m, 1);
        m[POS] = compact(r, r->data + s * r->cap * r->row_bytes, r->ts + s * r->cap, r->cap,
                         m[FILL]);
        __atomic_store_n(&m[CSEQ], w, __ATOMIC_RELEASE);
        j->done += 1;
    }
    r->full_count = n;
}

PyDoc_STRVAR(ring_compact_full_doc,
"compact_full($self, /)\n--\n\n"
"Compact now, on this thread, the rings scatters left full: what the helper\n"
"does during a large batch's lookup (the caller holds ``lock``). Returns how many.");

static PyObject *
ring_compact_full(RingCore *self, PyObject *unused)
{
    AheadJob job = {self, 0, 0};
    if (self->kind != 0)
        compact_ahead(&job);
    return PyLong_FromSsize_t(job.done);
}

static int lookup_table(RingCore *self, PyObject *keys, int strict, long long absent,
                        long long *slots); /* _read.h */

PyDoc_STRVAR(ring_append_rows_doc,
"append_rows($self, keys, values, ts_ns, now_ns, /)\n--\n\n"
"``lookup`` then ``scatter`` in one call (the caller holds ``lock``): True when every key\n"
"is held and the rows are written; False when a key is not held (nothing written); None\n"
"when the key table cannot answer for these keys (nothing written: use lookup). A large\n"
"batch's lookup runs beside the compaction, on the helper thread, of the rings scatters\n"
"left full.");

static PyObject *
ring_append_rows(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "append_rows() takes keys, values, ts_ns, now_ns");
        return NULL;
    }
    if (self->kind == 0 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "append_rows() takes a list (and a bound ring)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    if (!int64_vector(args[2], n, "ts_ns"))
        return NULL;
    const char *rows = batch_rows(self, args[1], n, "append_rows");
    if (rows == NULL)
        return NULL;
    long long now = PyLong_AsLongLong(args[3]);
    if (now == -1 && PyErr_Occurred())
        return NULL;
    if (!keys_in_step(self)) /* it checks that the index is a dict */
        Py_RETURN_NONE;
    long long *slots = PyMem_Malloc((n > 0 ? n : 1) * sizeof(long long));
    if (slots == NULL)
        return PyErr_NoMemory();
    AheadJob ahead = {self, 0, 0};
    int helped = self->full_count > 0 && split_wanted(n);
    if (helped)
        split_begin(compact_ahead, &ahead);
    int found = lookup_table(self, args[0], 1, 0, slots);
    if (helped) {
        __atomic_store_n(&ahead.stop, 1, __ATOMIC_RELEASE);
        split_end(0); /* not started by now: left to the appends */
        split_release();
    }
    if (found == 1) {
        scatter_batch(self, slots, (const long long *)PyArray_DATA((PyArrayObject *)args[2]),
                      rows, n, now, self->tick);
        count_events(self, n);
    }
    PyMem_Free(slots);
    if (found == -1)
        Py_RETURN_NONE;
    return PyBool_FromLong(found == 1);
}

#endif
