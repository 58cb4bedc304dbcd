/* The key index's upkeep: ``Ring.index`` (a dict, key -> slot) and the C key table that
 * mirrors it (_keys.h) changed together, one key or a batch of slots at a time, and slots
 * freed (their keys out, their rows reset by the seqlock). Internal; included by _native.c
 * after _write.h.
 */
#ifndef HEIMDALL_INDEX_H
#define HEIMDALL_INDEX_H

/* The key table from the dict index: empty, sized for the ring's slots, then every key. */
static int
keys_rebuild(RingCore *self, Py_ssize_t max_keys)
{
    if (keys_init(&self->keys, max_keys) < 0)
        return -1;
    self->key_table_bytes = (Py_ssize_t)((self->keys.mask + 1) * sizeof(KeyEntry));
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

/* ``index[key] = slot`` (``slot_obj``, an int) in the dict and the table. 0, or -1 with an
 * error set and the dict as it was. */
static int
index_put_one(RingCore *self, PyObject *key, PyObject *slot_obj)
{
    Py_ssize_t slot = PyLong_AsSsize_t(slot_obj);
    if (slot == -1 && PyErr_Occurred())
        return -1;
    int held = PyDict_Contains(self->index, key);
    if (held < 0 || PyDict_SetItem(self->index, key, slot_obj) < 0)
        return -1;
    if (!keys_plain(key)) {
        self->keys.exotic += !held;
        return 0;
    }
    if (keys_put(&self->keys, key, slot) < 0) {
        if (!held) { /* as it was */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyDict_DelItem(self->index, key);
            PyErr_Restore(type, value, tb);
        }
        return -1;
    }
    return 0;
}

/* ``index.pop(key, None)`` in the dict and the table. 0, or -1 with an error set. */
static int
index_remove_one(RingCore *self, PyObject *key)
{
    int held = PyDict_Contains(self->index, key);
    if (held <= 0)
        return held;
    if (keys_plain(key) && keys_remove(&self->keys, key) < 0)
        return -1;
    if (!keys_plain(key) && self->keys.exotic > 0)
        self->keys.exotic -= 1; /* (an equal plain key held instead: out of step until
                                   index_rebuild, and lookups read the dict) */
    return PyDict_DelItem(self->index, key);
}

static int
index_is_dict(RingCore *self, const char *what)
{
    if (self->index == NULL || !PyDict_CheckExact(self->index)) {
        PyErr_Format(PyExc_TypeError, "%s: the ring's index is not a dict", what);
        return 0;
    }
    return 1;
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
    if (!index_is_dict(self, "index_put") || index_put_one(self, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ring_index_remove_doc,
"index_remove($self, key, /)\n--\n\n"
"``index.pop(key, None)``, in the dict and in the C key table.");

static PyObject *
ring_index_remove(RingCore *self, PyObject *key)
{
    if (!index_is_dict(self, "index_remove") || index_remove_one(self, key) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ``slot_keys``, checked: a list, and ``slot`` (an int) within it; -1 with an error if not. */
static Py_ssize_t
index_slot(RingCore *self, PyObject *slot_obj, const char *what)
{
    Py_ssize_t slot = PyLong_AsSsize_t(slot_obj);
    if (slot == -1 && PyErr_Occurred())
        return -1;
    if (slot < 0 || slot >= PyList_GET_SIZE(self->slot_keys)) {
        PyErr_Format(PyExc_IndexError, "%s: slot %zd out of range", what, slot);
        return -1;
    }
    return slot;
}

static int
index_lists(RingCore *self, PyObject *slots, const char *what)
{
    if (!index_is_dict(self, what))
        return 0;
    if (self->slot_keys == NULL || !PyList_CheckExact(self->slot_keys)
        || !PyList_CheckExact(slots)) {
        PyErr_Format(PyExc_TypeError, "%s takes a list of slots (and slot_keys a list)", what);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(ring_own_slots_index_doc,
"own_slots_index($self, slots, keys, /)\n--\n\n"
"For each slot of ``slots`` (a list of ints) and its key of ``keys`` (a list), in order:\n"
"``slot_keys[slot] = key`` and ``index_put(key, slot)``. On an error the slots before it\n"
"are done.");

static PyObject *
ring_own_slots_index(RingCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "own_slots_index() takes slots and keys");
        return NULL;
    }
    PyObject *slots = args[0], *keys = args[1];
    if (!index_lists(self, slots, "own_slots_index"))
        return NULL;
    if (!PyList_CheckExact(keys) || PyList_GET_SIZE(keys) != PyList_GET_SIZE(slots)) {
        PyErr_SetString(PyExc_ValueError, "own_slots_index: keys must be a list as long as slots");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(slots); i++) {
        PyObject *slot_obj = PyList_GET_ITEM(slots, i), *key = PyList_GET_ITEM(keys, i);
        Py_ssize_t slot = index_slot(self, slot_obj, "own_slots_index");
        if (slot < 0)
            return NULL;
        PyList_SetItem(self->slot_keys, slot, Py_NewRef(key)); /* cannot fail: in range */
        if (index_put_one(self, key, slot_obj) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ring_free_slots_doc,
"free_slots($self, slots, /)\n--\n\n"
"Take the keys out of ``slots`` (a list of distinct ints) and reset them, by the seqlock:\n"
"first every slot's WSEQ raised past any write (every view of it ends) and its KEYGEN\n"
"bumped; then each key out of the index and ``slot_keys[slot] = None``; then each slot's\n"
"POS, FILL and NEWEST zeroed; then each CSEQ set to its WSEQ. If taking a key out fails\n"
"(an exotic key's ``__eq__``) the slots are reset all the same, the keys from that one on\n"
"stay in the index, and the error is raised.");

static PyObject *
ring_free_slots(RingCore *self, PyObject *slots)
{
    if (!index_lists(self, slots, "free_slots"))
        return NULL;
    if (self->kind == 0) {
        PyErr_SetString(PyExc_RuntimeError, "free_slots: the ring is not bound");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(slots);
    for (Py_ssize_t i = 0; i < n; i++)
        if (index_slot(self, PyList_GET_ITEM(slots, i), "free_slots") < 0)
            return NULL;
    long long *meta = self->meta;
#define SLOT_META(i) (meta + PyLong_AsSsize_t(PyList_GET_ITEM(slots, i)) * META_COLS)
    for (Py_ssize_t i = 0; i < n; i++) {
        long long *m = SLOT_META(i);
        begin(m, self->cap + 1);
        m[KEYGEN] += 1;
    }
    int failed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t slot = PyLong_AsSsize_t(PyList_GET_ITEM(slots, i));
        PyObject *key = PyList_GET_ITEM(self->slot_keys, slot);
        if (!failed && key != Py_None) {
            Py_INCREF(key);
            failed = index_remove_one(self, key) < 0;
            Py_DECREF(key);
        }
        if (!failed)
            PyList_SetItem(self->slot_keys, slot, Py_NewRef(Py_None));
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long *m = SLOT_META(i);
        m[POS] = 0;
        m[FILL] = 0;
        m[NEWEST] = 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long *m = SLOT_META(i);
        __atomic_store_n(&m[CSEQ], m[WSEQ], __ATOMIC_RELEASE);
    }
#undef SLOT_META
    if (failed)
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

#endif
