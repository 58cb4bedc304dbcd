/* The owner's writes to a shared-memory store's key index (``SharedIndex`` in _shared.py,
 * whose readers probe it from other processes). Internal; included by _native.c.
 *
 * The layout is _shared.py's: ``keys`` (max_keys, 64) uint8, a slot's key encoded as one
 * length byte then the bytes (``encode_key``: "s" + UTF-8, or "i" + int64 little-endian);
 * ``table`` int64 (a power of two), slot + 1 per entry, 0 empty, linear probing from
 * ``(crc32(key bytes) * 0x9E3779B1) & mask``; ``version`` int64[1], odd while a removal
 * shifts entries back (a reader that saw it change probes again). The order of the writes
 * is the one readers rely on: a put writes the key's bytes, then its length, then the
 * table entry; a removal raises the version, clears and shifts, raises it again, then
 * clears the length.
 */
#ifndef HEIMDALL_SHARED_INDEX_H
#define HEIMDALL_SHARED_INDEX_H

#define SHM_KEY_BYTES 64

/* zlib's crc32 (the reflected IEEE polynomial), so that both sides find the same home */
static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static inline uint32_t
crc32_of(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct {
    int64_t *table;
    uint64_t mask;
    unsigned char *keys; /* max_keys rows of SHM_KEY_BYTES */
    Py_ssize_t max_keys;
    int64_t *version;
} ShmIndex;

/* The arrays of a SharedIndex, checked. 1, or 0 with an error set. */
static int
shm_index_of(PyObject *table, PyObject *keys, PyObject *version, ShmIndex *ix)
{
    PyArrayObject *t = (PyArrayObject *)table, *k = (PyArrayObject *)keys;
    Py_ssize_t size = PyArray_Check(table) ? PyArray_SIZE(t) : 0;
    if (!int64_vector(table, size, "table") || size == 0 || (size & (size - 1)) != 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "table must hold a power of two entries");
        return 0;
    }
    if (!PyArray_Check(keys) || PyArray_NDIM(k) != 2 || PyArray_TYPE(k) != NPY_UINT8
        || PyArray_DIM(k, 1) != SHM_KEY_BYTES || !PyArray_IS_C_CONTIGUOUS(k)
        || !PyArray_ISWRITEABLE(k) || !PyArray_ISWRITEABLE(t)) {
        PyErr_SetString(PyExc_ValueError,
                        "keys must be a writable contiguous uint8 array of (max_keys, 64)");
        return 0;
    }
    if (!int64_vector(version, 1, "version"))
        return 0;
    ix->table = PyArray_DATA(t);
    ix->mask = (uint64_t)size - 1;
    ix->keys = PyArray_DATA(k);
    ix->max_keys = PyArray_DIM(k, 0);
    ix->version = PyArray_DATA((PyArrayObject *)version);
    return 1;
}

static inline uint64_t
shm_home(const ShmIndex *ix, const unsigned char *kb, Py_ssize_t n)
{
    return ((uint64_t)crc32_of(kb, n) * 0x9E3779B1ULL) & ix->mask;
}

/* ``encode_key``'s bytes of a str or int key into ``out`` (SHM_KEY_BYTES - 1 at most);
 * their length, or -1 with ValueError (the caller checked with encode_key first). */
static Py_ssize_t
shm_encode(PyObject *key, unsigned char *out)
{
    if (PyUnicode_Check(key)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(key, &n);
        if (s == NULL)
            return -1;
        if (n + 1 >= SHM_KEY_BYTES) {
            PyErr_SetString(PyExc_ValueError, "a key too long for the shared index");
            return -1;
        }
        out[0] = 's';
        memcpy(out + 1, s, n);
        return n + 1;
    }
    if (PyLong_Check(key) && !PyBool_Check(key)) {
        long long v = PyLong_AsLongLong(key);
        if (v == -1 && PyErr_Occurred())
            return -1;
        out[0] = 'i';
        for (int b = 0; b < 8; b++)
            out[1 + b] = (unsigned char)((unsigned long long)v >> (8 * b));
        return 9;
    }
    PyErr_SetString(PyExc_ValueError, "a shared index holds str and int keys");
    return -1;
}

static int
shm_slot(const ShmIndex *ix, PyObject *obj)
{
    Py_ssize_t slot = PyLong_AsSsize_t(obj);
    if (slot == -1 && PyErr_Occurred())
        return -1;
    if (slot < 0 || slot >= ix->max_keys) {
        PyErr_Format(PyExc_IndexError, "shared index: slot %zd out of range", slot);
        return -1;
    }
    return (int)slot;
}

