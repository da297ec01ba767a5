/* Types the binding uses. Structs end with "...;" so the C compiler fills in
 * the real layout of whichever lws version is being built against. */

struct lws;
struct lws_context;
struct lws_vhost;

typedef int64_t lws_usec_t;

/* Values are read by the compiler; Python has its own table (lws.reasons). */
enum lws_callback_reasons { LWS_CALLBACK_ESTABLISHED, ... };

typedef int lws_callback_function(struct lws *wsi, enum lws_callback_reasons reason,
                                  void *user, void *in, size_t len);

struct lws_protocols {
    const char *name;
    lws_callback_function *callback;
    size_t per_session_data_size;
    size_t rx_buffer_size;
    unsigned int id;
    void *user;
    size_t tx_packet_size;
    ...;
};

struct lws_extension;
enum lws_extension_callback_reasons { LWS_EXT_CB_CONSTRUCT, ... };
typedef int lws_extension_callback_function(struct lws_context *context,
                                            const struct lws_extension *ext, struct lws *wsi,
                                            enum lws_extension_callback_reasons reason,
                                            void *user, void *in, size_t len);
struct lws_extension {
    const char *name;
    lws_extension_callback_function *callback;   /* set from C */
    const char *client_offer;
};

struct lws_http_mount {
    const struct lws_http_mount *mount_next;
    const char *mountpoint;
    const char *origin;
    const char *def;
    const char *protocol;
    int cache_max_age;
    unsigned char origin_protocol;
    unsigned char mountpoint_len;
    ...;
};

struct lws_context_creation_info {
    int port;
    const char *iface;
    const struct lws_protocols *protocols;
    const struct lws_extension *extensions;
    const struct lws_http_mount *mounts;
    const char *server_string;
    const char *ssl_cert_filepath;
    const char *ssl_private_key_filepath;
    const char *ssl_ca_filepath;
    const char *client_ssl_ca_filepath;
    const char *client_ssl_cert_filepath;
    const char *client_ssl_private_key_filepath;
    const char *alpn;
    uint64_t options;
    void *user;
    const char *vhost_name;
    unsigned int timeout_secs;
    unsigned int timeout_secs_ah_idle;
    unsigned int pt_serv_buf_size;
    unsigned short max_http_header_data;
    unsigned int fd_limit_per_thread;
    int ka_time;
    int keepalive_timeout;
    void **foreign_loops;
    ...;
};

struct lws_client_connect_info {
    struct lws_context *context;
    const char *address;
    int port;
    int ssl_connection;
    const char *path;
    const char *host;
    const char *origin;
    const char *protocol;
    int ietf_version_or_minus_one;
    void *userdata;
    const char *method;
    struct lws_vhost *vhost;
    struct lws **pwsi;
    const char *local_protocol_name;
    void *opaque_user_data;
    ...;
};

struct lws_process_html_args {
    char *p;
    int len;
    int max_len;
    int final;
    ...;
};

typedef struct lws_sorted_usec_list { ...; } lws_sorted_usec_list_t;

struct lws_pollargs {
    int fd;
    int events;
    int prev_events;
};

/* The binding's timer: an lws sul plus the id Python knows it by. */
struct lwspy_timer {
    lws_sorted_usec_list_t sul;
    void *ctx_handle;
    long long id;
};

/* A connection's send queue, drained in C one lws_write per WRITEABLE.
 * Python owns the memory (it lives as long as the Connection object); the
 * messages are malloc'd in C and freed when written or when killed. */
struct lwspy_txq {
    size_t queued;      /* payload bytes waiting */
    int count;          /* messages waiting */
    int dead;           /* the connection is gone: pushes fail */
    int give_turn;      /* when emptied, one more WRITEABLE goes to Python */
    int client;         /* frames we build ourselves must be masked */
    int own_headers;    /* server side, no permessage-deflate: large frames
                           may go out as header, then payload */
    size_t slice;       /* larger messages go out as fragments of this size */
    uintptr_t conn;     /* the Connection, id(): fastcall.c calls _deliver with it */
    int rx_waiting;     /* lws.asyncio: messages handed to the loop, not yet read */
    ...;
};

/* Per protocol, pointed to by lws_protocols.user: which reasons enter Python. */
#define LWSPY_NREASONS 128
struct lwspy_proto {
    int index;
    int messages;         /* on_message without a raw RECEIVE: joined in C */
    size_t max_message;   /* larger messages close the connection with 1009 */
    unsigned char want[128];
};

/* run()'s signal wake-up (binding.c): a pipe and the thread that watches it. */
struct lwspy_sigwake {
    int fwd;            /* the previous signal wakeup fd, or -1 */
    ...;
};

/* lws.asyncio's native mode: lws' sockets in an epoll instance, the one fd
 * the loop watches (binding.c). */
struct lwspy_pollset {
    int nchanged;       /* sockets noted since the last lwspy_pollset_apply */
    int failed;         /* no memory (or epoll refused) to track a socket */
    int refuse;         /* tests only: fail this many epoll adds (fault injection) */
    int direct;         /* fd + 1 of the socket whose input the loop watches, or 0 */
    unsigned int gen;   /* counts native services */
    ...;
};

/* The messages the loop took (lwspy_bridge_take): payloads back to back in
 * data, three numbers per message in meta (connection id, length, binary). */
struct lwspy_rxbatch {
    char *data;
    size_t len;
    long long *meta;
    int count;
    ...;
};

/* lws.asyncio: the hand-offs between lws (a service thread, or the loop itself) and
 * the loop, kept in C (binding.c). */
struct lwspy_bridge {
    int fd;             /* eventfd: readable while messages wait for the loop */
    struct lwspy_rxbatch taken;
    ...;
};

/* The lws context's user pointer. */
struct lwspy_ctx {
    void *handle;
    struct lwspy_pollset *pollset;
    struct lwspy_bridge *bridge;
    void *uv_loop;
    ...;
};
