/* The binding's C side: as small as it can be. */

#include <libwebsockets.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LWSPY_NREASONS 128

struct lwspy_timer {
    lws_sorted_usec_list_t sul;
    void *ctx_handle;
    long long id;
};

struct lwspy_msg {
    struct lwspy_msg *next;
    size_t len;
    size_t off;           /* bytes already written, for messages sent in slices */
    size_t size;          /* of the whole block (lwspy_big_free) */
    int flags;
    unsigned char data[]; /* LWS_PRE bytes of headroom, then the payload */
};

struct lwspy_txq {
    size_t queued;
    int count;
    int dead;
    int give_turn;
    int client;
    int own_headers;      /* server side, no extension: see lwspy_write_split */
    size_t slice;         /* larger messages go out as fragments of this size */
    pthread_mutex_t mu;
    struct lwspy_msg *head, *tail;
    /* The last message written: lws' permessage-deflate keeps deflating
     * from it after lws_write() returns ("tx draining"), so it is freed
     * only at the next WRITEABLE that reaches us (lws holds those back
     * until the draining is over) or when the connection goes. */
    struct lwspy_msg *inflight;
    int close_code;
    int close_sent;       /* the close went to lws: later WRITEABLEs are not ours */
    size_t close_len;
    unsigned char *close_reason;  /* allocated by a close, at most 123 bytes */
    /* Receiving whole messages (protocols with on_message and no raw
     * RECEIVE handler): the fragments are joined here, in C, and Python is
     * called once per message (lwspy_fast_deliver, with conn). */
    uintptr_t conn;       /* the Connection object (borrowed: it owns this queue);
                             0 once killed */
    unsigned char *rx;
    size_t rx_len, rx_cap;
    int rx_active;        /* a fragmented message is being joined */
    /* permessage-deflate: the compressed input zlib works through (see
     * lwspy_pmd_callback), and whether some of it is left for later. */
    unsigned char *pmd_in;
    size_t pmd_in_cap;
    int pmd_pending;
    int rx_binary;
    /* lws.asyncio's thread mode (see struct lwspy_bridge); bridge is set
     * once, at ESTABLISHED; the rest is guarded by the bridge's mutex. */
    struct lwspy_bridge *bridge;
    struct lws *wsi;              /* while the connection lives */
    long long conn_id;
    struct lwspy_txq *want_next;  /* in bridge->wants */
    int want_listed;
    int wants;                    /* LWSPY_WANT_* for the service thread */
    int rx_waiting;               /* messages the app has not consumed yet */
    int rx_limit;                 /* more than this many waiting pauses reading */
    int rx_paused;
};

/*
 * lws.asyncio's thread mode: lws runs on a service thread, the app on the
 * asyncio loop. The per-message hand-offs stay in C, so that the service
 * thread needs neither Python nor the GIL for them: whole messages go to the
 * loop through `head` and the eventfd the loop watches; the loop's sends (and
 * reading resumed) ask for the service thread through `wants` and
 * lws_cancel_service(), which lws answers with EVENT_WAIT_CANCELLED, served
 * here in C. Both directions wake the other side once per batch, not per
 * message: the eventfd is written after a whole lws_service() round, and
 * while the loop is answering a batch (`deferring`) its sends wait for its
 * flush. Two threads on one core would otherwise switch at every message.
 * Native mode (lws on the loop's thread) has no eventfd: the loop takes the
 * messages after each service, one Python call for all of them. Reading
 * pauses here, per message, in both modes (one read may carry hundreds of
 * small messages, more than max_queue).
 */
/* Whole messages on their way to the loop: the payloads back to back in
 * `data`, and three numbers per message in `meta` (connection id, length,
 * binary), so that Python takes a batch with two unpacks, not a C call and
 * four struct reads per message. */
struct lwspy_rxbatch {
    char *data;
    size_t len, cap;
    long long *meta;
    int count, meta_cap;    /* in messages */
};

/* A taken batch bigger than this is freed, not kept for the next one. */
#define LWSPY_BATCH_KEEP (256 * 1024)
/* A joined message bigger than this has its buffer freed after delivery
 * (lwspy_rx_message), or handed to the batch whole (lwspy_bridge_message). */
#define LWSPY_BIG_RX 65536

/*
 * Blocks of LWSPY_POOL_MIN and up (large messages being joined, handed to
 * the loop or sent) go back to a small pool when freed, for the next large
 * message, instead of to malloc: glibc maps such blocks afresh, or trims
 * them back to the kernel, and every page of the next one then faults in
 * again, about 250 faults per 1 MiB message (a third of the server's CPU in
 * an echo). The pool is the process', and lwspy_pool_drop() empties it
 * when a context is destroyed.
 */
#define LWSPY_POOL_MIN (128 * 1024)
#define LWSPY_POOL_MAX (4 * 1024 * 1024)
#define LWSPY_POOL_SLOTS 4

static pthread_mutex_t lwspy_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *block;
    size_t size;
} lwspy_pool[LWSPY_POOL_SLOTS];

/* At least size bytes (*got: how many), from the pool if it has a block that
 * big (the smallest such), else from malloc. NULL when out of memory. */
static void *
lwspy_big_alloc(size_t size, size_t *got)
{
    void *block = NULL;
    int i, best = -1;

    if (size >= LWSPY_POOL_MIN) {
        pthread_mutex_lock(&lwspy_pool_mu);
        for (i = 0; i < LWSPY_POOL_SLOTS; i++)
            if (lwspy_pool[i].block && lwspy_pool[i].size >= size &&
                (best < 0 || lwspy_pool[i].size < lwspy_pool[best].size))
                best = i;
        if (best >= 0) {
            block = lwspy_pool[best].block;
            size = lwspy_pool[best].size;
            lwspy_pool[best].block = NULL;
        }
        pthread_mutex_unlock(&lwspy_pool_mu);
    }
    if (!block)
        block = malloc(size);
    *got = size;
    return block;
}

/* Frees a block of size bytes (from malloc or lwspy_big_alloc): into the
 * pool if it is big enough for it and not too big, in an empty slot or in
 * place of a smaller block. */
static void
lwspy_big_free(void *block, size_t size)
{
    int i, slot = -1;

    if (block && size >= LWSPY_POOL_MIN && size <= LWSPY_POOL_MAX) {
        pthread_mutex_lock(&lwspy_pool_mu);
        for (i = 0; i < LWSPY_POOL_SLOTS; i++)
            if (!lwspy_pool[i].block) {
                slot = i;
                break;
            } else if (lwspy_pool[i].size < size &&
                       (slot < 0 || lwspy_pool[i].size < lwspy_pool[slot].size)) {
                slot = i;
            }
        if (slot >= 0) {
            void *old = lwspy_pool[slot].block;
            size_t old_size = lwspy_pool[slot].size;

            lwspy_pool[slot].block = block;
            lwspy_pool[slot].size = size;
            block = old;
            size = old_size;
        }
        pthread_mutex_unlock(&lwspy_pool_mu);
    }
    free(block);
}

void
lwspy_pool_drop(void)
{
    int i;

    pthread_mutex_lock(&lwspy_pool_mu);
    for (i = 0; i < LWSPY_POOL_SLOTS; i++) {
        free(lwspy_pool[i].block);
        lwspy_pool[i].block = NULL;
    }
    pthread_mutex_unlock(&lwspy_pool_mu);
}

struct lwspy_bridge {
    pthread_mutex_t mu;
    struct lws_context *ctx;
    int fd;                 /* eventfd, readable while messages wait for the loop */
    int signalled;          /* fd was written and the loop has not taken since */
    struct lwspy_rxbatch in;    /* being filled by lws (under mu) */
    struct lwspy_rxbatch taken; /* the loop's, until its next take */
    struct lwspy_txq *wants;
    int woke;               /* lws_cancel_service() called, wants not yet served */
    int deferring;          /* the loop will flush: wants wait for it */
};

#define LWSPY_WANT_WRITEABLE 1
#define LWSPY_WANT_RESUME 2

/*
 * lws.asyncio's native mode: lws' sockets, watched by an epoll instance that
 * is itself the one fd the asyncio loop watches. The POLLOUT toggles of every
 * send and every write (one pair per message) are applied to it in C, net,
 * once per service; the loop calls back once for all the sockets that are
 * ready, not once per socket. One WebSocket at a time (`direct`; lws.asyncio
 * picks one that opened alone) has its input watched by the loop itself
 * instead: with one message in flight that saves the inner epoll_wait() and
 * the nested epoll's wake-up on every message (lwspy_pollset_direct).
 */
struct lwspy_pollset {
    int cap;                /* fds covered by the per-fd arrays */
    int epfd;               /* the epoll instance (valid while ep_open) */
    int ep_open;
    unsigned char *events;  /* per fd: 1 = POLLIN wanted, 2 = POLLOUT wanted */
    unsigned char *watched; /* per fd: what epoll has now, same bits */
    unsigned char *listed;  /* per fd: already in changed[] */
    int *changed;           /* fds whose events changed since the last apply */
    int nchanged;
    int want_out;           /* fds with POLLOUT wanted: out[0..want_out) */
    int failed;             /* no memory to track an fd, or epoll refused it */
    int *out;               /* the fds with POLLOUT wanted */
    int *outpos;            /* per fd: its index in out[], or -1 */
    unsigned int *wrote;    /* per fd: the service (gen) that found it writable */
    unsigned int *left;     /* per fd: the service that ended with POLLOUT still wanted */
    unsigned int gen;       /* counts native services */
    int refuse;             /* tests only: fail this many epoll adds (fault injection) */
    int serving;            /* inside lwspy_native_serve: no write_now */
    int direct;             /* fd + 1 of the socket whose input the loop watches, or 0 */
    int undirected;         /* the loop must stop watching that socket (lws paused its input) */
};

#define LWSPY_AGAIN_MAX 256

/* What the lws context's user pointer points to. */
struct lwspy_ctx {
    void *handle;                   /* the Python Context (ffi.new_handle) */
    struct lwspy_pollset *pollset;  /* native mode only */
    struct lwspy_bridge *bridge;    /* thread mode only */
    void *uv_loop;                  /* libuv mode only: the uv loop lws runs on */
    /* While lwspy_run() runs: the sockets that asked for WRITEABLE right
     * after a complete write in this round (see lwspy_run). */
    int again_on;
    int nagain;
    int again[LWSPY_AGAIN_MAX];
    /* Native mode and lwspy_run: the sockets whose last read ended inside
     * a message (each once, in the order read), to be read again at once. */
    int npartial;
    int partial[LWSPY_AGAIN_MAX];
};

#define LWSPY_RX_FIRST 1
#define LWSPY_RX_FINAL 2
#define LWSPY_RX_BINARY 4