PyDoc_STRVAR(shared_put_doc,
"shared_put(table, keys, version, slots, key_list, /)\n--\n\n"
"Each key of ``key_list`` into the shared index at its slot of ``slots`` (lists as long),\n"
"in order: its bytes into ``keys``, then an entry in ``table``. The slots hold no key.\n"
"On an error the keys before it are in.");

static PyObject *
shared_put(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    ShmIndex ix;
    if (nargs != 5 || !PyList_CheckExact(args[3]) || !PyList_CheckExact(args[4])
        || PyList_GET_SIZE(args[3]) != PyList_GET_SIZE(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "shared_put() takes table, keys, version and two lists as long");
        return NULL;
    }
    if (!shm_index_of(args[0], args[1], args[2], &ix))
        return NULL;
    unsigned char kb[SHM_KEY_BYTES];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[3]); i++) {
        int slot = shm_slot(&ix, PyList_GET_ITEM(args[3], i));
        Py_ssize_t n = slot < 0 ? -1 : shm_encode(PyList_GET_ITEM(args[4], i), kb);
        if (n < 0)
            return NULL;
        unsigned char *row = ix.keys + (Py_ssize_t)slot * SHM_KEY_BYTES;
        memcpy(row + 1, kb, n);
        __atomic_store_n(&row[0], (unsigned char)n, __ATOMIC_RELEASE);
        uint64_t at = shm_home(&ix, kb, n);
        Py_ssize_t probes = 0;
        while (ix.table[at] != 0) {
            if (++probes > (Py_ssize_t)ix.mask) {
                PyErr_SetString(PyExc_OverflowError, "the shared index is full");
                return NULL;
            }
            at = (at + 1) & ix.mask;
        }
        __atomic_store_n(&ix.table[at], (int64_t)slot + 1, __ATOMIC_RELEASE);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(shared_remove_doc,
"shared_remove(table, keys, version, slots, /)\n--\n\n"
"The key each slot of ``slots`` (a list) holds out of the shared index, in order: its\n"
"entry cleared and the entries after it shifted back (``version`` odd meanwhile), then\n"
"its length. A slot whose key the table does not hold is left as it is.");

static PyObject *
shared_remove(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    ShmIndex ix;
    if (nargs != 4 || !PyList_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "shared_remove() takes table, keys, version, slots");
        return NULL;
    }
    if (!shm_index_of(args[0], args[1], args[2], &ix))
        return NULL;
    int64_t *t = ix.table;
    uint64_t mask = ix.mask;
    for (Py_ssize_t s = 0; s < PyList_GET_SIZE(args[3]); s++) {
        int slot = shm_slot(&ix, PyList_GET_ITEM(args[3], s));
        if (slot < 0)
            return NULL;
        unsigned char *row = ix.keys + (Py_ssize_t)slot * SHM_KEY_BYTES;
        uint64_t i = shm_home(&ix, row + 1, row[0]);
        Py_ssize_t probes = 0;
        while (t[i] != 0 && t[i] != (int64_t)slot + 1 && probes++ <= (Py_ssize_t)mask)
            i = (i + 1) & mask;
        if (t[i] != (int64_t)slot + 1)
            continue;
        __atomic_store_n(ix.version, *ix.version + 1, __ATOMIC_RELEASE); /* odd */
        __atomic_store_n(&t[i], 0, __ATOMIC_RELEASE);
        for (uint64_t j = (i + 1) & mask; t[j] != 0; j = (j + 1) & mask) {
            const unsigned char *other = ix.keys + (Py_ssize_t)(t[j] - 1) * SHM_KEY_BYTES;
            uint64_t home = shm_home(&ix, other + 1, other[0]);
            /* the entry at j may move to the hole unless its home lies cyclically in (i, j] */
            if (((j - home) & mask) >= ((j - i) & mask)) {
                __atomic_store_n(&t[i], t[j], __ATOMIC_RELEASE);
                __atomic_store_n(&t[j], 0, __ATOMIC_RELEASE);
                i = j;
            }
        }
        __atomic_store_n(ix.version, *ix.version + 1, __ATOMIC_RELEASE);
        __atomic_store_n(&row[0], 0, __ATOMIC_RELEASE);
    }
    Py_RETURN_NONE;
}

#endif
