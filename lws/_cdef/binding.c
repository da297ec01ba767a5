/* The binding's C side: as small as it can be. */

#include <libwebsockets.h>
#include <string.h>

#define LWSPY_NREASONS 128

struct lwspy_timer {
    lws_sorted_usec_list_t sul;
    void *ctx_handle;
    long long id;
};

struct lwspy_proto {
    int index;
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
unsigned long long lwspy_count_in;
unsigned long long lwspy_count_python;

static int _lwspy_callback(void *ctx_handle, int proto_index, struct lws *wsi,
                           int reason, void *user, void *in, size_t len);
static void _lwspy_log(int level, const char *line);
static void _lwspy_timer(void *ctx_handle, long long id);

/*
 * Every protocol's callback. A reason enters Python only if the protocol's
 * handlers want it or the binding's bookkeeping needs it; everything else
 * gets lws' default handling without touching Python.
 */
static int
lwspy_trampoline(struct lws *wsi, enum lws_callback_reasons reason,
                 void *user, void *in, size_t len)
{
    const struct lws_protocols *p = lws_get_protocol(wsi);
    struct lwspy_proto *pp = p ? (struct lwspy_proto *)p->user : NULL;
    unsigned int r = (unsigned int)reason;
    int n;

    lwspy_count_in++;
    if (r < LWSPY_NREASONS && (lwspy_always[r] || (pp && pp->want[r]))) {
        void *ctx_handle = lws_context_user(lws_get_context(wsi));

        if (ctx_handle) {
            lwspy_count_python++;
            n = _lwspy_callback(ctx_handle, pp ? pp->index : -1, wsi,
                                (int)reason, user, in, len);
            if (n != LWSPY_DEFAULT)
                return n;
        }
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static lws_callback_function *
lwspy_trampoline_ptr(void)
{
    return lwspy_trampoline;
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
    _lwspy_log(level, line);
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

    _lwspy_timer(t->ctx_handle, t->id);
}

static void
lwspy_wake_cb(lws_sorted_usec_list_t *sul)
{
    /* Nothing to do: firing is what ends the poll wait in lws_service(). */
    (void)sul;
}

static void
lwspy_timer_schedule(struct lws_context *ctx, struct lwspy_timer *t, lws_usec_t us)
{
    lws_sul_schedule(ctx, 0, &t->sul, lwspy_timer_cb, us);
}

static void
lwspy_wake_schedule(struct lws_context *ctx, struct lwspy_timer *t, lws_usec_t us)
{
    lws_sul_schedule(ctx, 0, &t->sul, lwspy_wake_cb, us);
}

static void
lwspy_timer_cancel(struct lws_context *ctx, struct lwspy_timer *t)
{
    (void)ctx;
    lws_sul_cancel(&t->sul);
}

static int
lwspy_pmd_extension(struct lws_extension *ext)
{
#if !defined(LWS_WITHOUT_EXTENSIONS)
    ext[0].name = "permessage-deflate";
    ext[0].callback = lws_extension_callback_pm_deflate;
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