struct lwspy_proto {
    int index;
    int messages;         /* RECEIVE is joined in C and delivered whole */
    size_t max_message;   /* larger messages close the connection with 1009 */
    unsigned char want[LWSPY_NREASONS];
};

static const char LWSPY_BUILT_VERSION[] = LWS_LIBRARY_VERSION;

/* One flag per optional lws feature, read by Python (lws.features). */
#if defined(LWS_WITH_TLS)
static const int LWSPY_HAS_TLS = 1;
#else
static const int LWSPY_HAS_TLS = 0;
#endif
#if defined(LWS_ROLE_H2) && defined(LWS_WITH_HTTP2)
static const int LWSPY_HAS_HTTP2 = 1;
#else
static const int LWSPY_HAS_HTTP2 = 0;
#endif
#if !defined(LWS_WITHOUT_EXTENSIONS)
static const int LWSPY_HAS_EXTENSIONS = 1;
#else
static const int LWSPY_HAS_EXTENSIONS = 0;
#endif
#if defined(LWS_WITH_IPV6)
static const int LWSPY_HAS_IPV6 = 1;
#else
static const int LWSPY_HAS_IPV6 = 0;
#endif
#if defined(LWS_WITH_UNIX_SOCK)
static const int LWSPY_HAS_UNIX_SOCK = 1;
#else
static const int LWSPY_HAS_UNIX_SOCK = 0;
#endif
#if defined(LWS_WITH_EXTERNAL_POLL)
static const int LWSPY_HAS_EXTERNAL_POLL = 1;
#else
static const int LWSPY_HAS_EXTERNAL_POLL = 0;
#endif
#if defined(LWS_WITH_CUSTOM_HEADERS)
static const int LWSPY_HAS_CUSTOM_HEADERS = 1;
#else
static const int LWSPY_HAS_CUSTOM_HEADERS = 0;
#endif
#if defined(LWS_WITH_LIBUV) && __has_include(<uv.h>)
#include <uv.h>
#define LWSPY_WITH_LIBUV 1
static const int LWSPY_HAS_LIBUV = 1;
#else
static const int LWSPY_HAS_LIBUV = 0;
#endif
#if LWS_LIBRARY_VERSION_NUMBER >= 4003000
static const int LWSPY_HAS_EVENT_LIB_CUSTOM = 1;
#else
static const int LWSPY_HAS_EVENT_LIB_CUSTOM = 0;
#endif
#if defined(LWS_WITHOUT_CLIENT)
static const int LWSPY_HAS_CLIENT = 0;
#else
static const int LWSPY_HAS_CLIENT = 1;
#endif
#if defined(LWS_WITHOUT_SERVER)
static const int LWSPY_HAS_SERVER = 0;
#else
static const int LWSPY_HAS_SERVER = 1;
#endif

/* What Python returns to ask for lws' default handling of a reason. */
static const int LWSPY_DEFAULT = 0x4c575350;

unsigned char lwspy_always[LWSPY_NREASONS];
unsigned long long lwspy_count_writeable;
unsigned long long lwspy_count_in;
unsigned long long lwspy_count_python;

static int _lwspy_callback(void *ctx_handle, int proto_index, struct lws *wsi,
                           int reason, uintptr_t user, char *in, size_t len, int rx_flags);
static int lwspy_fast_deliver(struct lwspy_txq *q, uintptr_t user, const unsigned char *data,
                              size_t len, int binary);
static void _lwspy_log(int level, const char *line);
static void _lwspy_timer(void *ctx_handle, long long id);

/*
 * Under lwspy_run (Context.run(), where cffi released the GIL), the first
 * message delivered to Python in a round takes the GIL for the rest of that
 * round: 16 messages read at once cost one GIL hand-over, not 16. The round
 * ends before lws' next lws_service(), whose poll() may wait, so the GIL is
 * never held there. lws delivers received data only after that poll (its
 * timers, which run before it, close or ping but never RECEIVE), and each
 * call into Python still takes the GIL for itself (PyGILState_Ensure, cheap
 * when this thread holds it), so a handler that let the GIL go meanwhile (a
 * cffi call) is safe.
 *
 * Only lwspy_run's own service batches, not lws entered again from Python
 * (a handler serving another context, or running it): cffi released the GIL
 * around that call and retakes it on return, so nothing under it may keep
 * the GIL. lwspy_py_depth counts the calls into Python on this thread's C
 * stack (LWSPY_PY_IN/OUT around each); the round takes and gives back the
 * GIL only at depth 0. Per thread: a context runs on the thread that called
 * run().
 */
static __thread int lwspy_gil_rounds;     /* inside lwspy_run on this thread */
static __thread int lwspy_gil_held;       /* taken by this round */
static __thread int lwspy_py_depth;
static __thread PyGILState_STATE lwspy_gil_state;

#define LWSPY_PY_IN() (lwspy_py_depth++)
#define LWSPY_PY_OUT() (lwspy_py_depth--)

static void
lwspy_gil_round_take(void)
{
    if (lwspy_gil_rounds && !lwspy_gil_held && !lwspy_py_depth) {
        lwspy_gil_state = PyGILState_Ensure();
        lwspy_gil_held = 1;
    }
}

static void
lwspy_gil_round_end(void)
{
    if (lwspy_gil_held && !lwspy_py_depth) {
        lwspy_gil_held = 0;
        PyGILState_Release(lwspy_gil_state);
    }
}

/* The binding's data of wsi's context (its lws user pointer), or NULL. */
static struct lwspy_ctx *
lwspy_wsi_cx(struct lws *wsi)
{
    struct lws_context *lc = lws_get_context(wsi);

    return lc ? (struct lwspy_ctx *)lws_context_user(lc) : NULL;
}

/* --- the send queue ------------------------------------------------------ */

static void
lwspy_txq_init(struct lwspy_txq *q)
{
    pthread_mutex_init(&q->mu, NULL);
}

/* lws_callback_on_writable() for a socket that took the last write
 * whole: within Context.run(), its WRITEABLE comes without a poll() (see
 * lwspy_run). In libuv mode, for a connection lwspy_uv_direct() takes, lws
 * is not even asked: the socket is listed once, and lwspy_uv_service gives
 * it its POLLOUT (asking would cost lws' uv plugin epoll_ctl calls). */
static int lwspy_uv_direct(struct lws *wsi, struct lwspy_txq *q);

static void
lwspy_writable_again(struct lws *wsi)
{
    struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);
    int fd;

    if (cx && cx->uv_loop && cx->nagain < LWSPY_AGAIN_MAX &&
        lwspy_uv_direct(wsi, (struct lwspy_txq *)lws_get_opaque_user_data(wsi)) &&
        (fd = lws_get_socket_fd(wsi)) >= 0) {
        int i;

        for (i = 0; i < cx->nagain; i++)
            if (cx->again[i] == fd)
                return;
        cx->again[cx->nagain++] = fd;
        return;
    }
    lws_callback_on_writable(wsi);
    if (cx && cx->again_on && cx->nagain < LWSPY_AGAIN_MAX &&
        (fd = lws_get_socket_fd(wsi)) >= 0)
        cx->again[cx->nagain++] = fd;
}

/* A read that ended inside a message (partial 1) or at its end (0): the
 * socket is, or stops being, one to read again at once (lwspy_read_again).
 * lws reads at most pt_serv_buf_size per service (4 KiB by default,
 * 16 KiB under lws.asyncio); the rest of a bigger message most likely
 * came with it. */
static void
lwspy_note_partial(struct lws *wsi, int partial)
{
    struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);
    int fd;

    if (!cx || (!cx->pollset && !cx->again_on))
        return;
    if (!partial && !cx->npartial)
        return;
    fd = lws_get_socket_fd(wsi);
    /* one read's pieces arrive together: only the last entry can be this fd */
    if (cx->npartial && cx->partial[cx->npartial - 1] == fd) {
        if (!partial)
            cx->npartial--;
        return;
    }
    if (partial && cx->npartial < LWSPY_AGAIN_MAX)
        cx->partial[cx->npartial++] = fd;
}

/* One round of lwspy_service_listed: each socket of list[0..*count) is
 * serviced with `event`; after it the list holds the sockets that servicing
 * listed again. -1 if lws failed. */
static int
lwspy_service_round(struct lws_context *ctx, int *list, int *count, short event)
{
    int i, n = *count, fds[LWSPY_AGAIN_MAX];
    struct lws_pollfd pfd;

    memcpy(fds, list, (size_t)n * sizeof(int));
    *count = 0;
    for (i = 0; i < n; i++) {
        pfd.fd = fds[i];
        pfd.events = event;
        pfd.revents = event;
        if (lws_service_fd(ctx, &pfd) < 0)
            return -1;
    }
    return 0;
}

/* Services each socket of list[0..*count) with an event no poll() reported
 * (POLLIN or POLLOUT), in rounds while servicing adds sockets to the list
 * again, up to `rounds`; the list is empty after. A socket lws closed
 * meanwhile is unknown to lws_service_fd(), which ignores it. */
static int
lwspy_service_listed(struct lws_context *ctx, int *list, int *count, short event, int rounds)
{
    int round;

    for (round = 0; round < rounds && *count; round++)
        if (lwspy_service_round(ctx, list, count, event) < 0)
            return -1;
    *count = 0;
    return 0;
}

/* The sockets noted by lwspy_note_partial are read again at once, up to
 * LWSPY_READ_AGAIN times each: the rest of a message is taken now rather
 * than after a trip through the loop. One that finds nothing costs an
 * EAGAIN. */
#define LWSPY_READ_AGAIN 16

static int
lwspy_read_again(struct lws_context *ctx, struct lwspy_ctx *cx)
{
    return lwspy_service_listed(ctx, cx->partial, &cx->npartial, LWS_POLLIN, LWSPY_READ_AGAIN);
}

/* --- thread mode's hand-offs (struct lwspy_bridge) ------------------------- */

/* Thread mode (wake 1): returns the eventfd for the loop to watch, or -1.
 * Native mode (wake 0) has no other thread to wake: the loop takes the
 * messages after each service; returns 0. */
static int
lwspy_bridge_init(struct lwspy_bridge *b, struct lws_context *ctx, int wake)
{
    b->fd = -1;
    if (wake) {
        b->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (b->fd < 0)
            return -1;
    }
    pthread_mutex_init(&b->mu, NULL);
    b->ctx = ctx;
    return wake ? b->fd : 0;
}

static void
lwspy_rxbatch_free(struct lwspy_rxbatch *t)
{
    lwspy_big_free(t->data, t->cap);
    free(t->meta);
    memset(t, 0, sizeof(*t));
}

