
/* ---- fastcall.c: the per-message calls from Python, without cffi's wrapper ----
 *
 * cffi's wrapper of a C function releases and retakes the GIL around every
 * call and converts each argument through the ctype: about 600 instructions
 * per call, where these functions themselves take a few hundred. The calls
 * Python makes per message or per service round are also exposed as
 * plain CPython functions that keep the GIL. That is safe because none of
 * them blocks: their mutex sections are short and never call Python, and
 * the service epoll_wait()s with a timeout of 0. lws may call Python from
 * lwspy_native_service (through the trampoline); cffi's callbacks take the
 * GIL with PyGILState_Ensure, which is a no-op on the thread holding it.
 * Pointers arrive as ints (ffi.cast("uintptr_t", p)), held privately by
 * the objects that own what they point to. Limited API (the module is abi3),
 * at the 3.10 level that build_lws.py asks for: METH_FASTCALL takes the
 * arguments as an array, where METH_VARARGS built a tuple per call.
 */

/* args[i] as a pointer; 0 with an exception set if it is not an int (a
 * NULL pointer is 0 without one). */
static int
lwspy_fast_arg_ptr(PyObject *const *args, Py_ssize_t i, void **p)
{
    *p = PyLong_AsVoidPtr(args[i]);
    return *p || !PyErr_Occurred();
}

static int
lwspy_fast_nargs(Py_ssize_t nargs, Py_ssize_t n, const char *name)
{
    if (nargs == n)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s takes %d arguments", name, (int)n);
    return 0;
}

/* The per-service calls take (ctx, pollset or uv loop, third): the first two
 * non-NULL pointers; 0 with an exception set if not. */
static int
lwspy_fast_service_args(PyObject *const *args, Py_ssize_t nargs, const char *name,
                        void **ctx, void **driver)
{
    if (!lwspy_fast_nargs(nargs, 3, name) || !lwspy_fast_arg_ptr(args, 0, ctx) ||
        !lwspy_fast_arg_ptr(args, 1, driver))
        return 0;
    if (*ctx && *driver)
        return 1;
    PyErr_Format(PyExc_ValueError, "%s: NULL pointer", name);
    return 0;
}

/* native_service(ctx, pollset, poll) -> int, as lwspy_native_service;
 * uv_service(ctx, uv loop, poll) -> int, as lwspy_uv_service */
static PyObject *
lwspy_fast_service(PyObject *const *args, Py_ssize_t nargs, int uv)
{
    void *ctx, *driver;
    long poll;

    if (!lwspy_fast_service_args(args, nargs, uv ? "uv_service" : "native_service", &ctx,
                                 &driver))
        return NULL;
    poll = PyLong_AsLong(args[2]);
    if (poll == -1 && PyErr_Occurred())
        return NULL;
    if (uv)
        return PyLong_FromLong(lwspy_uv_service((struct lws_context *)ctx, driver, (int)poll));
    return PyLong_FromLong(lwspy_native_service((struct lws_context *)ctx,
                                                (struct lwspy_pollset *)driver, (int)poll));
}

static PyObject *
lwspy_fast_native_service(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    return lwspy_fast_service(args, nargs, 0);
}

static PyObject *
lwspy_fast_uv_service(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    return lwspy_fast_service(args, nargs, 1);
}

/* write_now(ctx, pollset, wsi) -> int, as lwspy_native_write_now */
static PyObject *
lwspy_fast_write_now(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *ctx, *ps, *wsi;

    (void)self;
    if (!lwspy_fast_service_args(args, nargs, "write_now", &ctx, &ps) ||
        !lwspy_fast_arg_ptr(args, 2, &wsi))
        return NULL;
    return PyLong_FromLong(lwspy_native_write_now((struct lws_context *)ctx,
                                                  (struct lwspy_pollset *)ps,
                                                  (struct lws *)wsi));
}

/* send(txq, wsi or 0, payload: bytes, flags, limit) -> int, as lwspy_send */
static PyObject *
lwspy_fast_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *q, *wsi;
    char *data;
    Py_ssize_t len;
    long flags;
    size_t limit;

    (void)self;
    if (!lwspy_fast_nargs(nargs, 5, "send") ||
        !lwspy_fast_arg_ptr(args, 0, &q) || !lwspy_fast_arg_ptr(args, 1, &wsi))
        return NULL;
    if (PyBytes_AsStringAndSize(args[2], &data, &len) < 0)
        return NULL;
    flags = PyLong_AsLong(args[3]);
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    limit = PyLong_AsSize_t(args[4]);
    if (limit == (size_t)-1 && PyErr_Occurred())
        return NULL;
    if (!q)
        return PyErr_Format(PyExc_ValueError, "send: NULL queue");
    return PyLong_FromLongLong(lwspy_send((struct lwspy_txq *)q, (struct lws *)wsi,
                                          (const unsigned char *)data, (size_t)len,
                                          (int)flags, limit));
}

