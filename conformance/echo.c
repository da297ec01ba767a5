/*
 * echo.c: the C baseline for the conformance runs and the benchmarks.
 *
 * A plain libwebsockets echo peer, built the way lws' own
 * minimal-ws-server-echo is built:
 *
 *   - every received chunk is queued with its message type and its place in
 *     the message (first / final), and written back with the same flags, so
 *     fragmentation and text/binary are preserved;
 *   - exactly one lws_write() per WRITEABLE callback;
 *   - rx flow control: reading stops while a connection has more than
 *     --queue-limit bytes waiting to be echoed, and resumes below half of it;
 *   - permessage-deflate is offered / accepted only with --deflate.
 *
 * Two modes:
 *
 *   echo [--host H] [--port N] [--deflate]
 *       Echo server. Prints "listening on port N" (N is the real port, also
 *       for --port 0) and serves until SIGTERM or SIGINT, then exits 0.
 *
 *   echo --client [--host H] --port N [--deflate] [--agent NAME]
 *        [--case-timeout SECONDS] [--cases FIRST-LAST]
 *       Echo client for an Autobahn fuzzing server (kosoku -m fuzzingserver):
 *       asks /getCaseCount, runs /runCase?case=i&agent=NAME for every case
 *       (each bounded by --case-timeout), then calls /updateReports.
 *
 * Other options: --rx-buffer BYTES (lws' read size: pt_serv_buf_size and the
 * protocol's rx_buffer_size; default lws' own, 4096), --queue-limit BYTES (default 64 MiB), -d LOGLEVEL (lws log
 * bitmask, default errors and warnings).
 */

#include <libwebsockets.h>

#include <arpa/inet.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One received chunk waiting to be echoed; the payload follows LWS_PRE
 * bytes of headroom that lws_write() may use for the frame header. */
struct chunk {
	struct chunk *next;
	size_t len;
	int flags;
	unsigned char data[];
};

struct session {
	struct chunk *head, *tail;
	struct chunk *written;	/* the last chunk handed to lws_write(): see write_one() */
	size_t queued;
	char rx_paused;
	char close_asked;	/* client: close this connection cleanly */
	char count_buf[24];	/* client: the /getCaseCount answer */
	size_t count_len;
};

enum phase { PHASE_COUNT, PHASE_CASES, PHASE_REPORT, PHASE_DONE };

static volatile sig_atomic_t interrupted;
static struct lws_context *context;
static size_t queue_limit = 64u << 20;

/* client mode */
static const char *host = "127.0.0.1", *agent = "lws-c-echo";
static int port = 7681, case_timeout = 30, first_case = 1, last_case;
static enum phase phase = PHASE_COUNT;
static int case_count, current_case, want_connect = 1, in_flight, failures;
static struct lws *current_wsi;
static lws_usec_t current_deadline;
static lws_sorted_usec_list_t tick;
static struct lws_vhost *vhost;

static void tick_cb(lws_sorted_usec_list_t *sul);

static void
free_queue(struct session *s)
{
	struct chunk *c = s->head, *next;

	while (c) {
		next = c->next;
		free(c);
		c = next;
	}
	free(s->written);
	s->written = NULL;
	s->head = s->tail = NULL;
	s->queued = 0;
}

static int
queue_received(struct lws *wsi, struct session *s, const void *in, size_t len)
{
	int type = lws_frame_is_binary(wsi) ? LWS_WRITE_BINARY : LWS_WRITE_TEXT;
	struct chunk *c = malloc(sizeof(*c) + LWS_PRE + len);

	if (!c) {
		lwsl_err("echo: out of memory queueing %zu bytes\n", len);
		return -1;
	}
	c->next = NULL;
	c->len = len;
	c->flags = lws_write_ws_flags(type, lws_is_first_fragment(wsi),
				      lws_is_final_fragment(wsi));
	if (len)
		memcpy(c->data + LWS_PRE, in, len);
	if (s->tail)
		s->tail->next = c;
	else
		s->head = c;
	s->tail = c;
	s->queued += len;

	if (!s->rx_paused && s->queued > queue_limit) {
		lws_rx_flow_control(wsi, 0);
		s->rx_paused = 1;
	}
	lws_callback_on_writable(wsi);

	return 0;
}

static int
write_one(struct lws *wsi, struct session *s)
{
	struct chunk *c = s->head;
	int n;

	if (!c)
		return 0;
	s->head = c->next;
	if (!s->head)
		s->tail = NULL;
	s->queued -= c->len;

	/*
	 * With permessage-deflate, lws may not compress all of the payload in
	 * this lws_write(): it then keeps deflating from *our* buffer on the next
	 * POLLOUTs (tx_draining_ext) and only calls WRITEABLE again once that is
	 * done. So the buffer must live until the next WRITEABLE (or the close).
	 */
	free(s->written);
	s->written = c;
	n = lws_write(wsi, c->data + LWS_PRE, c->len,
		      (enum lws_write_protocol)c->flags);
	if (n < 0)
		return -1;

	if (s->rx_paused && s->queued <= queue_limit / 2) {
		lws_rx_flow_control(wsi, 1);
		s->rx_paused = 0;
	}
	if (s->head)
		lws_callback_on_writable(wsi);

	return 0;
}