/* Once lws is gone (every connection killed): drops what the loop never took. */
static void
lwspy_bridge_free(struct lwspy_bridge *b)
{
    pthread_mutex_lock(&b->mu);
    lwspy_rxbatch_free(&b->in);
    lwspy_rxbatch_free(&b->taken);
    b->wants = NULL;
    pthread_mutex_unlock(&b->mu);
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
}

/* Service thread, at ESTABLISHED: the connection's messages go to the loop. */
static void
lwspy_bridge_attach(struct lwspy_bridge *b, struct lwspy_txq *q, struct lws *wsi,
                    long long conn_id, int rx_limit)
{
    pthread_mutex_lock(&b->mu);
    q->bridge = b;
    q->wsi = wsi;
    q->conn_id = conn_id;
    q->rx_limit = rx_limit;
    pthread_mutex_unlock(&b->mu);
}

/* Under b->mu: note what q wants; 1 if the caller must wake the service
 * thread now (no wake-up on its way, and no flush coming from the loop). */
static int
lwspy_bridge_want_locked(struct lwspy_bridge *b, struct lwspy_txq *q, int want)
{
    if (!q->wsi)
        return 0;
    q->wants |= want;
    if (!q->want_listed) {
        q->want_listed = 1;
        q->want_next = b->wants;
        b->wants = q;
    }
    if (b->woke || b->deferring)
        return 0;
    b->woke = 1;
    return 1;
}

/* Loop thread: it is answering a batch; wants wait for lwspy_bridge_flush. */
static void
lwspy_bridge_defer(struct lwspy_bridge *b)
{
    pthread_mutex_lock(&b->mu);
    b->deferring = 1;
    pthread_mutex_unlock(&b->mu);
}

/* Loop thread, after the batch: one wake-up for whatever it asked for. */
static void
lwspy_bridge_flush(struct lwspy_bridge *b)
{
    int wake;

    pthread_mutex_lock(&b->mu);
    b->deferring = 0;
    wake = b->wants && !b->woke;
    if (wake)
        b->woke = 1;
    pthread_mutex_unlock(&b->mu);
    if (wake)
        lws_cancel_service(b->ctx);
}

/* Loop thread: a send was queued; the service thread will ask for WRITEABLE. */
static void
lwspy_bridge_want(struct lwspy_txq *q, int want)
{
    struct lwspy_bridge *b = q->bridge;
    int wake;

    pthread_mutex_lock(&b->mu);
    wake = lwspy_bridge_want_locked(b, q, want);
    pthread_mutex_unlock(&b->mu);
    if (wake)
        lws_cancel_service(b->ctx);
}

/* Service thread, on EVENT_WAIT_CANCELLED: what the loop asked for. The
 * lws calls are made outside the mutex, a batch at a time. */
#define LWSPY_SERVE_BATCH 32

static void
lwspy_bridge_serve(struct lwspy_bridge *b)
{
    struct lws *wsi[LWSPY_SERVE_BATCH];
    int want[LWSPY_SERVE_BATCH], n, i, more;

    do {
        n = 0;
        pthread_mutex_lock(&b->mu);
        b->woke = 0; /* wants added from now on wake us again */
        while (b->wants && n < LWSPY_SERVE_BATCH) {
            struct lwspy_txq *q = b->wants;

            b->wants = q->want_next;
            q->want_next = NULL;
            q->want_listed = 0;
            if (q->wsi) {
                wsi[n] = q->wsi;
                want[n++] = q->wants;
            }
            q->wants = 0;
        }
        more = b->wants != NULL;
        pthread_mutex_unlock(&b->mu);
        for (i = 0; i < n; i++) {
            if (want[i] & LWSPY_WANT_RESUME)
                lws_rx_flow_control(wsi[i], 1);
            if (want[i] & LWSPY_WANT_WRITEABLE)
                lwspy_writable_again(wsi[i]);
        }
    } while (more);
}

/* Service thread: a whole message for the loop. Reading pauses while more
 * than rx_limit of the connection's messages wait for the app. */
static int
lwspy_bridge_message(struct lws *wsi, struct lwspy_txq *q, const unsigned char *data,
                     size_t len, int binary)
{
    struct lwspy_bridge *b = q->bridge;
    struct lwspy_rxbatch *t = &b->in;
    long long *meta;
    int pause;

    pthread_mutex_lock(&b->mu);
    if (t->count == t->meta_cap) {
        int cap = t->meta_cap ? t->meta_cap * 2 : 64;
        long long *grown = realloc(t->meta, (size_t)cap * 3 * sizeof(*grown));

        if (!grown)
            goto oom;
        t->meta = grown;
        t->meta_cap = cap;
    }
    if (!t->len && data == q->rx) {
        /* A message joined in q->rx that starts the batch: the batch and
         * the connection swap buffers rather than copy it (the batch's old
         * one takes the connection's next joined message). */
        char *old = t->data;
        size_t old_cap = t->cap;

        t->data = (char *)q->rx;
        t->cap = q->rx_cap;
        q->rx = (unsigned char *)old;
        q->rx_cap = old_cap;
    } else {
        if (t->len + len > t->cap) {
            size_t cap = t->cap ? t->cap : 4096;
            char *grown;

            while (cap < t->len + len)
                cap *= 2;
            grown = realloc(t->data, cap);
            if (!grown)
                goto oom;
            t->data = grown;
            t->cap = cap;
        }
        if (len)
            memcpy(t->data + t->len, data, len);
    }
    t->len += len;
    meta = t->meta + 3 * t->count++;
    meta[0] = q->conn_id;
    meta[1] = (long long)len;
    meta[2] = binary;
    pause = ++q->rx_waiting > q->rx_limit && !q->rx_paused;
    if (pause)
        q->rx_paused = 1;
    pthread_mutex_unlock(&b->mu);
    if (pause)
        lws_rx_flow_control(wsi, 0);
    return 0;

oom:
    pthread_mutex_unlock(&b->mu);
    lwsl_err("lws binding: no memory for a %zu-byte message\n", len);
    return -1;
}

/* Service thread, after a lws_service() round: wake the loop for the
 * messages of the round (once until it takes them). */
