/* The binding's own C side (lws/_cdef/binding.c): feature flags, the
 * callback trampoline with its reason filter, and tiny helpers. */

static const char LWSPY_BUILT_VERSION[];
static const int LWSPY_HAS_TLS;
static const int LWSPY_HAS_HTTP2;
static const int LWSPY_HAS_EXTENSIONS;
static const int LWSPY_HAS_IPV6;
static const int LWSPY_HAS_UNIX_SOCK;
static const int LWSPY_HAS_EXTERNAL_POLL;
static const int LWSPY_HAS_CUSTOM_HEADERS;
static const int LWSPY_HAS_EVENT_LIB_CUSTOM;
static const int LWSPY_HAS_LIBUV;
static const int LWSPY_HAS_CLIENT;
static const int LWSPY_HAS_SERVER;
static const int LWSPY_DEFAULT;

/* Reasons the binding itself must see, whatever the user subscribed to. */
extern unsigned char lwspy_always[128];

lws_callback_function *lwspy_trampoline_ptr(void);
int lwspy_run(struct lws_context *ctx, int *attention);
int lwspy_native_service(struct lws_context *ctx, struct lwspy_pollset *ps, int poll);
int lwspy_pollset_open(struct lwspy_pollset *ps);
void lwspy_pollset_apply(struct lws_context *ctx, struct lwspy_pollset *ps);
int lwspy_pollset_direct(struct lws_context *ctx, struct lwspy_pollset *ps, struct lws *wsi);
void lwspy_pollset_free(struct lwspy_pollset *ps);
void *lwspy_uv_new(void);
int lwspy_uv_fd(void *loop);
int lwspy_uv_timeout(void *loop);
int lwspy_uv_free(struct lws_context *ctx, void *loop);
int lwspy_uv_service(struct lws_context *ctx, void *loop, int poll);
extern unsigned long long lwspy_count_writeable;
int lwspy_sigwake_start(struct lwspy_sigwake *w, struct lws_context *ctx, int *attention);
void lwspy_sigwake_stop(struct lwspy_sigwake *w, int wfd);
void lwspy_info_init(struct lws_context_creation_info *info);
void lwspy_log_install(int level);
void lwspy_timer_schedule(struct lws_context *ctx, struct lwspy_timer *t, lws_usec_t us);
void lwspy_wake_schedule(struct lws_context *ctx, struct lwspy_timer *t, lws_usec_t us);
void lwspy_timer_cancel(struct lws_context *ctx, struct lwspy_timer *t);

/* Counters of what reached the trampoline and what went on to Python:
 * they are how the filter's saving is measured. */
extern unsigned long long lwspy_count_in;
extern unsigned long long lwspy_count_python;

/* user is the session buffer's address (0 for NULL): Python compares it as an int. */
extern "Python" int _lwspy_callback(void *ctx_handle, int proto_index, struct lws *wsi,
                                    int reason, uintptr_t user, char *in, size_t len,
                                    int rx_flags);

/* rx_flags for RECEIVE / CLIENT_RECEIVE, so Python needs no extra calls. */
#define LWSPY_RX_FIRST 1
#define LWSPY_RX_FINAL 2
#define LWSPY_RX_BINARY 4

void lwspy_txq_init(struct lwspy_txq *q);
long long lwspy_txq_push(struct lwspy_txq *q, const unsigned char *payload, size_t len,
                         int flags, size_t limit);
long long lwspy_send(struct lwspy_txq *q, struct lws *wsi, const unsigned char *payload,
                     size_t len, int flags, size_t limit);
int lwspy_txq_close(struct lwspy_txq *q, int code, const unsigned char *reason, size_t len);
void lwspy_txq_kill(struct lwspy_txq *q);
void lwspy_pool_drop(void);

/* lws.asyncio's hand-offs (both modes): see struct lwspy_bridge. */
int lwspy_bridge_init(struct lwspy_bridge *b, struct lws_context *ctx, int wake);
void lwspy_bridge_free(struct lwspy_bridge *b);
void lwspy_bridge_attach(struct lwspy_bridge *b, struct lwspy_txq *q, struct lws *wsi,
                         long long conn_id, int rx_limit);
int lwspy_bridge_take(struct lwspy_bridge *b);
void lwspy_bridge_consumed(struct lwspy_txq *q);
void lwspy_bridge_defer(struct lwspy_bridge *b);
void lwspy_bridge_flush(struct lwspy_bridge *b);

/* fastcall.c: puts native_service, send, write_now, bridge_take and bridge_consumed on
 * lws._lws as fast_* CPython functions that keep the GIL; 0 on success. */
int lwspy_fastcall_install(void);
extern "Python" void _lwspy_log(int level, const char *line);
extern "Python" void _lwspy_timer(void *ctx_handle, long long id);

/* permessage-deflate: fills ext[0] (and a zeroed terminator in ext[1]);
 * returns 0 if this lws was built without extensions. */
int lwspy_pmd_extension(struct lws_extension *ext);
int lwspy_is_h2(struct lws *wsi);

int lwspy_hdr_custom_length(struct lws *wsi, const char *name, int nlen);
int lwspy_hdr_custom_copy(struct lws *wsi, char *dst, int len, const char *name, int nlen);