/* -- client mode: the Autobahn fuzzing-server driver ------------------------ */

static void
advance_phase(void)
{
	switch (phase) {
	case PHASE_COUNT:
		if (case_count <= 0) {
			lwsl_err("echo: the fuzzing server reported no cases\n");
			failures++;
			phase = PHASE_DONE;
			interrupted = 1;
			return;
		}
		if (!last_case || last_case > case_count)
			last_case = case_count;
		current_case = first_case;
		phase = current_case <= last_case ? PHASE_CASES : PHASE_REPORT;
		printf("running cases %d-%d of %d\n", first_case, last_case,
		       case_count);
		fflush(stdout);
		break;
	case PHASE_CASES:
		if (++current_case > last_case)
			phase = PHASE_REPORT;
		break;
	default:
		phase = PHASE_DONE;
		interrupted = 1;
		break;
	}
}

/* The connection in flight ended (closed, failed or dropped): go on. */
static void
client_done(void)
{
	in_flight = 0;
	current_wsi = NULL;
	want_connect = 1;
	advance_phase();
	/* connect again soon, from the timer (not from inside this callback) */
	if (!interrupted)
		lws_sul_schedule(context, 0, &tick, tick_cb, 1000);
}

static void
client_connect(void)
{
	struct lws_client_connect_info i;
	char path[160], hosthdr[96];

	switch (phase) {
	case PHASE_COUNT:
		lws_snprintf(path, sizeof(path), "/getCaseCount");
		break;
	case PHASE_CASES:
		lws_snprintf(path, sizeof(path), "/runCase?case=%d&agent=%s",
			     current_case, agent);
		break;
	case PHASE_REPORT:
		lws_snprintf(path, sizeof(path), "/updateReports?agent=%s",
			     agent);
		break;
	default:
		return;
	}
	lws_snprintf(hosthdr, sizeof(hosthdr), "%s:%d", host, port);

	memset(&i, 0, sizeof(i));
	i.context = context;
	i.vhost = vhost;
	i.address = host;
	i.port = port;
	i.path = path;
	i.host = hosthdr;
	i.origin = hosthdr;
	i.ietf_version_or_minus_one = -1;
	i.pwsi = &current_wsi;

	current_deadline = lws_now_usecs() +
			   (lws_usec_t)case_timeout * LWS_US_PER_SEC;
	in_flight = 1;
	if (!lws_client_connect_via_info(&i) && in_flight) {
		/* failed at once, with no callback saying so */
		lwsl_err("echo: could not start the connection to %s\n", path);
		failures++;
		client_done();
	}
}

/* Every 50 ms: start the next connection, enforce the per-case limit. */
static void
tick_cb(lws_sorted_usec_list_t *sul)
{
	if (interrupted)
		return;

	if (want_connect && !in_flight) {
		want_connect = 0;
		client_connect();
	} else if (in_flight && current_wsi &&
		   lws_now_usecs() > current_deadline) {
		printf("case %d: time limit of %d s reached, dropping it\n",
		       current_case, case_timeout);
		fflush(stdout);
		current_deadline = lws_now_usecs() + 5 * LWS_US_PER_SEC;
		lws_set_timeout(current_wsi, PENDING_TIMEOUT_USER_OK,
				LWS_TO_KILL_ASYNC);
	}
	if (!interrupted)
		lws_sul_schedule(context, 0, sul, tick_cb, 50 * LWS_US_PER_MS);
}

/* -- the protocol ------------------------------------------------------------ */

static int
callback_echo(struct lws *wsi, enum lws_callback_reasons reason, void *user,
	      void *in, size_t len)
{
	struct session *s = (struct session *)user;

	switch (reason) {
	case LWS_CALLBACK_RECEIVE:
		return queue_received(wsi, s, in, len);

	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (phase == PHASE_COUNT) {
			if (s->count_len + len < sizeof(s->count_buf)) {
				memcpy(s->count_buf + s->count_len, in, len);
				s->count_len += len;
				s->count_buf[s->count_len] = '\0';
			}
			if (lws_is_final_fragment(wsi))
				case_count = atoi(s->count_buf);
			return 0;
		}
		if (phase != PHASE_CASES)
			return 0;
		return queue_received(wsi, s, in, len);

	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		if (phase == PHASE_REPORT) {
			s->close_asked = 1;
			lws_callback_on_writable(wsi);
		}
		break;

	case LWS_CALLBACK_SERVER_WRITEABLE:
		return write_one(wsi, s);

	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (s->close_asked) {
			lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL,
					 (unsigned char *)"done", 4);
			return -1;
		}
		return write_one(wsi, s);

	case LWS_CALLBACK_CLOSED:
		free_queue(s);
		break;

	case LWS_CALLBACK_CLIENT_CLOSED:
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (reason == LWS_CALLBACK_CLIENT_CONNECTION_ERROR)
			lwsl_warn("echo: connection error: %s\n",
				  in ? (const char *)in : "(none)");
		if (s)
			free_queue(s);
		if (in_flight)
			client_done();
		break;

	case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
	case LWS_CALLBACK_WS_CLIENT_DROP_PROTOCOL:
		if (s)
			free_queue(s);
		break;

	default:
		break;
	}

	return 0;
}