static void
lwspy_bridge_signal(struct lwspy_bridge *b)
{
    int signal;

    pthread_mutex_lock(&b->mu);
    signal = b->in.count && !b->signalled;
    if (signal)
        b->signalled = 1;
    pthread_mutex_unlock(&b->mu);
    if (signal) {
        uint64_t one = 1;

        if (write(b->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            lwsl_err("lws binding: cannot wake the loop (errno %d)\n", errno);
    }
}

/* Loop thread: every message waiting, oldest first, moves to b->taken
 * (the batch the loop took before is dropped); returns how many. Reads
 * the eventfd first: a message queued after that is either in this batch
 * or signals anew. */
static int
lwspy_bridge_take(struct lwspy_bridge *b)
{
    struct lwspy_rxbatch done;
    uint64_t n;

    if (b->fd >= 0 && read(b->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        lwsl_err("lws binding: cannot read the loop's eventfd (errno %d)\n", errno);
    pthread_mutex_lock(&b->mu);
    if (!b->in.count) {
        pthread_mutex_unlock(&b->mu);
        return 0;
    }
    done = b->taken;
    b->taken = b->in;
    /* the old batch's memory takes the next messages, unless it is big */
    if (done.cap > LWSPY_BATCH_KEEP) {
        lwspy_big_free(done.data, done.cap);
        done.data = NULL;
        done.cap = 0;
    }
    done.len = 0;
    done.count = 0;
    b->in = done;
    b->signalled = 0;
    pthread_mutex_unlock(&b->mu);
    return b->taken.count;
}

/* Loop thread: the app took one of q's messages; reading resumes once at
 * most half of rx_limit wait. */
static void
lwspy_bridge_consumed(struct lwspy_txq *q)
{
    struct lwspy_bridge *b = q->bridge;
    int wake = 0;

    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    if (q->rx_waiting)
        q->rx_waiting--;
    if (q->rx_paused && q->rx_waiting <= q->rx_limit / 2) {
        q->rx_paused = 0;
        wake = lwspy_bridge_want_locked(b, q, LWSPY_WANT_RESUME);
    }
    pthread_mutex_unlock(&b->mu);
    if (wake)
        lws_cancel_service(b->ctx);
}

/* Service thread, the connection is gone: out of the wants list. */
static void
lwspy_bridge_detach(struct lwspy_txq *q)
{
    struct lwspy_bridge *b = q->bridge;
    struct lwspy_txq **pp;

    pthread_mutex_lock(&b->mu);
    if (q->want_listed) {
        for (pp = &b->wants; *pp; pp = &(*pp)->want_next)
            if (*pp == q) {
                *pp = q->want_next;
                break;
            }
        q->want_listed = 0;
    }
    q->wsi = NULL;
    q->wants = 0;
    pthread_mutex_unlock(&b->mu);
}

static struct lwspy_msg *
lwspy_msg_new(size_t len)
{
    size_t got;
    struct lwspy_msg *m = lwspy_big_alloc(sizeof(*m) + LWS_PRE + len, &got);

    if (m)
        m->size = got;
    return m;
}

static void
lwspy_msg_free(struct lwspy_msg *m)
{
    if (m)
        lwspy_big_free(m, m->size);
}

/* Returns the new queued size, -1 if it would pass limit, -2 if dead. */
static long long
lwspy_txq_push(struct lwspy_txq *q, const unsigned char *payload, size_t len,
               int flags, size_t limit)
{
    struct lwspy_msg *m = lwspy_msg_new(len);
    long long ret;

    if (!m)
        return -3;
    m->next = NULL;
    m->len = len;
    m->off = 0;
    m->flags = flags;
    memcpy(m->data + LWS_PRE, payload, len);
    pthread_mutex_lock(&q->mu);
    if (q->dead || q->close_code) {
        ret = -2;
    } else if (q->queued + len > limit && (q->queued || len > limit)) {
        ret = -1;
    } else {
        if (q->tail)
            q->tail->next = m;
        else
            q->head = m;
        q->tail = m;
        q->queued += len;
        q->count++;
        m = NULL;
        ret = (long long)q->queued;
    }
    pthread_mutex_unlock(&q->mu);
    lwspy_msg_free(m);
    return ret;
}

/* push, then (wsi given: the caller is on the lws thread and the connection
 * is established; or from the loop in thread mode) ask for WRITEABLE: one
 * call per send from Python. Within Context.run(), the first write of a
 * reply also comes without a poll() (lwspy_writable_again). */
static long long
lwspy_send(struct lwspy_txq *q, struct lws *wsi, const unsigned char *payload, size_t len,
           int flags, size_t limit)
{
    long long ret = lwspy_txq_push(q, payload, len, flags, limit);

    if (ret >= 0) {
        if (wsi)
            lwspy_writable_again(wsi);
        else if (q->bridge)
            lwspy_bridge_want(q, LWSPY_WANT_WRITEABLE);
    }
    return ret;
}

/* Close after what is queued; 0 if accepted, -2 if already closing or dead. */
static int
lwspy_txq_close(struct lwspy_txq *q, int code, const unsigned char *reason, size_t len)
{
    int ret = -2;
    unsigned char *copy;

    if (len > 123)  /* a close frame's payload is at most 125 bytes with the code */
        len = 123;
    copy = malloc(len ? len : 1);
    if (!copy)
        return -3;
    memcpy(copy, reason, len);
    pthread_mutex_lock(&q->mu);
    if (!q->dead && !q->close_code) {
        q->close_code = code;
        q->close_len = len;
        q->close_reason = copy;
        copy = NULL;
        ret = 0;
    }
    pthread_mutex_unlock(&q->mu);
    free(copy);
    return ret;
}

static void
lwspy_txq_kill(struct lwspy_txq *q)
{
    struct lwspy_msg *m, *next;

    if (q->bridge)
        lwspy_bridge_detach(q);
    pthread_mutex_lock(&q->mu);
    lwspy_msg_free(q->inflight);
    q->inflight = NULL;
    free(q->close_reason);
    q->close_reason = NULL;
    m = q->head;
    q->head = q->tail = NULL;
    q->queued = 0;
    q->count = 0;
    q->dead = 1;
    q->conn = 0;
    pthread_mutex_unlock(&q->mu);
    lwspy_big_free(q->rx, q->rx_cap);
    q->rx = NULL;
    q->rx_len = q->rx_cap = 0;
    q->rx_active = 0;
    free(q->pmd_in);
    q->pmd_in = NULL;
    q->pmd_in_cap = 0;
    q->pmd_pending = 0;
    for (; m; m = next) {
        next = m->next;
        lwspy_msg_free(m);
    }
}


/*
 * A large frame goes out as two writes, its header (built here) first: the
 * peer, woken by the header, gets ready to read while the payload is still
 * being copied into the socket, rather than after. It costs a write and a
 * wakeup of the peer: at 8 KiB more than it hides, at 64 KiB it won for
 * lws.asyncio and lost for the callback API on lws 4.1.6, hence opt-in per
 * protocol (txq.own_headers; docs/asyncio.md has the figures). Only where
 * lws would send the frame as is: server side (no mask), no extension, not
 * an h2 stream. Returns what lws_write() returned for the payload; when the
 * header could not all go, lws queued the payload behind it, whatever
 * the count says.
 */
#define LWSPY_SPLIT_AT 32768

static int
lwspy_write_split(struct lws *wsi, struct lwspy_msg *m, size_t len, int flags)
{
    unsigned char head[LWS_PRE + 10];
    size_t hlen = 4;
    int n, queued;

    head[LWS_PRE] = (unsigned char)(0x80 | (flags == LWS_WRITE_TEXT ? 1 : 2));
    if (len < 65536) {
        head[LWS_PRE + 1] = 126;
        head[LWS_PRE + 2] = (unsigned char)(len >> 8);
        head[LWS_PRE + 3] = (unsigned char)len;
    } else {
        int i;

        head[LWS_PRE + 1] = 127;
        for (i = 0; i < 8; i++)
            head[LWS_PRE + 2 + i] = (unsigned char)((unsigned long long)len >> (56 - 8 * i));
        hlen = 10;
    }
    if (lws_write(wsi, &head[LWS_PRE], hlen, LWS_WRITE_HTTP) < 0)
        return -1;
    queued = lws_partial_buffered(wsi);
    n = lws_write(wsi, m->data + LWS_PRE, len, LWS_WRITE_HTTP);
    return n >= 0 && queued ? (int)len : n;
}

/*
 * libuv mode: each WRITEABLE asked for costs lws' libuv plugin a
 * uv_poll_start() on the way in and another on the way out (epoll_ctl
 * DEL at once, then ADD at the next uv round: four system calls per
 * message), where the other modes' pollfd changes cost none. For a
 * connection this accepts, the binding gives the socket its POLLOUT
 * itself (lwspy_writable_again, lwspy_uv_service; one uv_poll_start
 * remains, lws clearing a POLLOUT it never set) and writes up to
 * LWSPY_BATCH_WRITES queued messages per WRITEABLE (lwspy_txq_drain). Only
 * a server connection without permessage-deflate (own_headers: the
 * extension keeps pointing at the message it compresses until the next
 * WRITEABLE), not an HTTP/2 stream (one write per WRITEABLE there, for h2's
 * flow control), and while lws holds none of its bytes (then lws asks for
 * POLLOUT itself and must get it).
 */
#define LWSPY_BATCH_WRITES 16

static int
lwspy_uv_direct(struct lws *wsi, struct lwspy_txq *q)
{
    struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);

    return q && q->own_headers && cx && cx->uv_loop && lws_get_network_wsi(wsi) == wsi &&
           !lws_partial_buffered(wsi);
}

/*
 * WRITEABLE with something queued: one lws_write, as lws requires, without
 * entering Python. Returns 1 if handled here (with *ret set for lws), 0 if
 * the queue is empty and Python should see the reason.
 */
static int
lwspy_txq_drain(struct lws *wsi, struct lwspy_txq *q, int *ret)
{
    struct lwspy_msg *m;
    int more, close_code, turn, writes = 0;

    /* A WRITEABLE for us: lws is done with the previous message's bytes. */
    lwspy_msg_free(q->inflight);
    q->inflight = NULL;

next:
    pthread_mutex_lock(&q->mu);
    m = q->head;
    if (m && q->slice && m->len - m->off > q->slice &&
        (m->flags & 0xf) != LWS_WRITE_PING && (m->flags & 0xf) != LWS_WRITE_PONG) {
        /*
         * A large message goes out one slice per WRITEABLE, as fragments:
         * lws asks for that ("around 2 x mtu"), and its permessage-deflate
         * corrupts or asserts on very large single writes.
         */
        int first = !m->off, opcode = first ? (m->flags & 0xf) : LWS_WRITE_CONTINUATION;
        size_t n = q->slice;
        int wr;

        q->queued -= n;
        pthread_mutex_unlock(&q->mu);
        wr = lws_write(wsi, m->data + LWS_PRE + m->off, n,
                       (enum lws_write_protocol)(opcode | LWS_WRITE_NO_FIN));
        if (wr < 0 || (size_t)wr < n) {
            *ret = -1;
            return 1;
        }
        /* The next slice needs the LWS_PRE bytes before it: they are the
         * tail of this slice, already written. */
        m->off += n;
        lwspy_writable_again(wsi);
        *ret = 0;
        return 1;
    }
    if (m) {
        q->head = m->next;
        if (!q->head)
            q->tail = NULL;
        q->queued -= m->len - m->off;
        q->count--;
    }
    more = q->head != NULL;
    close_code = q->close_code;
    turn = q->give_turn;
    pthread_mutex_unlock(&q->mu);

    if (m && !m->len && (m->flags & 0xf) == LWS_WRITE_CONTINUATION &&
        (m->flags & LWS_WRITE_NO_FIN)) {
        /* An empty middle fragment carries nothing; with permessage-deflate
         * lws would emit a broken frame sequence for it, so skip it. */
        lwspy_msg_free(m);
        if (more || close_code || turn)
            lwspy_writable_again(wsi);
        *ret = 0;
        return 1;
    }
    if (m && !m->len && (m->flags == LWS_WRITE_TEXT || m->flags == LWS_WRITE_BINARY)) {
        /*
         * An empty message goes out as a frame built here, uncompressed
         * (RSV1 clear, which RFC 7692 allows): with permessage-deflate, lws
         * 4.1 asserts and 4.3 sends a corrupt frame for an empty message
         * that follows another one.
         */
        unsigned char fr[LWS_PRE + 6];
        size_t flen = 2;

        fr[LWS_PRE] = (unsigned char)(0x80 | (m->flags == LWS_WRITE_TEXT ? 1 : 2));
        fr[LWS_PRE + 1] = 0;
        if (q->client) {
            fr[LWS_PRE + 1] = 0x80; /* masked, with a 4-byte key and no payload */
            lws_get_random(lws_get_context(wsi), &fr[LWS_PRE + 2], 4);
            flen = 6;
        }
        lwspy_msg_free(m);
        if (lws_write(wsi, &fr[LWS_PRE], flen, LWS_WRITE_HTTP) < (int)flen) {
            *ret = -1;
            return 1;
        }
        if (more || close_code || turn)
            lwspy_writable_again(wsi);
        *ret = 0;
        return 1;
    }
    if (m) {
        int flags = m->flags;
        size_t len = m->len - m->off;
        int n;

        if (m->off)  /* the last slice of a sliced message */
            flags = LWS_WRITE_CONTINUATION | (m->flags & LWS_WRITE_NO_FIN);
        if (q->own_headers && len >= LWSPY_SPLIT_AT &&
            (flags == LWS_WRITE_BINARY || flags == LWS_WRITE_TEXT) &&
            lws_get_network_wsi(wsi) == wsi)
            n = lwspy_write_split(wsi, m, len, flags);
        else
            n = lws_write(wsi, m->data + LWS_PRE + m->off, len, (enum lws_write_protocol)flags);

        q->inflight = m;
        if (n < 0 || (size_t)n < len) {
            *ret = -1;
            return 1;
        }
        if (more && !close_code && !turn && ++writes < LWSPY_BATCH_WRITES &&
            lwspy_uv_direct(wsi, q)) {
            /* written whole, and no extension holds on to its bytes */
            lwspy_msg_free(m);
            q->inflight = NULL;
            goto next;
        }
        if (more || close_code || turn)
            lwspy_writable_again(wsi);
        *ret = 0;
        return 1;
    }
    if (close_code) {
        /*
         * Once only: lws then sends the close frame and waits for the
         * peer's, and a WRITEABLE asked for earlier may still come meanwhile
         * (a close() from another thread requests one too). Returning -1
         * then would make lws drop the connection before the peer answered:
         * no close frame, or a reset that loses what the peer had not read.
         */
        if (!q->close_sent) {
            q->close_sent = 1;
            lws_close_reason(wsi, (enum lws_close_status)close_code, q->close_reason,
                             q->close_len);
            *ret = -1;
        } else {
            *ret = 0;
        }
        return 1;
    }
    return 0;
}

/*
 * RECEIVE for a protocol that takes whole messages: join the fragments here
 * and call Python once per message. Returns what lws should get.
 */
static int
lwspy_rx_message(struct lws *wsi, struct lwspy_proto *pp, struct lwspy_txq *q,
                 void *user, const unsigned char *in, size_t len)
{
    int final = lws_is_final_fragment(wsi), n;
    const unsigned char *data = in;
    size_t total = len;

    if (q->close_code)
        return 0; /* closing: what still arrives is not delivered */
    if (!q->rx_active) {
        q->rx_binary = lws_frame_is_binary(wsi);
        q->rx_len = 0;
    }
    if (q->rx_len + len > pp->max_message) {
        static const char why[] = "message too big";

        q->rx_active = 0;
        q->rx_len = 0;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)why, sizeof(why) - 1);
        return -1;
    }
    if (!final || q->rx_active) {
        if (q->rx_len + len > q->rx_cap) {
            /* Room for the rest of this frame at once (lws knows its length;
             * compressed or fragmented messages may still grow past it). */
            size_t need = q->rx_len + len + lws_remaining_packet_payload(wsi);
            size_t cap = q->rx_cap ? q->rx_cap : 4096;
            unsigned char *grown;

            while (cap < need)
                cap *= 2;
            if (need > 65536 && cap > need && !q->rx_len)
                cap = need; /* a big single frame: exactly its size */
            if (cap >= LWSPY_POOL_MIN) {
                grown = lwspy_big_alloc(cap, &cap);
                if (grown) {
                    if (q->rx_len)
                        memcpy(grown, q->rx, q->rx_len);
                    lwspy_big_free(q->rx, q->rx_cap);
                }
            } else {
                grown = realloc(q->rx, cap);
            }
            if (!grown) {
                lwsl_err("lws binding: no memory for a %zu-byte message\n", q->rx_len + len);
                return -1;
            }
            q->rx = grown;
            q->rx_cap = cap;
        }
        if (len)
            memcpy(q->rx + q->rx_len, in, len);
        q->rx_len += len;
        q->rx_active = 1;
        if (!final) {
            lwspy_note_partial(wsi, 1);
            return 0;
        }
        lwspy_note_partial(wsi, 0);
        data = q->rx;
        total = q->rx_len;
        q->rx_active = 0;
        q->rx_len = 0;
    }
    if (q->bridge) {
        n = lwspy_bridge_message(wsi, q, data, total, q->rx_binary);
    } else {
        lwspy_count_python++;
        lwspy_gil_round_take();
        LWSPY_PY_IN();
        n = lwspy_fast_deliver(q, (uintptr_t)user, data, total, q->rx_binary);
        LWSPY_PY_OUT();
        if (n == LWSPY_DEFAULT)
            n = 0; /* lws' default for RECEIVE: carry on */
    }
    if (q->rx && q->rx_cap > LWSPY_BIG_RX && !q->rx_active) {
        /* do not keep a big message's buffer for the connection's life */
        lwspy_big_free(q->rx, q->rx_cap);
        q->rx = NULL;
        q->rx_cap = 0;
    }
    return n;
}

/* A per-fd array grown from `old` to `cap` entries, new bytes set to `fill`. */
static void *
lwspy_grow(void *arr, size_t size, int old, int cap, int fill)
{
    unsigned char *p = realloc(arr, (size_t)cap * size);

    if (p)
        memset(p + (size_t)old * size, fill, (size_t)(cap - old) * size);
    return p;
}

#define LWSPY_GROW(field, fill) do {                                        \
        void *grown_ = lwspy_grow(ps->field, sizeof(*ps->field), old, cap, fill); \
        if (!grown_)                                                        \
            return -1;                                                      \
        ps->field = grown_;                                                 \
    } while (0)

