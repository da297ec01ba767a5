
/* ---- fastcall.c: the per-message calls from Python, without cffi's wrapper ----
 *
 * cffi's wrapper of a C function releases and retakes the GIL around every
 * call and converts each argument through the ctype: about 600 instructions
 * per call, where these functions themselves take a few hundred. The four
 * calls Python makes per message or per service round are also exposed as
 * plain CPython functions that keep the GIL. That is safe because none of
 * them blocks: their mutex sections are short and never call Python, and
 * the service epoll_wait()s with a timeout of 0. lws may call Python from
 * lwspy_native_service (through the trampoline); cffi's callbacks take the
 * GIL with PyGILState_Ensure, which is a no-op on the thread holding it.
 * Pointers arrive as ints (ffi.cast("uintptr_t", p)), held privately by
 * the objects that own what they point to. Limited API (the module is abi3).
 */

/* Argument i of tuple args as a pointer; 0 with an exception set if it is
 * not an int (a NULL pointer is 0 without one). */
static int
lwspy_fast_arg_ptr(PyObject *args, Py_ssize_t i, void **p)
{
    *p = PyLong_AsVoidPtr(PyTuple_GetItem(args, i));
    return *p || !PyErr_Occurred();
}

static int
lwspy_fast_nargs(PyObject *args, Py_ssize_t n, const char *name)
{
    if (PyTuple_Size(args) == n)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s takes %d arguments", name, (int)n);
    return 0;
}

/* native_service(ctx, pollset, poll) -> int, as lwspy_native_service */
static PyObject *
lwspy_fast_native_service(PyObject *self, PyObject *args)
{
    void *ctx, *ps;
    long poll;

    (void)self;
    if (!lwspy_fast_nargs(args, 3, "native_service") ||
        !lwspy_fast_arg_ptr(args, 0, &ctx) || !lwspy_fast_arg_ptr(args, 1, &ps))
        return NULL;
    poll = PyLong_AsLong(PyTuple_GetItem(args, 2));
    if (poll == -1 && PyErr_Occurred())
        return NULL;
    if (!ctx || !ps)
        return PyErr_Format(PyExc_ValueError, "native_service: NULL pointer");
    return PyLong_FromLong(lwspy_native_service((struct lws_context *)ctx,
                                                (struct lwspy_pollset *)ps, (int)poll));
}

/* send(txq, wsi or 0, payload: bytes, flags, limit) -> int, as lwspy_send */
static PyObject *
lwspy_fast_send(PyObject *self, PyObject *args)
{
    void *q, *wsi;
    char *data;
    Py_ssize_t len;
    long flags;
    size_t limit;

    (void)self;
    if (!lwspy_fast_nargs(args, 5, "send") ||
        !lwspy_fast_arg_ptr(args, 0, &q) || !lwspy_fast_arg_ptr(args, 1, &wsi))
        return NULL;
    if (PyBytes_AsStringAndSize(PyTuple_GetItem(args, 2), &data, &len) < 0)
        return NULL;
    flags = PyLong_AsLong(PyTuple_GetItem(args, 3));
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    limit = PyLong_AsSize_t(PyTuple_GetItem(args, 4));
    if (limit == (size_t)-1 && PyErr_Occurred())
        return NULL;
    if (!q)
        return PyErr_Format(PyExc_ValueError, "send: NULL queue");
    return PyLong_FromLongLong(lwspy_send((struct lwspy_txq *)q, (struct lws *)wsi,
                                          (const unsigned char *)data, (size_t)len,
                                          (int)flags, limit));
}

/* bridge_take(bridge) -> None, or (payloads, meta): lwspy_bridge_take, then
 * the batch it took as Python objects: the payloads back to back as one
 * bytes, and per message its connection id, length and binary flag. */
static PyObject *
lwspy_fast_bridge_take(PyObject *self, PyObject *arg)
{
    struct lwspy_bridge *b = PyLong_AsVoidPtr(arg);
    struct lwspy_rxbatch *t;
    PyObject *blob, *meta, *ret;
    Py_ssize_t i, n;

    (void)self;
    if (!b)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "NULL bridge");
    n = lwspy_bridge_take(b);
    if (!n)
        Py_RETURN_NONE;
    t = &b->taken; /* the loop's own until its next take */
    meta = PyTuple_New(3 * n);
    if (!meta)
        return NULL;
    for (i = 0; i < 3 * n; i++) {
        PyObject *v = PyLong_FromLongLong(t->meta[i]);

        if (!v || PyTuple_SetItem(meta, i, v) < 0) {
            Py_DECREF(meta);
            return NULL;
        }
    }
    blob = PyBytes_FromStringAndSize(t->len ? t->data : NULL, (Py_ssize_t)t->len);
    if (!blob) {
        Py_DECREF(meta);
        return NULL;
    }
    ret = PyTuple_Pack(2, blob, meta);
    Py_DECREF(blob);
    Py_DECREF(meta);
    return ret;
}

/* bridge_consumed(txq) -> None, as lwspy_bridge_consumed */
static PyObject *
lwspy_fast_bridge_consumed(PyObject *self, PyObject *arg)
{
    void *q = PyLong_AsVoidPtr(arg);

    (void)self;
    if (!q)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "NULL queue");
    lwspy_bridge_consumed((struct lwspy_txq *)q);
    Py_RETURN_NONE;
}

static PyMethodDef lwspy_fast_methods[] = {
    {"native_service", lwspy_fast_native_service, METH_VARARGS, NULL},
    {"send", lwspy_fast_send, METH_VARARGS, NULL},
    {"bridge_take", lwspy_fast_bridge_take, METH_O, NULL},
    {"bridge_consumed", lwspy_fast_bridge_consumed, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* Puts the functions above on module lws._lws as fast_<name>; 0 on success.
 * Called once from lws._binding (cffi has released the GIL: take it). */
static int
lwspy_fastcall_install(void)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *mod = PyImport_ImportModule("lws._lws");
    PyMethodDef *d;
    int ret = mod ? 0 : -1;

    for (d = lwspy_fast_methods; mod && d->ml_name && !ret; d++) {
        PyObject *fn = PyCFunction_NewEx(d, NULL, NULL);
        char name[64];

        snprintf(name, sizeof(name), "fast_%s", d->ml_name);
        if (!fn || PyObject_SetAttrString(mod, name, fn) < 0)
            ret = -1;
        Py_XDECREF(fn);
    }
    if (ret)
        PyErr_Clear();
    Py_XDECREF(mod);
    PyGILState_Release(g);
    return ret;
}