/* The names bridge_deliver looks up on each message, and the empty tuple it
 * returns, made once. */
static PyObject *lwspy_s_getter, *lwspy_s_messages, *lwspy_s_txq_addr, *lwspy_s_done,
    *lwspy_s_set_result, *lwspy_s_append, *lwspy_empty_tuple;

static int
lwspy_fast_names(void)
{
    if (lwspy_s_append)
        return 0;
    if (!lwspy_empty_tuple && !(lwspy_empty_tuple = PyTuple_New(0)))
        return -1;
    lwspy_s_getter = PyUnicode_InternFromString("_getter");
    lwspy_s_messages = PyUnicode_InternFromString("_messages");
    lwspy_s_txq_addr = PyUnicode_InternFromString("_txq_addr");
    lwspy_s_done = PyUnicode_InternFromString("done");
    lwspy_s_set_result = PyUnicode_InternFromString("set_result");
    lwspy_s_append = PyUnicode_InternFromString("append");
    return lwspy_s_getter && lwspy_s_messages && lwspy_s_txq_addr && lwspy_s_done &&
           lwspy_s_set_result && lwspy_s_append ? 0 : -1;
}

/* One message to its WebSocket (lws.asyncio): to the reader waiting on
 * ws._getter, which is then consumed at once, else to ws._messages. 1 if a
 * reader was woken, 0 if queued, -1 with an exception set. */
static int
lwspy_fast_hand_over(PyObject *ws, PyObject *m)
{
    PyObject *getter = PyObject_GetAttr(ws, lwspy_s_getter), *r, *q;

    if (!getter)
        return -1;
    if (getter != Py_None) {
        int pending;

        if (PyObject_SetAttr(ws, lwspy_s_getter, Py_None) < 0)
            goto fail;
        r = PyObject_CallMethodObjArgs(getter, lwspy_s_done, NULL);
        if (!r)
            goto fail;
        pending = r == Py_False;
        Py_DECREF(r);
        if (pending) {  /* not cancelled: the message is the reader's */
            void *txq;

            q = PyObject_GetAttr(ws, lwspy_s_txq_addr);
            txq = q ? PyLong_AsVoidPtr(q) : NULL;
            Py_XDECREF(q);
            if (!txq)
                goto fail;
            lwspy_bridge_consumed((struct lwspy_txq *)txq);
            r = PyObject_CallMethodObjArgs(getter, lwspy_s_set_result, m, NULL);
            if (!r)
                goto fail;
            Py_DECREF(r);
            Py_DECREF(getter);
            return 1;
        }
    }
    Py_DECREF(getter);
    q = PyObject_GetAttr(ws, lwspy_s_messages);
    if (!q)
        return -1;
    r = PyObject_CallMethodObjArgs(q, lwspy_s_append, m, NULL);
    Py_DECREF(q);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
fail:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "bridge_deliver: NULL queue");
    Py_DECREF(getter);
    return -1;
}

/* bridge_deliver(bridge, by_id) -> None if nothing came, else
 * (solo, woke, bad): lwspy_bridge_take, then each message of the batch
 * it took, as a Python object of its own (bytes if binary, str if text),
 * to by_id[connection id] (hand_over above; a closed connection's are
 * dropped). solo is the WebSocket of a batch of one message (else None),
 * woke is True if a waiting reader got a message, bad lists the WebSockets
 * that got text that is not UTF-8 (lws validates it: not expected), for
 * Python to close (an empty tuple, shared, when none did: one allocation
 * less per call). This loop was Python's (lws.asyncio's _Runner._pull):
 * 1.06x messages/s in native mode with 100 connections. One object per
 * message, not one bytes of the whole batch sliced in Python: that copied
 * each payload twice, and a batch of many big messages (64 x 8 KiB) made a
 * bytes above glibc's mmap threshold, whose pages the kernel faulted in
 * afresh on every take. */