static int
lwspy_pollset_grow(struct lwspy_pollset *ps, int fd)
{
    int cap = ps->cap ? ps->cap : 256, old = ps->cap;

    while (cap <= fd)
        cap *= 2;
    LWSPY_GROW(events, 0);
    LWSPY_GROW(watched, 0);
    LWSPY_GROW(listed, 0);
    LWSPY_GROW(changed, 0);
    LWSPY_GROW(out, 0);
    LWSPY_GROW(outpos, 0xff);  /* -1 in every byte: not in out[] */
    LWSPY_GROW(wrote, 0);
    LWSPY_GROW(left, 0);
    ps->cap = cap;
    return 0;
}

/*
 * A socket native mode cannot watch would never be serviced: its connection
 * is closed (at lws' next timer round), the others go on, and `failed` tells
 * the loop to report it.
 */
static void
lwspy_pollset_lost(struct lwspy_pollset *ps, struct lws *wsi)
{
    ps->failed = 1;
    if (wsi)  /* the reason is only logged by lws */
        lws_set_timeout(wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

static void
lwspy_pollset_note(struct lwspy_pollset *ps, struct lws *wsi, const struct lws_pollargs *a,
                   int reason)
{
    int gone = reason == LWS_CALLBACK_DEL_POLL_FD;
    unsigned char ev;

    if (a->fd < 0)
        return;
    if (a->fd >= ps->cap && lwspy_pollset_grow(ps, a->fd)) {
        if (!gone)
            lwspy_pollset_lost(ps, wsi);
        return;
    }
    ev = gone ? 0 : (unsigned char)(((a->events & LWS_POLLIN) ? 1 : 0) |
                                    ((a->events & LWS_POLLOUT) ? 2 : 0));
    if ((ev & 2) && ps->outpos[a->fd] < 0) {
        ps->outpos[a->fd] = ps->want_out;
        ps->out[ps->want_out++] = a->fd;
    } else if (!(ev & 2) && ps->outpos[a->fd] >= 0) {
        int at = ps->outpos[a->fd], last = ps->out[--ps->want_out];

        ps->out[at] = last;
        ps->outpos[last] = at;
        ps->outpos[a->fd] = -1;
    }
    ps->events[a->fd] = ev;
    if (reason == LWS_CALLBACK_ADD_POLL_FD)
        /* a new socket: whatever this number was before, epoll has it no
         * more (a closed fd leaves by itself; EEXIST falls back to MOD) */
        ps->watched[a->fd] = 0;
    if (gone && a->fd == ps->direct - 1) {
        /* closed before the loop let go of it (it does so at CLOSED): the
         * number may come back as another socket in this very service */
        ps->direct = 0;
        ps->undirected = 1;
    }
    if (gone && ps->watched[a->fd]) {
        /* lws may have closed it already (then it left epoll by itself and
         * this fails harmlessly); if not, it must leave now */
        epoll_ctl(ps->epfd, EPOLL_CTL_DEL, a->fd, NULL);
        ps->watched[a->fd] = 0;
    }
    if (!ps->listed[a->fd]) {
        ps->listed[a->fd] = 1;
        ps->changed[ps->nchanged++] = a->fd;
    }
}

/* The epoll instance native mode's loop watches; -1 (errno set) if none. */
static int
lwspy_pollset_open(struct lwspy_pollset *ps)
{
    if (!ps->ep_open) {
        ps->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (ps->epfd < 0)
            return -1;
        ps->ep_open = 1;
    }
    return ps->epfd;
}

/* epoll_ctl(), or the failure a test asked for with `refuse`. */
static int
lwspy_pollset_ctl(struct lwspy_pollset *ps, int op, int fd, struct epoll_event *ev)
{
    if (op == EPOLL_CTL_ADD && ps->refuse > 0) {
        ps->refuse--;
        errno = ENOMEM;
        return -1;
    }
    return epoll_ctl(ps->epfd, op, fd, ev);
}

/* Gives epoll what lws wants watched for fd now. The direct socket's input
 * is the loop's to watch: epoll has only its POLLOUT, and once lws stops
 * wanting its input (flow control, closing) it is an ordinary socket again
 * and `undirected` tells the loop to stop watching it. A socket epoll
 * refuses is lost (lwspy_pollset_lost). */
static void
lwspy_pollset_sync_fd(struct lws_context *ctx, struct lwspy_pollset *ps, int fd)
{
    struct epoll_event ev;
    unsigned char want = ps->events[fd];
    int op;

    if (fd == ps->direct - 1) {
        if (want & 1) {
            want &= 2;
        } else {
            ps->direct = 0;
            ps->undirected = 1;
        }
    }
    if (want == ps->watched[fd])
        return;
    op = !want ? EPOLL_CTL_DEL : ps->watched[fd] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    memset(&ev, 0, sizeof(ev));
    ev.events = ((want & 1) ? EPOLLIN : 0) | ((want & 2) ? EPOLLOUT : 0);
    ev.data.fd = fd;
    if (lwspy_pollset_ctl(ps, op, fd, &ev) < 0) {
        /* an fd number reused behind our back: the other verb */
        if (op != EPOLL_CTL_DEL &&
            lwspy_pollset_ctl(ps, op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                              fd, &ev) < 0)
            lwspy_pollset_lost(ps, wsi_from_fd(ctx, fd));
    }
    ps->watched[fd] = want;
}

/* Gives epoll what lws wants watched now, for the sockets noted since the
 * last call. POLLOUT is still wanted at the end of a service only where the
 * socket is full (others are written without asking, see
 * lwspy_native_serve): epoll watches it drain. */
static void
lwspy_pollset_apply(struct lws_context *ctx, struct lwspy_pollset *ps)
{
    int i;

    for (i = 0; i < ps->nchanged; i++) {
        ps->listed[ps->changed[i]] = 0;
        lwspy_pollset_sync_fd(ctx, ps, ps->changed[i]);
    }
    ps->nchanged = 0;
}

/* Makes wsi's socket the direct one (the loop watches its input and
 * services it with lwspy_native_service(..., -(fd + 1))): its fd if it now
 * is, -1 if another one is or lws does not want its input now. With wsi
 * NULL, the direct socket, if any, goes back to epoll (the loop stopped
 * watching it); -1. */
static int
lwspy_pollset_direct(struct lws_context *ctx, struct lwspy_pollset *ps, struct lws *wsi)
{
    int fd;

    if (!wsi) {
        fd = ps->direct - 1;
        ps->direct = 0;
        ps->undirected = 0;
        if (fd >= 0)
            lwspy_pollset_sync_fd(ctx, ps, fd);
        return -1;
    }
    fd = lws_get_socket_fd(wsi);
    if (ps->direct || fd < 0 || fd >= ps->cap || !(ps->events[fd] & 1) || !ps->ep_open)
        return -1;
    ps->direct = fd + 1;
    lwspy_pollset_sync_fd(ctx, ps, fd);
    return fd;
}

static void
lwspy_pollset_free(struct lwspy_pollset *ps)
{
    if (ps->ep_open)
        close(ps->epfd);
    free(ps->events);
    free(ps->watched);
    free(ps->listed);
    free(ps->changed);
    free(ps->out);
    free(ps->outpos);
    free(ps->wrote);
    free(ps->left);
    memset(ps, 0, sizeof(*ps));
}

/*
 * Native mode's service, the way lws' external-poll users drive it. With
 * `poll` (the loop found the epoll fd readable), the sockets epoll reports
 * ready are serviced, up to LWSPY_OUT_BATCH (more stay ready for the next
 * call: epoll is level-triggered); without (after sends queued from the
 * loop), none is. Sockets whose read ended inside a message are read again
 * at once. Then writes go in rounds while some socket still wants POLLOUT
 * and the last round wrote (one lws_write per WRITEABLE: 16 queued messages
 * take 16 rounds). Nothing is asked of the kernel for those: a socket is
 * taken to have room unless the last service left it full, as in
 * Context.run() (if it has none, lws keeps the bytes and waits for POLLOUT
 * itself); one left full is written only once epoll says it drained. Then
 * whatever lws holds buffered (rx it could not deliver yet, TLS or inflated
 * data) gets the forced service lws asks for, and epoll gets what lws wants
 * watched now. 1 if buffered input is still left (the caller services again
 * soon), -1 if lws failed. lws' timers are left to the caller's periodic
 * lws_service().
 */
#define LWSPY_OUT_BATCH 64

static short
lwspy_revents(uint32_t ep)
{
    return (short)(((ep & EPOLLIN) ? LWS_POLLIN : 0) | ((ep & EPOLLOUT) ? LWS_POLLOUT : 0) |
                   ((ep & EPOLLHUP) ? POLLHUP : 0) | ((ep & EPOLLERR) ? POLLERR : 0));
}

static int
lwspy_native_serve(struct lws_context *ctx, struct lwspy_pollset *ps, int poll)
{
    struct lwspy_ctx *cx = (struct lwspy_ctx *)lws_context_user(ctx); /* always set */
    struct lws_pollfd p[LWSPY_OUT_BATCH];
    struct epoll_event ready[LWSPY_OUT_BATCH];
    int i, j, n, round;

    if (!++ps->gen)
        ps->gen = 1; /* 0 is what a new fd has: never this service */
    cx->npartial = 0;
    if (poll < 0) {
        /* the loop found the direct socket readable (it may have stopped
         * being direct since: then nothing is read here) */
        n = ps->direct == -poll;
        ready[0].data.fd = -poll - 1;
        ready[0].events = EPOLLIN;
    } else {
        n = poll && ps->ep_open ? epoll_wait(ps->epfd, ready, LWSPY_OUT_BATCH, 0) : 0;
    }
    for (i = 0; i < n; i++) {
        int fd = ready[i].data.fd;
        short want;

        if (fd < 0 || fd >= ps->cap)
            continue;
        /* what lws wants now: an earlier socket's service may have changed it */
        want = (short)(((ps->events[fd] & 1) ? LWS_POLLIN : 0) |
                       ((ps->events[fd] & 2) ? LWS_POLLOUT : 0));
        p[0].fd = fd;
        p[0].events = want;
        p[0].revents = (short)(lwspy_revents(ready[i].events) & (want | POLLHUP | POLLERR));
        if (!p[0].revents)
            continue;
        if (p[0].revents & LWS_POLLOUT)
            ps->wrote[fd] = ps->gen;
        if (lws_service_fd(ctx, p) < 0)
            return -1;
    }
    if (lwspy_read_again(ctx, cx) < 0)
        return -1;
    for (round = 0; round < 256 && ps->want_out; round++) {
        unsigned long long before = lwspy_count_writeable;

        for (i = 0; i < ps->want_out; i += n) {
            n = ps->want_out - i;
            if (n > LWSPY_OUT_BATCH)
                n = LWSPY_OUT_BATCH;
            if (n <= 0)
                break;
            for (j = 0; j < n; j++) {
                int f = ps->out[i + j];

                p[j].fd = f;
                p[j].events = (short)(((ps->events[f] & 1) ? LWS_POLLIN : 0) | LWS_POLLOUT);
                /* Round 0: a socket the last service left full goes only if
                 * epoll just said it drained; any other is taken to have
                 * room. After that, a socket that took the last write takes
                 * the next. */
                if (round || ps->left[f] == ps->gen - 1)
                    p[j].revents = ps->wrote[f] == ps->gen ? LWS_POLLOUT : 0;
                else
                    p[j].revents = LWS_POLLOUT;
            }
            /* servicing may close sockets and reorder out[]: p[] is a copy */
            for (j = 0; j < n; j++) {
                if (!p[j].revents)
                    continue;
                if (!round && p[j].fd < ps->cap)
                    ps->wrote[p[j].fd] = ps->gen;
                if (lws_service_fd(ctx, &p[j]) < 0)
                    return -1;
            }
        }
        if (lwspy_count_writeable == before)
            break;
    }
    for (i = 0; i < ps->want_out; i++)
        ps->left[ps->out[i]] = ps->gen;
    for (i = 0; i < 64 && !lws_service_adjust_timeout(ctx, 1, 0); i++)
        if (lws_service_tsi(ctx, -1, 0) < 0)
            return -1;
    lwspy_pollset_apply(ctx, ps);
    /* More is buffered (a big compressed message takes a round per piece):
     * 1 asks the caller to come back soon rather than wait for the tick. */
    return !lws_service_adjust_timeout(ctx, 1, 0);
}

/* What a native service has for the loop besides lws' own wants: 2 if
 * messages wait in the bridge (lwspy_bridge_take), 4 if the pollset failed
 * (no memory, or epoll refused an fd), 8 if the loop must stop watching the
 * direct socket (lwspy_pollset_direct). */
static int
lwspy_native_news(struct lwspy_ctx *cx, struct lwspy_pollset *ps)
{
    return (cx->bridge && cx->bridge->in.count ? 2 : 0) | (ps->failed ? 4 : 0) |
           (ps->undirected ? 8 : 0);
}

/* Native mode: write what wsi has queued now, from the loop, outside any
 * service (one message in flight: the reply leaves before the loop's next
 * round), and give epoll what lws then wants watched. Not if lws does not
 * want POLLOUT for it or the last service left it full (epoll watches that
 * one drain). 2 if written and nothing else waits for a service (the caller
 * need not schedule one), 1 if written but something does (lwspy_native_news,
 * input lws holds), 0 if not written, -1 if lws failed. */
static int
lwspy_native_write_now(struct lws_context *ctx, struct lwspy_pollset *ps, struct lws *wsi)
{
    struct lwspy_ctx *cx = (struct lwspy_ctx *)lws_context_user(ctx); /* always set */
    struct lws_pollfd p;
    int fd, n;

    if (ps->serving || !wsi)
        return 0;
    fd = lws_get_socket_fd(wsi);
    if (fd < 0 || fd >= ps->cap || !(ps->events[fd] & 2) || ps->left[fd] == ps->gen)
        return 0;
    p.fd = fd;
    p.events = (short)(((ps->events[fd] & 1) ? LWS_POLLIN : 0) | LWS_POLLOUT);
    p.revents = LWS_POLLOUT;
    ps->serving = 1;
    n = lws_service_fd(ctx, &p);
    ps->serving = 0;
    if (n < 0)
        return -1;
    lwspy_pollset_apply(ctx, ps);
    if (lwspy_native_news(cx, ps) || cx->npartial || !lws_service_adjust_timeout(ctx, 1, 0))
        return 1;
    return 2;
}

/* lwspy_native_serve's result, plus lwspy_native_news' (the direct socket's
 * release is reported once). */
static int
lwspy_native_service(struct lws_context *ctx, struct lwspy_pollset *ps, int poll)
{
    struct lwspy_ctx *cx = (struct lwspy_ctx *)lws_context_user(ctx); /* always set */
    int n;

    ps->serving = 1;
    n = lwspy_native_serve(ctx, ps, poll);
    ps->serving = 0;

    if (n >= 0) {
        n |= lwspy_native_news(cx, ps);
        ps->undirected = 0;
    }
    return n;
}

/*
 * lws.asyncio's libuv mode: lws built with its libuv event library (Debian's
 * 4.1.6, which has no external poll) runs on a uv loop of ours, and that
 * loop is nested in the asyncio loop the way libuv allows embedding: the
 * asyncio loop watches uv_backend_fd() (libuv's epoll instance) and calls
 * uv_run(UV_RUN_NOWAIT) when it is readable or uv_backend_timeout() is due.
 * libuv is found at run time (dlopen, the soname lws' evlib plugin links),
 * so the package needs neither its headers nor a link to it. Never
 * lws_service() on such a context: lws would run the uv loop until it has
 * no handles left.
 */
#define LWSPY_UV_RUN_NOWAIT 2  /* uv_run_mode, stable across libuv 1.x */

/* Whether libuv holds watcher changes it has not given its epoll instance
 * yet: it applies them only inside uv_run(), so until then a new socket is
 * not watched at all. uv_loop_t's layout is part of libuv 1's ABI. */
static int
lwspy_uv_dirty(void *loop)
{
#if defined(LWSPY_WITH_LIBUV)
    uv_loop_t *l = (uv_loop_t *)loop;

    return l->watcher_queue[0] != (void *)&l->watcher_queue;
#else
    (void)loop;
    return 1;
#endif
}

static struct {
    size_t (*loop_size)(void);
    int (*loop_init)(void *);
    int (*loop_close)(void *);
    int (*loop_alive)(const void *);
    int (*run)(void *, int);
    int (*backend_fd)(const void *);
    int (*backend_timeout)(const void *);
} lwspy_uv;

static pthread_once_t lwspy_uv_once = PTHREAD_ONCE_INIT;

static void
lwspy_uv_open(void)
{
    void *h = dlopen("libuv.so.1", RTLD_NOW | RTLD_LOCAL);

    if (!h)
        return;
    *(void **)&lwspy_uv.loop_size = dlsym(h, "uv_loop_size");
    *(void **)&lwspy_uv.loop_init = dlsym(h, "uv_loop_init");
    *(void **)&lwspy_uv.loop_close = dlsym(h, "uv_loop_close");
    *(void **)&lwspy_uv.loop_alive = dlsym(h, "uv_loop_alive");
    *(void **)&lwspy_uv.backend_fd = dlsym(h, "uv_backend_fd");
    *(void **)&lwspy_uv.backend_timeout = dlsym(h, "uv_backend_timeout");
    if (lwspy_uv.loop_size && lwspy_uv.loop_init && lwspy_uv.loop_close &&
        lwspy_uv.loop_alive && lwspy_uv.backend_fd && lwspy_uv.backend_timeout)
        *(void **)&lwspy_uv.run = dlsym(h, "uv_run");  /* last: it says all are there */
}

/* 0 if libuv is loaded (once, whichever thread asks first). */
static int
lwspy_uv_load(void)
{
    pthread_once(&lwspy_uv_once, lwspy_uv_open);
    return lwspy_uv.run ? 0 : -1;
}

/* A new uv loop (malloc'd uv_loop_t), or NULL if libuv is not there. */
static void *
lwspy_uv_new(void)
{
    void *loop;

    if (lwspy_uv_load())
        return NULL;
    loop = calloc(1, lwspy_uv.loop_size());
    if (loop && lwspy_uv.loop_init(loop)) {
        free(loop);
        loop = NULL;
    }
    return loop;
}

static int
lwspy_uv_fd(void *loop)
{
    return lwspy_uv.backend_fd(loop);
}

/* ms until the uv loop wants to run (its next timer; 0: now), -1 for never. */
static int
lwspy_uv_timeout(void *loop)
{
    return lwspy_uv.backend_timeout(loop);
}

/* Destroys ctx (if not NULL) and then its uv loop. lws closes its uv handles
 * asynchronously, so the loop runs until none is left (bounded); lws before
 * 4.2 then needs lws_context_destroy() once more to free the context (later
 * versions do that from the last handle's close callback). 0 if the loop
 * closed. */
static int
lwspy_uv_free(struct lws_context *ctx, void *loop)
{
    int i, ret;

    if (ctx)
        lws_context_destroy(ctx);
    for (i = 0; i < 1000 && lwspy_uv.loop_alive(loop); i++)
        lwspy_uv.run(loop, LWSPY_UV_RUN_NOWAIT);
#if LWS_LIBRARY_VERSION_NUMBER < 4002000
    if (ctx)
        lws_context_destroy(ctx);
#endif
    ret = lwspy_uv.loop_close(loop);
    if (!ret)
        free(loop);  /* else leaked rather than freed under live handles */
    return ret;
}

#define LWSPY_UV_ROUNDS 64  /* a client's queue goes one write per round */

/*
 * libuv mode's service: uv_run(UV_RUN_NOWAIT) (libuv applies the watcher
 * changes lws made since, epoll_waits, then calls lws for the ready
 * sockets), whether or not the loop found libuv's fd readable (`poll`, as
 * native mode's: unused), and again while libuv holds watcher changes (a
 * new socket, a WRITEABLE asked for) or wants to run now (lws' idle
 * handle, which lws starts after each socket event to run its timers and
 * forced service), up to LWSPY_UV_ROUNDS times; before each, the sockets
 * the binding gives their POLLOUT itself (lwspy_uv_direct) are written.
 * Those services do not start lws' idle handle, so a timer lws sets in them
 * waits for the next socket event or the loop's tick (250 ms, which wakes
 * lws), as native mode's timers wait for its tick. What the loop asked for
 * through the bridge (resumed reads) is served first. 1 if lws wants
 * service again at once (buffered input, or rounds left over), plus 2 if
 * messages wait in the bridge.
 */
static int
lwspy_uv_service(struct lws_context *ctx, void *loop, int poll)
{
    struct lwspy_ctx *cx = (struct lwspy_ctx *)lws_context_user(ctx); /* always set */
    int i, n, woke = 0;

    (void)poll;
    if (cx->bridge)
        lwspy_bridge_serve(cx->bridge);
    for (i = 0; i < LWSPY_UV_ROUNDS; i++) {
        /* a socket that lists itself again stays listed for the next round */
        if (cx->nagain)
            lwspy_service_round(ctx, cx->again, &cx->nagain, LWS_POLLOUT);
        lwspy_uv.run(loop, LWSPY_UV_RUN_NOWAIT);
        if (cx->nagain)
            continue;
        if (lwspy_uv_dirty(loop) || !lwspy_uv.backend_timeout(loop))
            continue;
        /* lws holds input it has not delivered (rx resumed from the loop,
         * inflated data): only its idle handle serves that, and only a
         * socket event starts it. Its event pipe is one. */
        if (woke || lws_service_adjust_timeout(ctx, 1, 0))
            break;
        woke = 1;
        lws_cancel_service(ctx);
    }
    /* libuv still wants to run (rounds left over): the loop comes back at
     * once, else what it holds would wait for the tick */
    n = !lws_service_adjust_timeout(ctx, 1, 0) || i == LWSPY_UV_ROUNDS || cx->nagain;
    if (cx->bridge && cx->bridge->in.count)
        n |= 2;
    return n;
}

/*
 * libuv mode, a callback's nonzero return on a WebSocket: lws built with
 * _DEBUG (Debian's 4.1.6 is) closes the connection a second time right
 * after the first close under libuv ("uv repeat test" in lws_service_fd),
 * which drops it before the close frame lws_close_reason() prepared is
 * sent. The close starts from lws' timer instead (an asynchronous kill):
 * lws then sends that close frame and waits for the peer's, as it would
 * have. Until then nothing more is delivered or written (`close_sent`).
 */
static int
lwspy_uv_close_later(struct lws *wsi)
{
    struct lwspy_txq *q = (struct lwspy_txq *)lws_get_opaque_user_data(wsi);

    if (q) {
        pthread_mutex_lock(&q->mu);
        if (!q->close_code)
            q->close_code = LWS_CLOSE_STATUS_NOSTATUS;
        q->close_sent = 1;
        pthread_mutex_unlock(&q->mu);
    }
    lws_set_timer_usecs(wsi, 0);
    return 0;
}

/*
 * Every protocol's callback. A reason enters Python only if the protocol's
 * handlers want it or the binding's bookkeeping needs it; everything else
 * gets lws' default handling without touching Python. Queued sends are
 * written here, in C.
 */
static int
lwspy_dispatch(struct lws *wsi, enum lws_callback_reasons reason,
               void *user, void *in, size_t len)
{
    const struct lws_protocols *p = lws_get_protocol(wsi);
    struct lwspy_proto *pp = p ? (struct lwspy_proto *)p->user : NULL;
    unsigned int r = (unsigned int)reason;
    int n, rx_flags = 0;

    lwspy_count_in++;
    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED) {
        struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);

        if (cx && cx->bridge)
            lwspy_bridge_serve(cx->bridge);
    }
    if (reason == LWS_CALLBACK_ADD_POLL_FD || reason == LWS_CALLBACK_DEL_POLL_FD ||
        reason == LWS_CALLBACK_CHANGE_MODE_POLL_FD) {
        struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);

        if (cx && cx->pollset)
            lwspy_pollset_note(cx->pollset, wsi, (const struct lws_pollargs *)in, (int)reason);
    }
    if (pp && (reason == LWS_CALLBACK_SERVER_WRITEABLE ||
               reason == LWS_CALLBACK_CLIENT_WRITEABLE)) {
        struct lwspy_txq *q = (struct lwspy_txq *)lws_get_opaque_user_data(wsi);

        lwspy_count_writeable++;

        if (q && !q->dead && lwspy_txq_drain(wsi, q, &n))
            return n;
        /* The queue is empty: only a WRITEABLE handler, or a send() waiting
         * for the queue to drain (give_turn), has a use for this in Python. */
        if (q && !q->dead && !q->give_turn && !pp->want[r])
            return 0;
    }
    if (pp && pp->messages && (reason == LWS_CALLBACK_RECEIVE ||
                               reason == LWS_CALLBACK_CLIENT_RECEIVE)) {
        struct lwspy_txq *q = (struct lwspy_txq *)lws_get_opaque_user_data(wsi);

        if (q && !q->dead && q->conn)
            return lwspy_rx_message(wsi, pp, q, user, (const unsigned char *)in, len);
    }
    if (r < LWSPY_NREASONS && (lwspy_always[r] || (pp && pp->want[r]))) {
        struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);
        void *ctx_handle = cx ? cx->handle : NULL;

        if (ctx_handle) {
            if (reason == LWS_CALLBACK_RECEIVE || reason == LWS_CALLBACK_CLIENT_RECEIVE)
                rx_flags = (lws_is_first_fragment(wsi) ? LWSPY_RX_FIRST : 0) |
                           (lws_is_final_fragment(wsi) ? LWSPY_RX_FINAL : 0) |
                           (lws_frame_is_binary(wsi) ? LWSPY_RX_BINARY : 0);
            lwspy_count_python++;
            LWSPY_PY_IN();
            n = _lwspy_callback(ctx_handle, pp ? pp->index : -1, wsi,
                                (int)reason, (uintptr_t)user, (char *)in, len, rx_flags);
            LWSPY_PY_OUT();
            if (n != LWSPY_DEFAULT)
                return n;
        }
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static int
lwspy_trampoline(struct lws *wsi, enum lws_callback_reasons reason,
                 void *user, void *in, size_t len)
{
    int n;

    if (reason == LWS_CALLBACK_TIMER) {
        struct lwspy_txq *q = (struct lwspy_txq *)lws_get_opaque_user_data(wsi);
        struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);

        if (q && cx && cx->uv_loop && q->close_sent)
            return -1;
    }
    n = lwspy_dispatch(wsi, reason, user, in, len);

    if (n && (reason == LWS_CALLBACK_RECEIVE || reason == LWS_CALLBACK_CLIENT_RECEIVE ||
              reason == LWS_CALLBACK_SERVER_WRITEABLE ||
              reason == LWS_CALLBACK_CLIENT_WRITEABLE)) {
        struct lwspy_ctx *cx = lwspy_wsi_cx(wsi);

        if (cx && cx->uv_loop)
            return lwspy_uv_close_later(wsi);
    }
    return n;
}