static struct lws_protocols protocols[] = {
	{ "echo", callback_echo, sizeof(struct session), 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

/* The same offer as the binding's permessage_deflate=True (a server ignores
 * the offer string and answers what the client offered). */
static const struct lws_extension extensions[] = {
	{ "permessage-deflate", lws_extension_callback_pm_deflate,
	  "permessage-deflate; client_max_window_bits" },
	{ NULL, NULL, NULL }
};

static void
on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
	if (context)
		lws_cancel_service(context);
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: echo [--host H] [--port N] [--deflate] [--rx-buffer BYTES] [--queue-limit BYTES] [-d LEVEL]\n"
		"       echo --client [--host H] --port N [--deflate] [--agent NAME]\n"
		"            [--case-timeout SECONDS] [--cases FIRST-LAST]\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "deflate", no_argument, NULL, 'z' },
		{ "client", no_argument, NULL, 'c' },
		{ "agent", required_argument, NULL, 'a' },
		{ "case-timeout", required_argument, NULL, 't' },
		{ "cases", required_argument, NULL, 'C' },
		{ "queue-limit", required_argument, NULL, 'q' },
		{ "rx-buffer", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct lws_context_creation_info info, vinfo;
	int deflate = 0, client = 0, logs = LLL_ERR | LLL_WARN, opt;
	unsigned int rx_buffer = 0;
	struct in_addr a4;
	char *dash;

	while ((opt = getopt_long(argc, argv, "H:p:zca:t:C:q:r:d:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'z': deflate = 1; break;
		case 'c': client = 1; break;
		case 'a': agent = optarg; break;
		case 't': case_timeout = atoi(optarg); break;
		case 'q': queue_limit = (size_t)strtoull(optarg, NULL, 10); break;
		case 'r': rx_buffer = (unsigned int)strtoul(optarg, NULL, 10); break;
		case 'd': logs = atoi(optarg); break;
		case 'C':
			first_case = atoi(optarg);
			dash = strchr(optarg, '-');
			last_case = dash ? atoi(dash + 1) : first_case;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || port < 0 || port > 65535 || case_timeout <= 0 ||
	    first_case < 1 || queue_limit < 1) {
		usage(stderr);
		return 2;
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	lws_set_log_level(logs, NULL);

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
		       LWS_SERVER_OPTION_VALIDATE_UTF8;
	info.pt_serv_buf_size = rx_buffer;
	protocols[0].rx_buffer_size = rx_buffer;
	context = lws_create_context(&info);
	if (!context) {
		fprintf(stderr, "echo: lws_create_context failed\n");
		return 1;
	}

	memset(&vinfo, 0, sizeof(vinfo));
	vinfo.vhost_name = "default";
	vinfo.protocols = protocols;
	vinfo.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
			LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
	if (deflate)
		vinfo.extensions = extensions;
	if (client) {
		vinfo.port = CONTEXT_PORT_NO_LISTEN;
	} else {
		vinfo.port = port;
		vinfo.iface = host;
		if (inet_pton(AF_INET, host, &a4) == 1)
			vinfo.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	}
	vhost = lws_create_vhost(context, &vinfo);
	if (!vhost) {
		fprintf(stderr, "echo: creating the vhost failed (is %s:%d free?)\n",
			host, port);
		lws_context_destroy(context);
		return 1;
	}

	if (client) {
		printf("echo client for ws://%s:%d (agent %s, %d s per case%s)\n",
		       host, port, agent, case_timeout,
		       deflate ? ", permessage-deflate" : "");
		lws_sul_schedule(context, 0, &tick, tick_cb, 1);
	} else
		printf("listening on port %d%s\n", lws_get_vhost_listen_port(vhost),
		       deflate ? " (permessage-deflate)" : "");
	fflush(stdout);

	while (!interrupted)
		if (lws_service(context, 0) < 0)
			break;

	lws_sul_cancel(&tick);
	lws_context_destroy(context);

	if (client) {
		printf("done: %d failure(s)\n", failures);
		return failures || phase != PHASE_DONE ? 1 : 0;
	}
	return 0;
}
