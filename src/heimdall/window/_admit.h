/* The eviction plan of a batch into a full ring: the loop of ``_admit.admit_batch``.
 * Internal; included by _native.c.
 *
 * Each event, in row order, takes the next of the candidates (slots, least recently updated
 * first) that no earlier row touched. The events: a new key's first row (``new_rows``,
 * ascending: key g), and the first row ``first[v]`` of a victim ``v`` that the batch touches
 * later, where its key comes back (a min-heap of those rows; ``held`` gives a row's slot
 * before the batch, so a row names its victim). Touches no Python object.
 */
#ifndef HEIMDALL_ADMIT_H
#define HEIMDALL_ADMIT_H

/* The heap of rows where victims come back: push and pop of the smallest. */
static inline void
heap_push(long long *heap, Py_ssize_t *h, long long x)
{
    Py_ssize_t i = (*h)++;
    while (i > 0 && heap[(i - 1) / 2] > x) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = x;
}

static inline long long
heap_pop(long long *heap, Py_ssize_t *h)
{
    long long top = heap[0], x = heap[--*h];
    Py_ssize_t i = 0, n = *h;
    for (;;) {
        Py_ssize_t j = 2 * i + 1;
        if (j >= n)
            break;
        if (j + 1 < n && heap[j + 1] < heap[j])
            j += 1;
        if (heap[j] >= x)
            break;
        heap[i] = heap[j];
        i = j;
    }
    heap[i] = x;
    return top;
}

/* Returns the evictions planned (victims[e] for who[e]: g, or -v - 1 for the key of slot v
 * coming back) and sets *stop: n when every event has its slot, or the row of the first
 * event no candidate is left for. Returns -1 when the candidates run out and are not all the
 * live slots (``exhaustive`` is 0): the caller asks again with more. */
static Py_ssize_t
plan_loop(const long long *new_rows, Py_ssize_t G, const long long *held, const long long *first,
          const long long *cand, Py_ssize_t C, long long n, int exhaustive, long long *victims,
          long long *who, long long *heap, long long *stop)
{
    Py_ssize_t g = 0, c = 0, e = 0, h = 0; /* heap: at most one entry per eviction */
    *stop = n;
    while (g < G || h > 0) {
        long long row, tag;
        if (h > 0 && (g == G || heap[0] < new_rows[g])) {
            row = heap_pop(heap, &h);
            tag = -held[row] - 1;
        }
        else {
            row = new_rows[g];
            tag = g++;
        }
        while (c < C && first[cand[c]] <= row)
            c++; /* touched by a row before this one: more recent than any untouched key */
        if (c == C) {
            if (!exhaustive)
                return -1;
            *stop = row;
            return e;
        }
        long long v = cand[c++];
        if (first[v] < n)
            heap_push(heap, &h, first[v]); /* the victim's key comes back at its first row */
        victims[e] = v;
        who[e++] = tag;
    }
    return e;
}

PyDoc_STRVAR(plan_evictions_doc,
"plan_evictions(new_rows, held, first, candidates, n, exhaustive, victims, who, /)\n--\n\n"
"The eviction loop of ``_admit.admit_batch`` (int64 arrays; see _admit.h). ``held``: each of\n"
"the batch's n rows' slot before it (a new key's: any); ``first``: each slot's first row in\n"
"the batch, n if none; ``victims`` and ``who`` as long as ``candidates``, written. Returns\n"
"(evictions, stop), evictions -1 when more candidates are needed (not ``exhaustive``).");

static PyObject *
plan_evictions(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "plan_evictions() takes 8 arguments");
        return NULL;
    }
    long long n = PyLong_AsLongLong(args[4]);
    int exhaustive = PyObject_IsTrue(args[5]);
    if ((n == -1 && PyErr_Occurred()) || exhaustive < 0)
        return NULL;
    Py_ssize_t G = PyArray_Check(args[0]) ? PyArray_SIZE((PyArrayObject *)args[0]) : -1;
    Py_ssize_t S = PyArray_Check(args[2]) ? PyArray_SIZE((PyArrayObject *)args[2]) : -1;
    Py_ssize_t C = PyArray_Check(args[3]) ? PyArray_SIZE((PyArrayObject *)args[3]) : -1;
    if (!int64_vector(args[0], G, "new_rows") || !int64_vector(args[1], n, "held")
        || !int64_vector(args[2], S, "first") || !int64_vector(args[3], C, "candidates")
        || !int64_vector(args[6], C, "victims") || !int64_vector(args[7], C, "who"))
        return NULL;
    const long long *held = PyArray_DATA((PyArrayObject *)args[1]);
    const long long *first = PyArray_DATA((PyArrayObject *)args[2]);
    const long long *cand = PyArray_DATA((PyArrayObject *)args[3]);
    for (Py_ssize_t i = 0; i < S; i++)
        if (first[i] < 0 || first[i] > n || (first[i] < n && held[first[i]] != i)) {
            PyErr_Format(PyExc_ValueError, "plan_evictions: first[%zd] is not slot %zd's row",
                         i, i);
            return NULL;
        }
    for (Py_ssize_t i = 0; i < C; i++)
        if (cand[i] < 0 || cand[i] >= S) {
            PyErr_Format(PyExc_IndexError, "plan_evictions: candidate %lld out of range",
                         cand[i]);
            return NULL;
        }
    long long *heap = PyMem_Malloc((C > 0 ? C : 1) * sizeof(long long));
    if (heap == NULL)
        return PyErr_NoMemory();
    long long stop;
    Py_ssize_t e = plan_loop(PyArray_DATA((PyArrayObject *)args[0]), G, held, first, cand, C,
                             n, exhaustive, PyArray_DATA((PyArrayObject *)args[6]),
                             PyArray_DATA((PyArrayObject *)args[7]), heap, &stop);
    PyMem_Free(heap);
    return Py_BuildValue("nL", e, stop);
}

#endif