static lws_callback_function *
lwspy_trampoline_ptr(void)
{
    return lwspy_trampoline;
}

/*
 * Context.run()'s loop, kept in C: lws_service() rounds until *attention is
 * set (stop(), call_soon_threadsafe(), an exception to re-raise, a signal
 * for Python's handlers: see lwspy_sigwake) or lws fails.
 */
static int
lwspy_run_rounds(struct lws_context *ctx, struct lwspy_ctx *cx, int *attention)
{
    while (!__atomic_load_n(attention, __ATOMIC_ACQUIRE)) {
        cx->nagain = 0;
        cx->npartial = 0;
        lwspy_gil_round_end();
        if (lws_service(ctx, 0) < 0)
            return -1;
        if (lwspy_read_again(ctx, cx) < 0)
            return -1;
        /*
         * The sockets that asked for WRITEABLE right after a complete write
         * get it at once, as native mode does, rather than through one
         * more poll() per message (one lws_write per WRITEABLE still: a
         * queue of 16 takes 16 rounds). A socket that turns out full makes
         * lws keep the bytes and wait for POLLOUT itself.
         */
        if (lwspy_service_listed(ctx, cx->again, &cx->nagain, LWS_POLLOUT, 256) < 0)
            return -1;
        if (cx->bridge)
            lwspy_bridge_signal(cx->bridge); /* thread mode: the round's messages */
    }
    return 0;
}