static PyObject *
lwspy_fast_bridge_deliver(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct lwspy_bridge *b;
    struct lwspy_rxbatch *t;
    PyObject *bad = NULL, *solo = NULL, *ret;
    Py_ssize_t i, n;
    size_t off = 0;
    int woke = 0;

    (void)self;
    if (!lwspy_fast_nargs(nargs, 2, "bridge_deliver") ||
        !lwspy_fast_arg_ptr(args, 0, (void **)&b))
        return NULL;
    if (!b)
        return PyErr_Format(PyExc_ValueError, "NULL bridge");
    if (!PyDict_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "bridge_deliver: by_id must be a dict");
    if (lwspy_fast_names() < 0)
        return NULL;
    n = lwspy_bridge_take(b);
    if (!n)
        Py_RETURN_NONE;
    t = &b->taken; /* the loop's own until its next take */
    for (i = 0; i < n; i++) {
        Py_ssize_t len = (Py_ssize_t)t->meta[3 * i + 1];
        const char *at = t->data ? t->data + off : "";
        PyObject *id = PyLong_FromLongLong(t->meta[3 * i]), *ws, *m;
        int r = 0;

        off += (size_t)len;
        if (!id)
            goto fail;
        ws = PyDict_GetItemWithError(args[1], id);
        Py_DECREF(id);
        if (!ws) {
            if (PyErr_Occurred())
                goto fail;
            continue;  /* closed meanwhile */
        }
        Py_INCREF(ws);  /* ours, whatever the calls below do to by_id */
        if (t->meta[3 * i + 2]) {
            m = PyBytes_FromStringAndSize(at, len);
        } else {
            m = PyUnicode_DecodeUTF8(at, len, NULL);
            if (!m && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                if (!bad && !(bad = PyList_New(0)))
                    r = -1;
                else
                    r = PyList_Append(bad, ws);
            }
        }
        if (m) {
            r = lwspy_fast_hand_over(ws, m);
            Py_DECREF(m);
        } else if (PyErr_Occurred()) {
            r = -1;
        }
        if (n == 1 && r >= 0)
            solo = ws;  /* keeps the reference */
        else
            Py_DECREF(ws);
        if (r < 0)
            goto fail;
        woke |= r;
    }
    ret = PyTuple_Pack(3, solo ? solo : Py_None, woke ? Py_True : Py_False,
                       bad ? bad : lwspy_empty_tuple);
    Py_XDECREF(solo);
    Py_XDECREF(bad);
    return ret;
fail:
    Py_XDECREF(solo);
    Py_XDECREF(bad);
    return NULL;
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

/*
 * The other direction, for the callback API: binding.c hands each whole
 * message to lws.connection._deliver(conn, user, message) through here, not
 * through a cffi callback, whose wrapper converted every argument to a cdata
 * object that Python then turned back (from_handle, unpack). 1.09-1.10x
 * messages/s with 16 in flight and with 100 connections (256 B). The
 * message is built here: bytes, str, or None for text that is not UTF-8.
 * The lws thread holds no GIL while lws runs under Context.run(): take it.
 */
static PyObject *lwspy_deliver_fn;  /* _deliver, set once at import */

static int
lwspy_fast_deliver(struct lwspy_txq *q, uintptr_t user, const unsigned char *data, size_t len,
                   int binary)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *msg, *u, *r;
    int n = -1;

    if (binary) {
        msg = PyBytes_FromStringAndSize(len ? (const char *)data : "", (Py_ssize_t)len);
    } else {
        msg = PyUnicode_DecodeUTF8(len ? (const char *)data : "", (Py_ssize_t)len, NULL);
        if (!msg && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            Py_INCREF(Py_None);
            msg = Py_None;
        }
    }
    u = PyLong_FromSize_t(user);
    if (msg && u && lwspy_deliver_fn) {
        r = PyObject_CallFunctionObjArgs(lwspy_deliver_fn, (PyObject *)q->conn, u, msg, NULL);
        if (r) {
            n = (int)PyLong_AsLong(r);
            Py_DECREF(r);
        }
    }
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable(lwspy_deliver_fn);
        n = -1;
    }
    Py_XDECREF(msg);
    Py_XDECREF(u);
    PyGILState_Release(g);
    return n;
}

static PyObject *
lwspy_fast_set_deliver(PyObject *self, PyObject *fn)
{
    PyObject *old = lwspy_deliver_fn;

    (void)self;
    Py_INCREF(fn);
    lwspy_deliver_fn = fn;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyMethodDef lwspy_fast_methods[] = {
    {"set_deliver", lwspy_fast_set_deliver, METH_O, NULL},
    {"native_service", (PyCFunction)(void (*)(void))lwspy_fast_native_service, METH_FASTCALL,
     NULL},
    {"send", (PyCFunction)(void (*)(void))lwspy_fast_send, METH_FASTCALL, NULL},
    {"write_now", (PyCFunction)(void (*)(void))lwspy_fast_write_now, METH_FASTCALL, NULL},
    {"uv_service", (PyCFunction)(void (*)(void))lwspy_fast_uv_service, METH_FASTCALL, NULL},
    {"bridge_consumed", lwspy_fast_bridge_consumed, METH_O, NULL},
    {"bridge_deliver", (PyCFunction)(void (*)(void))lwspy_fast_bridge_deliver, METH_FASTCALL,
     NULL},
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
