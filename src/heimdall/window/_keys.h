/* A ring's key index in C: key -> slot, for the batch lookups of _native.c. Internal.
 *
 * ``Ring.index`` (a dict) stays the index Python code reads; this table mirrors it
 * (``RingCore.index_put`` / ``index_remove`` / ``index_rebuild`` change both) so that a
 * batch's keys are found without the dict's chain of loads: dict entry, key object, then the
 * int object holding the slot. Here each key costs one probe into a flat array whose entries
 * hold the slot and 32 bits of the hash inline, and the probes of the next keys are
 * prefetched while this one is read, so the cache misses of a batch of random keys overlap.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones), at most
 * 3/4 full (sized once, for max_keys). The table holds a reference to each key, so a key
 * found by identity (the same object, as when a caller reuses its key objects) is never
 * compared. Only exact ``str`` and ``int`` keys are held; while the index holds any other
 * key (a subclass), ``exotic`` > 0 and lookups use the dict, whose rules (``__hash__``,
 * ``__eq__``) such keys may change.
 */
#ifndef HEIMDALL_KEYS_H
#define HEIMDALL_KEYS_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    PyObject *key; /* NULL: empty */
    int32_t slot;
    uint32_t hash; /* the low 32 bits of the key's Python hash */
} KeyEntry;

typedef struct {
    KeyEntry *entries;
    uint64_t mask;    /* size - 1 */
    int shift;        /* 64 - log2(size) */
    Py_ssize_t count; /* keys held (exact str / int) */
    Py_ssize_t exotic; /* keys of the index this table does not hold */
} KeyTable;

static inline int
keys_plain(PyObject *key)
{
    return PyUnicode_CheckExact(key) || PyLong_CheckExact(key);
}

/* The hash of an exact str or int (it cannot fail): a str's cached hash read in place. */
static inline Py_hash_t
keys_hash(PyObject *key)
{
    Py_hash_t h = PyUnicode_CheckExact(key) ? ((PyASCIIObject *)key)->hash : -1;
    return h != -1 ? h : PyObject_Hash(key);
}

/* the home bucket: Fibonacci hashing, so ints in a run (hash = value) spread evenly */
static inline uint64_t
keys_home(const KeyTable *t, Py_hash_t h)
{
    return ((uint64_t)h * 0x9E3779B97F4A7C15ULL) >> t->shift;
}

static inline int
keys_equal(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (PyUnicode_CheckExact(a)) {
        if (!PyUnicode_CheckExact(b))
            return 0;
        Py_ssize_t n = PyUnicode_GET_LENGTH(a);
        return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b)
               && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), n * PyUnicode_KIND(a)) == 0;
    }
    /* exact ints: compared in C, no Python code runs */
    return PyLong_CheckExact(b) && PyObject_RichCompareBool(a, b, Py_EQ) == 1;
}

static void
keys_free(KeyTable *t)
{
    if (t->entries != NULL) {
        for (uint64_t i = 0; i <= t->mask; i++)
            Py_XDECREF(t->entries[i].key);
        PyMem_Free(t->entries);
    }
    memset(t, 0, sizeof(*t));
}

/* An empty table for up to ``max_keys`` keys. 0, or -1 with MemoryError. */
static int
keys_init(KeyTable *t, Py_ssize_t max_keys)
{
    keys_free(t);
    uint64_t size = 8;
    int bits = 3;
    while (size * 3 < (uint64_t)max_keys * 4 + 4) {
        size <<= 1;
        bits += 1;
    }
    t->entries = PyMem_Calloc(size, sizeof(KeyEntry));
    if (t->entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->mask = size - 1;
    t->shift = 64 - bits;
    return 0;
}

/* The entry holding ``key`` (hash ``h``), or NULL. Reads only; no Python code runs. */
static inline KeyEntry *
keys_find(const KeyTable *t, PyObject *key, Py_hash_t h)
{
    uint64_t i = keys_home(t, h);
    for (;;) {
        KeyEntry *e = &t->entries[i];
        if (e->key == NULL)
            return NULL;
        if (e->hash == (uint32_t)h && keys_equal(e->key, key))
            return e;
        i = (i + 1) & t->mask;
    }
}

/* key -> slot for an exact str or int (a key the table holds: its slot changes); the
 * caller counts other keys in ``exotic``. 0, or -1 with an error set. */
static int
keys_put(KeyTable *t, PyObject *key, Py_ssize_t slot)
{
    if (t->entries == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the ring's key table is not bound");
        return -1;
    }
    Py_hash_t h = keys_hash(key);
    if (h == -1)
        return -1;
    KeyEntry *e = keys_find(t, key, h);
    if (e != NULL) {
        e->slot = (int32_t)slot;
        return 0;
    }
    if ((uint64_t)(t->count + 1) * 4 > (t->mask + 1) * 3) {
        PyErr_SetString(PyExc_OverflowError, "the ring's key table is full");
        return -1;
    }
    uint64_t i = keys_home(t, h);
    while (t->entries[i].key != NULL)
        i = (i + 1) & t->mask;
    Py_INCREF(key);
    t->entries[i] = (KeyEntry){key, (int32_t)slot, (uint32_t)h};
    t->count += 1;
    return 0;
}

/* Drop an exact str or int ``key`` if held. 0, or -1 with an error set. */
static int
keys_remove(KeyTable *t, PyObject *key)
{
    if (t->entries == NULL)
        return 0;
    Py_hash_t h = keys_hash(key);
    if (h == -1)
        return -1;
    KeyEntry *e = keys_find(t, key, h);
    if (e == NULL)
        return 0;
    PyObject *held = e->key;
    /* backward shift: move each later entry of the run into the hole if its home allows */
    uint64_t hole = (uint64_t)(e - t->entries), j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        KeyEntry *f = &t->entries[j];
        if (f->key == NULL)
            break;
        uint64_t home = keys_home(t, keys_hash(f->key));
        /* f may move to the hole unless its home lies cyclically in (hole, j] */
        if (((j - home) & t->mask) >= ((j - hole) & t->mask)) {
            t->entries[hole] = *f;
            hole = j;
        }
    }
    t->entries[hole] = (KeyEntry){NULL, 0, 0};
    t->count -= 1;
    Py_DECREF(held);
    return 0;
}

#endif