static int
lwspy_run(struct lws_context *ctx, int *attention)
{
    struct lwspy_ctx *cx = (struct lwspy_ctx *)lws_context_user(ctx); /* always set */
    int ret, outer = lwspy_gil_rounds; /* set: run() inside a handler of another */

    cx->again_on = 1;
    lwspy_gil_rounds = 1;
    ret = lwspy_run_rounds(ctx, cx, attention);
    lwspy_gil_round_end();
    lwspy_gil_rounds = outer;
    cx->again_on = 0;
    cx->nagain = 0;
    cx->npartial = 0;
    return ret;
}

/*
 * Signals while run() is in C: Python's C-level handler only notes the
 * signal (its Python handler, e.g. KeyboardInterrupt, runs once we are back
 * in Python) and writes a byte to the wakeup fd (signal.set_wakeup_fd), which
 * is the write end of our pipe. A small thread waits on the read end, raises
 * *attention and wakes lws' poll, so run() returns to Python at once; the
 * bytes are passed on to the wakeup fd that was there before (fwd).
 */
struct lwspy_sigwake {
    int rfd;
    int fwd;
    struct lws_context *ctx;
    int *attention;
    pthread_t thread;
};

static void *
lwspy_sigwake_main(void *arg)
{
    struct lwspy_sigwake *w = (struct lwspy_sigwake *)arg;
    unsigned char b[64];
    ssize_t n;

    for (;;) {
        n = read(w->rfd, b, sizeof(b));
        if (n == 0)
            break; /* the write end was closed: run() is over */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (w->fwd >= 0 && write(w->fwd, b, (size_t)n) < 0)
            w->fwd = -1;
        __atomic_store_n(w->attention, 1, __ATOMIC_RELEASE);
        lws_cancel_service(w->ctx);
    }
    return NULL;
}

/* Returns the pipe's (non-blocking) write end for signal.set_wakeup_fd, or -1. */
static int
lwspy_sigwake_start(struct lwspy_sigwake *w, struct lws_context *ctx, int *attention)
{
    int fds[2];

    if (pipe(fds) < 0)
        return -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    w->rfd = fds[0];
    w->fwd = -1;
    w->ctx = ctx;
    w->attention = attention;
    if (pthread_create(&w->thread, NULL, lwspy_sigwake_main, w)) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    return fds[1];
}

static void
lwspy_sigwake_stop(struct lwspy_sigwake *w, int wfd)
{
    close(wfd);
    pthread_join(w->thread, NULL);
    close(w->rfd);
}

static void
lwspy_info_init(struct lws_context_creation_info *info)
{
    memset(info, 0, sizeof(*info));
    info->gid = -1;
    info->uid = -1;
}

static void
lwspy_log_emit(int level, const char *line)
{
    LWSPY_PY_IN();
    _lwspy_log(level, line);
    LWSPY_PY_OUT();
}

static void
lwspy_log_install(int level)
{
    lws_set_log_level(level, lwspy_log_emit);
}

static void
lwspy_timer_cb(lws_sorted_usec_list_t *sul)
{
    struct lwspy_timer *t = lws_container_of(sul, struct lwspy_timer, sul);

    LWSPY_PY_IN();
    _lwspy_timer(t->ctx_handle, t->id);
    LWSPY_PY_OUT();
}

static void
lwspy_wake_cb(lws_sorted_usec_list_t *sul)
{
    /* Nothing to do: firing is what ends the poll wait in lws_service(). */
    (void)sul;
}

static void
lwspy_uv_rearm(struct lws_context *ctx);

static void
lwspy_timer_schedule(struct lws_context *ctx, struct lwspy_timer *t, lws_usec_t us)
{
    lws_sul_schedule(ctx, 0, &t->sul, lwspy_timer_cb, us);
    lwspy_uv_rearm(ctx);
}

static void
lwspy_wake_schedule(struct lws_context *ctx, struct lwspy_timer *t, lws_usec_t us)
{
    lws_sul_schedule(ctx, 0, &t->sul, lwspy_wake_cb, us);
    lwspy_uv_rearm(ctx);
}

/* libuv mode: lws 4.1 sets its uv timer to its next timer only from the idle
 * handle it starts after a socket event, so a timer scheduled from the loop
 * would wait for the next traffic. Waking lws (its event pipe is a socket
 * event) has it look at its timers again. */
static void
lwspy_uv_rearm(struct lws_context *ctx)
{
    struct lwspy_ctx *cx = (struct lwspy_ctx *)lws_context_user(ctx);

    if (cx && cx->uv_loop)
        lws_cancel_service(ctx);
}

static void
lwspy_timer_cancel(struct lws_context *ctx, struct lwspy_timer *t)
{
    (void)ctx;
    lws_sul_cancel(&t->sul);
}

#if !defined(LWS_WITHOUT_EXTENSIONS)
/*
 * lws' client parser before 4.3.5 (4.1.6 here; upstream issues 2749 and
 * 2794 report 4.3.2) loops for ever inside lws_service() when a connection
 * with permessage-deflate receives a frame the extension leaves alone: a
 * pong with a payload, or a data frame the peer did not compress (Node's ws
 * does not compress small messages). The extension answers "nothing we
 * should do" and that parser then never counts the payload as consumed, so
 * it hands the same bytes to the callback again and again. Its server
 * parser, and every parser from 4.3.5 on, treat that answer like "unknown"
 * (the answer when no extension is active); telling the old client parser
 * "unknown" makes it consume the payload once, as the newer ones do. The
 * values are lws' private enum pmd_return (the same in 4.1 and 4.3).
 */
#define LWSPY_PMDR_UNKNOWN 0
#define LWSPY_PMDR_HAS_PENDING 2
#define LWSPY_PMDR_NOTHING_WE_SHOULD_DO 5

/* What lws passes the extension with LWS_EXT_CB_PAYLOAD_RX (its private
 * struct lws_ext_pm_deflate_rx_ebufs, the same in 4.1 and 4.3). */
struct lwspy_pmd_ebufs {
    struct lws_tokens eb_in;
    struct lws_tokens eb_out;
};

/*
 * lws inflates a read where it read it: in the one buffer all connections
 * of the service thread read into (its pt serv_buf). When the inflated
 * output fills the extension's buffer (1 KiB), zlib keeps a pointer to the
 * rest of that input, and lws drains it in later services; a read of
 * another connection in between overwrites it. zlib then fails ("invalid
 * distance too far back": the connection closes) or, worse, inflates the
 * other connection's bytes into this message. C lws alone does the same
 * (4.1.6 and 4.3.5: conformance/echo.c in tests/test_conformance.py's
 * lockstep test). So new input is first copied to the connection's own
 * buffer, which is left alone while zlib still holds some of it.
 */
static void
lwspy_pmd_own_input(struct lwspy_txq *q, struct lwspy_pmd_ebufs *pmdrx)
{
    size_t len;

    if (!q || q->dead || q->pmd_pending || !pmdrx->eb_in.token || pmdrx->eb_in.len <= 0)
        return;
    len = (size_t)pmdrx->eb_in.len;
    if (len > q->pmd_in_cap) {
        unsigned char *grown = realloc(q->pmd_in, len);

        if (!grown)
            return; /* lws' own way, then */
        q->pmd_in = grown;
        q->pmd_in_cap = len;
    }
    memcpy(q->pmd_in, pmdrx->eb_in.token, len);
    pmdrx->eb_in.token = q->pmd_in;
}

static int
lwspy_pmd_callback(struct lws_context *context, const struct lws_extension *ext,
                   struct lws *wsi, enum lws_extension_callback_reasons reason,
                   void *user, void *in, size_t len)
{
    struct lwspy_txq *q;
    int n;

    if (reason != LWS_EXT_CB_PAYLOAD_RX)
        return lws_extension_callback_pm_deflate(context, ext, wsi, reason, user, in, len);
    q = (struct lwspy_txq *)lws_get_opaque_user_data(wsi);
    if (in)
        lwspy_pmd_own_input(q, (struct lwspy_pmd_ebufs *)in);
    n = lws_extension_callback_pm_deflate(context, ext, wsi, reason, user, in, len);
    if (q && !q->dead)
        q->pmd_pending = n == LWSPY_PMDR_HAS_PENDING;
#if LWS_LIBRARY_VERSION_MAJOR == 4 && LWS_LIBRARY_VERSION_MINOR < 3 || \
    LWS_LIBRARY_VERSION_MAJOR == 4 && LWS_LIBRARY_VERSION_MINOR == 3 && \
    LWS_LIBRARY_VERSION_PATCH < 5
    if (n == LWSPY_PMDR_NOTHING_WE_SHOULD_DO && q && q->client)
        return LWSPY_PMDR_UNKNOWN;
#endif
    return n;
}
#endif

static int
lwspy_pmd_extension(struct lws_extension *ext)
{
#if !defined(LWS_WITHOUT_EXTENSIONS)
    ext[0].name = "permessage-deflate";
    ext[0].callback = lwspy_pmd_callback;
    ext[0].client_offer = "permessage-deflate; client_max_window_bits";
    memset(&ext[1], 0, sizeof(ext[1]));
    return 1;
#else
    (void)ext;
    return 0;
#endif
}

/* HTTP/2 streams need their body written from WRITEABLE; h1 is freer. */
static int
lwspy_is_h2(struct lws *wsi)
{
#if defined(LWS_ROLE_H2)
    return lws_get_network_wsi(wsi) != wsi;
#else
    (void)wsi;
    return 0;
#endif
}

/* Custom (non-token) headers exist only with LWS_WITH_CUSTOM_HEADERS;
 * -2 tells Python the build lacks them. */
static int
lwspy_hdr_custom_length(struct lws *wsi, const char *name, int nlen)
{
#if defined(LWS_WITH_CUSTOM_HEADERS)
    return lws_hdr_custom_length(wsi, name, nlen);
#else
    (void)wsi; (void)name; (void)nlen;
    return -2;
#endif
}

static int
lwspy_hdr_custom_copy(struct lws *wsi, char *dst, int len, const char *name, int nlen)
{
#if defined(LWS_WITH_CUSTOM_HEADERS)
    return lws_hdr_custom_copy(wsi, dst, len, name, nlen);
#else
    (void)wsi; (void)dst; (void)len; (void)name; (void)nlen;
    return -2;
#endif
}
