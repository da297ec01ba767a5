/*
 * loadclient.c: the fixed WebSocket load client of the benchmarks.
 *
 * Raw non-blocking sockets, one epoll loop, one thread, and a minimal
 * RFC 6455 client: the opening handshake (Sec-WebSocket-Accept checked),
 * masked frames, server frames read with 7/16/64-bit lengths, fragmented
 * messages, ping answered with pong, close handshake. Every frame it sends
 * is masked and built once per size (a few mask keys, rotated), so sending
 * costs the client a write() and nothing else.
 *
 *   loadclient --port P --mode echo --conns N --inflight K --size BYTES
 *              [--warmup S] [--duration S] [--server-pid PID] [--text]
 *       N connections, each keeping K messages in flight (a new one is sent
 *       whenever an echo completes). After --warmup seconds, counts completed
 *       round trips for --duration seconds. Prints one JSON object:
 *       messages/s, round-trip percentiles, the client's own CPU share of
 *       its core and, with --server-pid, the server's CPU time (utime+stime
 *       from /proc/PID/stat) over the same window.
 *
 *   loadclient --port P --mode connrate [--parallel C] [--warmup S] [--duration S]
 *       Cycles of connect, upgrade, close handshake, TCP close, C at a time;
 *       prints cycles per second.
 *
 *   loadclient --port P --mode idle --conns N [--hold S]
 *       Opens and upgrades N connections (64 handshakes at a time), prints
 *       one JSON line, then holds them (answering pings) until standard
 *       input closes or --hold seconds pass, then closes them and exits.
 *
 * The soft RLIMIT_NOFILE is raised to the hard limit at start. Every run is
 * bounded in time (SIGALRM ends a stuck one with exit status 3).
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NVARIANTS 4		/* mask keys per message size */
#define MAX_IOV 64
#define RX_BUF (256 * 1024)
#define MAX_SAMPLES (1u << 21)
#define HS_MAX 2048
#define MAX_PENDING_HS 64

enum cstate { C_FREE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DONE };
enum phase { P_WARMUP, P_MEASURE, P_DRAIN, P_END };

struct frame {
	unsigned char *bytes;
	size_t len;
};

struct conn {
	int fd;
	uint32_t events;	/* what epoll watches for it now */
	enum cstate state;
	int idx;
	/* handshake */
	char key[32];
	char hs[HS_MAX];
	size_t hs_len;
	/* sending */
	unsigned pending;	/* whole messages waiting to be written */
	int active;		/* a frame is partly written */
	size_t active_off;
	unsigned variant;
	unsigned char ctl_out[2 + 4 + 125 + 8];	/* a pong or close to send */
	size_t ctl_out_len, ctl_out_off;
	int close_sent;
	/* receiving: frame parser */
	unsigned char hdr[14];
	unsigned hdr_have, hdr_need;
	uint64_t pay_left;
	int opcode, fin, in_ctl;
	unsigned char ctl_in[125];
	unsigned ctl_in_len;
	int msg_opcode;
	uint64_t msg_off;
	int verify_this;
	/* accounting */
	unsigned inflight;
	uint64_t *sent_ns;	/* ring of send times, K entries (echoes keep order) */
	unsigned ring_head, ring_count;
	uint64_t received;
	uint64_t deadline_ns;	/* connrate: bound on one cycle's close */
};

/* options */
static const char *host = "127.0.0.1";
static int port, conns_n = 1, inflight_k = 1, parallel = 8, text_mode;
static size_t msg_size = 256;
static double warmup_s = 1.0, duration_s = 5.0, hold_s = 60.0;
static const char *mode = "echo";
static int server_pid;
static const char *path = "/";

/* state */
static int ep;
static struct conn *conns;
static int nconns;
static unsigned char *plain;		/* the payload, unmasked, for verification */
static struct frame frames[NVARIANTS];
static enum phase phase = P_WARMUP;
static uint64_t t_start, t_measure, t_end;
static uint64_t msgs_window, msgs_total, bytes_window;
static uint64_t errors, verified, verify_fail, cycles_window, cycles_total;
static uint32_t *samples;
static size_t nsamples;
static uint64_t rtt_sum_ns;
static long clk_tck;
static struct rusage ru_measure;
static long long srv_ticks_measure = -1;
static char last_error[256];
static int open_count, pending_hs, connect_failed;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
note_error(struct conn *c, const char *what, int err)
{
	errors++;
	snprintf(last_error, sizeof(last_error), "conn %d: %s%s%s", c ? c->idx : -1,
		 what, err ? ": " : "", err ? strerror(err) : "");
}

static void
on_alarm(int sig)
{
	static const char msg[] = "loadclient: time limit reached, giving up\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(3);
}

static long long
server_ticks(void)
{
	char p[64], buf[2048], *s;
	unsigned long long ut, st;
	FILE *f;
	size_t n;
	int field;

	if (!server_pid)
		return -1;
	snprintf(p, sizeof(p), "/proc/%d/stat", server_pid);
	f = fopen(p, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may contain spaces: fields count from the last ')' */
	s = strrchr(buf, ')');
	if (!s)
		return -1;
	s += 2;
	for (field = 3; field < 14 && s; field++) {
		s = strchr(s, ' ');
		if (s)
			s++;
	}
	if (!s || sscanf(s, "%llu %llu", &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

static double
tv_s(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* -- frames ------------------------------------------------------------------ */

static uint32_t rng_state = 0x9e3779b9u;

static uint32_t
rng(void)
{
	/* xorshift32: mask keys and handshake keys need only to vary */
	uint32_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rng_state = x;
	return x;
}

/* Write a client frame header (FIN, opcode, MASK, length, key) into out. */
static size_t
put_header(unsigned char *out, int opcode, uint64_t len, const unsigned char key[4])
{
	size_t h = 0;

	out[h++] = (unsigned char)(0x80 | opcode);
	if (len < 126) {
		out[h++] = (unsigned char)(0x80 | len);
	} else if (len < 65536) {
		out[h++] = 0x80 | 126;
		out[h++] = (unsigned char)(len >> 8);
		out[h++] = (unsigned char)len;
	} else {
		out[h++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			out[h++] = (unsigned char)(len >> (8 * i));
	}
	memcpy(out + h, key, 4);
	return h + 4;
}

static void
build_frames(void)
{
	plain = malloc(msg_size ? msg_size : 1);
	if (!plain) {
		perror("malloc");
		exit(2);
	}
	for (size_t i = 0; i < msg_size; i++)
		plain[i] = text_mode ? (unsigned char)('a' + i % 26)
				     : (unsigned char)(i * 31 + (i >> 8) + 7);
	for (int v = 0; v < NVARIANTS; v++) {
		unsigned char key[4];
		uint32_t r = rng();
		size_t h;

		memcpy(key, &r, 4);
		frames[v].bytes = malloc(14 + msg_size);
		if (!frames[v].bytes) {
			perror("malloc");
			exit(2);
		}
		h = put_header(frames[v].bytes, text_mode ? 1 : 2, msg_size, key);
		for (size_t i = 0; i < msg_size; i++)
			frames[v].bytes[h + i] = plain[i] ^ key[i & 3];
		frames[v].len = h + msg_size;
	}
}

/* Queue a small control frame (pong or close) for c; sent between messages. */
static void
queue_control(struct conn *c, int opcode, const unsigned char *payload, size_t len)
{
	unsigned char key[4];
	uint32_t r = rng();
	size_t h;

	if (c->ctl_out_len) /* one at a time is plenty for this client */
		return;
	memcpy(key, &r, 4);
	h = put_header(c->ctl_out, opcode, len, key);
	for (size_t i = 0; i < len; i++)
		c->ctl_out[h + i] = payload[i] ^ key[i & 3];
	c->ctl_out_len = h + len;
	c->ctl_out_off = 0;
}

static void
queue_close(struct conn *c)
{
	unsigned char code[2] = { 0x03, 0xe8 };	/* 1000 */

	if (c->close_sent)
		return;
	c->close_sent = 1;
	c->state = C_CLOSING;
	queue_control(c, 0x8, code, 2);
}

/* -- connections -------------------------------------------------------------- */

/* epoll_ctl only when the interest changes: one syscall less per wake-up. */
static void
set_events(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (c->events == events)
		return;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		note_error(c, "epoll_ctl", errno);
	c->events = events;
}

static void
conn_release(struct conn *c, enum cstate final)
{
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
		pending_hs--;
	if (c->state == C_OPEN || c->state == C_CLOSING)
		open_count--;
	c->state = final;
}

static int
conn_start(struct conn *c)
{
	struct sockaddr_in sa;
	struct epoll_event ev;
	int one = 1;

	c->pending = 0;
	c->pay_left = 0;
	c->ctl_in_len = 0;
	c->msg_off = 0;
	c->inflight = 0;
	c->ring_head = 0;
	c->ring_count = 0;
	c->received = 0;
	c->active = 0;
	c->ctl_out_len = 0;
	c->close_sent = 0;
	c->hs_len = 0;
	c->hdr_have = 0;
	c->hdr_need = 2;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		note_error(c, "socket", errno);
		c->state = C_DONE;
		connect_failed++;
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &sa.sin_addr);
	c->state = C_CONNECTING;
	pending_hs++;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		note_error(c, "connect", errno);
		connect_failed++;
		conn_release(c, C_DONE);
		return -1;
	}
	ev.events = EPOLLOUT | EPOLLIN;
	ev.data.ptr = c;
	c->events = ev.events;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		note_error(c, "epoll_ctl add", errno);
		connect_failed++;
		conn_release(c, C_DONE);
		return -1;
	}
	return 0;
}

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void
base64(const unsigned char *in, size_t n, char *out)
{
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = '=';
	}
	out[o] = '\0';
}

static int
send_handshake(struct conn *c)
{
	unsigned char raw[16];
	char req[512];
	int n;
	ssize_t w;

	for (int i = 0; i < 16; i += 4) {
		uint32_t r = rng();

		memcpy(raw + i, &r, 4);
	}
	base64(raw, 16, c->key);
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\n"
		     "Host: %s:%d\r\n"
		     "Upgrade: websocket\r\n"
		     "Connection: Upgrade\r\n"
		     "Sec-WebSocket-Key: %s\r\n"
		     "Sec-WebSocket-Version: 13\r\n"
		     "\r\n",
		     path, host, port, c->key);
	w = write(c->fd, req, (size_t)n);
	if (w != n) {	/* a fresh socket takes 200 bytes in one go */
		note_error(c, "handshake write", w < 0 ? errno : 0);
		return -1;
	}
	c->state = C_HANDSHAKE;
	set_events(c, EPOLLIN);
	return 0;
}

/* Case-insensitive search for header `name` in the response; copies its value. */
static int
find_header(const char *resp, const char *name, char *value, size_t vsize)
{
	size_t nl = strlen(name);
	const char *p = strstr(resp, "\r\n");

	while (p && p[2] != '\r') {
		const char *line = p + 2, *end = strstr(line, "\r\n");

		if (!end)
			return 0;
		if ((size_t)(end - line) > nl && !strncasecmp(line, name, nl) &&
		    line[nl] == ':') {
			const char *v = line + nl + 1;
			size_t len;

			while (*v == ' ' || *v == '\t')
				v++;
			len = (size_t)(end - v);
			while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
				len--;
			if (len >= vsize)
				return 0;
			memcpy(value, v, len);
			value[len] = '\0';
			return 1;
		}
		p = end;
	}
	return 0;
}

static int
check_accept(struct conn *c)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char digest[SHA_DIGEST_LENGTH];
	char joined[96], expect[40], got[64];

	if (strncmp(c->hs, "HTTP/1.1 101", 12)) {
		note_error(c, "handshake refused", 0);
		return -1;
	}
	snprintf(joined, sizeof(joined), "%s%s", c->key, guid);
	SHA1((const unsigned char *)joined, strlen(joined), digest);
	base64(digest, SHA_DIGEST_LENGTH, expect);
	if (!find_header(c->hs, "Sec-WebSocket-Accept", got, sizeof(got)) ||
	    strcmp(got, expect)) {
		note_error(c, "bad Sec-WebSocket-Accept", 0);
		return -1;
	}
	return 0;
}

/* -- sending ------------------------------------------------------------------- */

static void
flush(struct conn *c)
{
	struct iovec iov[MAX_IOV];
	unsigned nfull;
	int n;
	ssize_t w;

	for (;;) {
		size_t total = 0;

		n = 0;
		nfull = 0;
		if (c->ctl_out_len && !c->active) {
			iov[n].iov_base = c->ctl_out + c->ctl_out_off;
			iov[n].iov_len = c->ctl_out_len - c->ctl_out_off;
			total += iov[n++].iov_len;
		} else {
			if (c->active) {
				struct frame *f = &frames[c->variant];

				iov[n].iov_base = f->bytes + c->active_off;
				iov[n].iov_len = f->len - c->active_off;
				total += iov[n++].iov_len;
			}
			for (unsigned v = c->variant + (c->active ? 1 : 0);
			     nfull < c->pending && n < MAX_IOV; v++, nfull++) {
				struct frame *f = &frames[v % NVARIANTS];

				iov[n].iov_base = f->bytes;
				iov[n].iov_len = f->len;
				total += iov[n++].iov_len;
			}
		}
		if (!n) {
			set_events(c, EPOLLIN);
			return;
		}
		w = writev(c->fd, iov, n);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				set_events(c, EPOLLIN | EPOLLOUT);
				return;
			}
			note_error(c, "write", errno);
			conn_release(c, C_DONE);
			return;
		}
		if (c->ctl_out_len && !c->active) {
			c->ctl_out_off += (size_t)w;
			if (c->ctl_out_off == c->ctl_out_len)
				c->ctl_out_len = 0;
			if ((size_t)w < total) {
				set_events(c, EPOLLIN | EPOLLOUT);
				return;
			}
			continue;
		}
		/* account what went out: finish the active frame, then whole ones */
		size_t left = (size_t)w;

		if (c->active) {
			size_t rest = frames[c->variant].len - c->active_off;

			if (left < rest) {
				c->active_off += left;
				set_events(c, EPOLLIN | EPOLLOUT);
				return;
			}
			left -= rest;
			c->active = 0;
			c->variant = (c->variant + 1) % NVARIANTS;
		}
		while (c->pending) {
			size_t flen = frames[c->variant].len;

			c->pending--;
			if (left < flen) {
				c->active = 1;
				c->active_off = left;
				if (!left) {
					/* nothing of it went: still pending */
					c->active = 0;
					c->pending++;
				}
				break;
			}
			left -= flen;
			c->variant = (c->variant + 1) % NVARIANTS;
		}
		if ((size_t)w < total) {
			set_events(c, EPOLLIN | EPOLLOUT);
			return;
		}
	}
}

static void
send_message(struct conn *c)
{
	uint64_t t = now_ns();
	unsigned slot = (c->ring_head + c->ring_count) % (unsigned)inflight_k;

	c->sent_ns[slot] = t;
	c->ring_count++;
	c->inflight++;
	c->pending++;
}

/* -- receiving ------------------------------------------------------------------ */

static void
on_message_done(struct conn *c)
{
	uint64_t t = now_ns(), sent;

	if (c->msg_off != msg_size) {
		note_error(c, "echo has the wrong length", 0);
		verify_fail++;
	}
	if (!c->ring_count || !c->inflight) {
		note_error(c, "an echo nobody asked for", 0);
		return;
	}
	sent = c->sent_ns[c->ring_head];
	c->ring_head = (c->ring_head + 1) % (unsigned)inflight_k;
	c->ring_count--;
	c->inflight--;
	c->received++;
	msgs_total++;
	if (phase == P_MEASURE) {
		uint64_t d = t - sent;

		msgs_window++;
		bytes_window += msg_size;
		rtt_sum_ns += d;
		if (nsamples < MAX_SAMPLES)
			samples[nsamples++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
	}
	if (phase == P_WARMUP || phase == P_MEASURE)
		send_message(c);
}

static void
on_control(struct conn *c)
{
	switch (c->opcode) {
	case 0x9:	/* ping */
		queue_control(c, 0xA, c->ctl_in, c->ctl_in_len);
		break;
	case 0x8:	/* close */
		if (!c->close_sent) {
			if (strcmp(mode, "idle") && phase != P_END)
				note_error(c, "the server closed the connection", 0);
			queue_close(c);
		}
		c->state = C_CLOSING;
		c->deadline_ns = now_ns() + 2000000000ull;
		break;
	default:	/* pong */
		break;
	}
}

/* Parse server frames from buf; returns -1 on a protocol error. */
static int
parse(struct conn *c, const unsigned char *buf, size_t len)
{
	size_t i = 0;

	while (i < len) {
		if (c->hdr_have < c->hdr_need) {
			while (c->hdr_have < c->hdr_need && i < len)
				c->hdr[c->hdr_have++] = buf[i++];
			if (c->hdr_have < c->hdr_need)
				return 0;
			if (c->hdr_need == 2) {
				unsigned l7 = c->hdr[1] & 0x7f;

				if (c->hdr[1] & 0x80) {
					note_error(c, "the server masked a frame", 0);
					return -1;
				}
				c->hdr_need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
				if (c->hdr_have < c->hdr_need)
					continue;
			}
			/* header complete */
			unsigned l7 = c->hdr[1] & 0x7f;
			uint64_t plen = l7;

			if (l7 == 126)
				plen = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
			else if (l7 == 127) {
				plen = 0;
				for (int k = 2; k < 10; k++)
					plen = plen << 8 | c->hdr[k];
			}
			c->fin = c->hdr[0] & 0x80;
			c->opcode = c->hdr[0] & 0x0f;
			c->in_ctl = c->opcode & 0x8;
			c->pay_left = plen;
			if (c->in_ctl) {
				if (plen > 125 || !c->fin) {
					note_error(c, "bad control frame", 0);
					return -1;
				}
				c->ctl_in_len = 0;
			} else if (c->opcode != 0) {
				c->msg_opcode = c->opcode;
				c->msg_off = 0;
				c->verify_this = phase != P_MEASURE || (c->received & 63) == 0;
			}
			if (plen == 0)
				goto frame_done;
			continue;
		}
		/* payload */
		size_t n = len - i;

		if (n > c->pay_left)
			n = (size_t)c->pay_left;
		if (c->in_ctl) {
			memcpy(c->ctl_in + c->ctl_in_len, buf + i, n);
			c->ctl_in_len += (unsigned)n;
		} else {
			if (c->verify_this) {
				if (c->msg_off + n > msg_size ||
				    memcmp(plain + c->msg_off, buf + i, n)) {
					if (!verify_fail)
						note_error(c, "echo differs from what was sent", 0);
					verify_fail++;
				}
			}
			c->msg_off += n;
		}
		i += n;
		c->pay_left -= n;
		if (c->pay_left)
			continue;
frame_done:
		if (c->in_ctl)
			on_control(c);
		else if (c->fin) {
			if (c->verify_this)
				verified++;
			on_message_done(c);
		}
		c->hdr_have = 0;
		c->hdr_need = 2;
	}
	return 0;
}

static unsigned char rxbuf[RX_BUF];

static void on_open(struct conn *c);
static void on_cycle_done(struct conn *c);

static void
on_readable(struct conn *c)
{
	ssize_t r = 0;

	for (int rounds = 0; rounds < 8; rounds++) {

		if (c->state == C_HANDSHAKE) {
			char *end;

			r = read(c->fd, c->hs + c->hs_len, HS_MAX - 1 - c->hs_len);
			if (r <= 0)
				goto eof_or_err;
			c->hs_len += (size_t)r;
			c->hs[c->hs_len] = '\0';
			end = strstr(c->hs, "\r\n\r\n");
			if (!end) {
				if (c->hs_len >= HS_MAX - 1) {
					note_error(c, "handshake response too long", 0);
					goto fail;
				}
				continue;
			}
			if (check_accept(c) < 0)
				goto fail;
			{
				size_t used = (size_t)(end + 4 - c->hs);
				size_t extra = c->hs_len - used;

				c->state = C_OPEN;
				pending_hs--;
				open_count++;
				if (extra && parse(c, (unsigned char *)c->hs + used, extra) < 0)
					goto fail;
			}
			on_open(c);
			if (c->fd < 0)
				return;
			continue;
		}
		r = read(c->fd, rxbuf, sizeof(rxbuf));
		if (r <= 0)
			goto eof_or_err;
		if (parse(c, rxbuf, (size_t)r) < 0)
			goto fail;
		if (c->pending || c->ctl_out_len)
			flush(c);
		if (c->fd < 0)
			return;
		if ((size_t)r < sizeof(rxbuf))
			return;
	}
	return;

eof_or_err:
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (c->state == C_CLOSING) {
		/* the server ended TCP after the close handshake: the clean end */
		if (!strcmp(mode, "connrate"))
			on_cycle_done(c);
		else
			conn_release(c, C_DONE);
		return;
	}
	note_error(c, r < 0 ? "read" : "the server closed the socket", r < 0 ? errno : 0);
fail:
	conn_release(c, C_DONE);
	if (!strcmp(mode, "connrate"))
		on_cycle_done(c);
}

static void
on_open(struct conn *c)
{
	if (!strcmp(mode, "echo")) {
		for (int k = 0; k < inflight_k; k++)
			send_message(c);
		flush(c);
	} else if (!strcmp(mode, "connrate")) {
		queue_close(c);
		c->deadline_ns = now_ns() + 2000000000ull;
		flush(c);
	}
}

static void
on_cycle_done(struct conn *c)
{
	int clean = c->state == C_CLOSING && c->fd >= 0;

	conn_release(c, C_FREE);
	if (clean) {
		cycles_total++;
		if (phase == P_MEASURE)
			cycles_window++;
	}
	if (phase == P_WARMUP || phase == P_MEASURE)
		conn_start(c);
}

static void
on_event(struct conn *c, uint32_t events)
{
	if (c->fd < 0)
		return;
	if (c->state == C_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err || (events & (EPOLLERR | EPOLLHUP))) {
			note_error(c, "connect", err);
			connect_failed++;
			conn_release(c, C_DONE);
			if (!strcmp(mode, "connrate"))
				on_cycle_done(c);
			return;
		}
		if (events & EPOLLOUT) {
			if (send_handshake(c) < 0) {
				conn_release(c, C_DONE);
				if (!strcmp(mode, "connrate"))
					on_cycle_done(c);
			}
		}
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		on_readable(c);
	if (c->fd >= 0 && (events & EPOLLOUT))
		flush(c);
}

/* -- the run ------------------------------------------------------------------------ */

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct(double p)
{
	size_t i;

	if (!nsamples)
		return 0;
	i = (size_t)(p * (double)(nsamples - 1) + 0.5);
	return samples[i] / 1000.0;
}

static void
event_loop_once(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(ep, evs, 256, timeout_ms);

	for (int i = 0; i < n; i++)
		on_event(evs[i].data.ptr, evs[i].events);
}

static void
begin_measure(void)
{
	phase = P_MEASURE;
	t_measure = now_ns();
	getrusage(RUSAGE_SELF, &ru_measure);
	srv_ticks_measure = server_ticks();
}

static void
print_result(void)
{
	struct rusage ru;
	double win = (double)(t_end - t_measure) / 1e9;
	double cpu;
	long long st = server_ticks();
	double srv_s = -1;

	getrusage(RUSAGE_SELF, &ru);
	cpu = (tv_s(ru.ru_utime) + tv_s(ru.ru_stime)) -
	      (tv_s(ru_measure.ru_utime) + tv_s(ru_measure.ru_stime));
	if (st >= 0 && srv_ticks_measure >= 0)
		srv_s = (double)(st - srv_ticks_measure) / (double)clk_tck;
	qsort(samples, nsamples, sizeof(*samples), cmp_u32);

	printf("{\"mode\": \"%s\", \"conns\": %d, \"inflight\": %d, \"size\": %zu, "
	       "\"text\": %s, \"window_s\": %.4f, ",
	       mode, conns_n, inflight_k, msg_size, text_mode ? "true" : "false", win);
	if (!strcmp(mode, "connrate")) {
		printf("\"parallel\": %d, \"cycles\": %llu, \"cycles_per_s\": %.1f, ",
		       parallel, (unsigned long long)cycles_window,
		       (double)cycles_window / win);
	} else {
		double mps = (double)msgs_window / win;

		printf("\"messages\": %llu, \"msgs_per_s\": %.1f, \"mbytes_per_s\": %.2f, "
		       "\"rtt_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, "
		       "\"p99\": %.1f, \"max\": %.1f}, \"verified\": %llu, ",
		       (unsigned long long)msgs_window, mps,
		       (double)bytes_window / win / 1e6,
		       msgs_window ? (double)rtt_sum_ns / (double)msgs_window / 1000.0 : 0.0,
		       pct(0.5), pct(0.9), pct(0.99), pct(1.0),
		       (unsigned long long)verified);
	}
	printf("\"client_cpu_pct\": %.1f, ", 100.0 * cpu / win);
	if (srv_s >= 0) {
		double units = !strcmp(mode, "connrate") ? (double)cycles_window
							  : (double)msgs_window;

		printf("\"server_cpu_pct\": %.1f, \"server_cpu_us_per_op\": %.3f, ",
		       100.0 * srv_s / win, units ? srv_s * 1e6 / units : 0.0);
	}
	printf("\"errors\": %llu, \"verify_failures\": %llu, \"connect_failures\": %d, "
	       "\"last_error\": \"%s\"}\n",
	       (unsigned long long)errors, (unsigned long long)verify_fail,
	       connect_failed, last_error);
	fflush(stdout);
}

static void
close_all(double grace_s)
{
	uint64_t until = now_ns() + (uint64_t)(grace_s * 1e9);

	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		if (c->fd < 0)
			continue;
		if (c->state == C_OPEN) {
			/* stop sending data: whatever is queued goes, then the close */
			c->pending = 0;
			queue_close(c);
			flush(c);
		} else if (c->state != C_CLOSING) {
			conn_release(c, C_DONE);
		}
	}
	while (open_count > 0 && now_ns() < until)
		event_loop_once(10);
	for (int i = 0; i < nconns; i++)
		if (conns[i].fd >= 0)
			conn_release(&conns[i], C_DONE);
}

static int
run_echo_or_connrate(void)
{
	int is_connrate = !strcmp(mode, "connrate");
	uint64_t open_deadline;

	nconns = is_connrate ? parallel : conns_n;
	for (int i = 0; i < nconns; i++)
		conn_start(&conns[i]);
	/* wait for every connection to open (bounded) before the clock starts */
	open_deadline = now_ns() + 10000000000ull;
	if (!is_connrate) {
		while (open_count + connect_failed < nconns && now_ns() < open_deadline &&
		       errors == 0)
			event_loop_once(10);
		if (open_count < nconns) {
			fprintf(stderr, "loadclient: only %d of %d connections opened (%s)\n",
				open_count, nconns, last_error);
			return 1;
		}
	}
	t_start = now_ns();
	while (phase != P_END) {
		uint64_t t = now_ns();

		if (phase == P_WARMUP && t - t_start >= (uint64_t)(warmup_s * 1e9))
			begin_measure();
		else if (phase == P_MEASURE &&
			 t - t_measure >= (uint64_t)(duration_s * 1e9)) {
			t_end = t;
			phase = P_END;
			break;
		}
		if (is_connrate) {
			for (int i = 0; i < nconns; i++) {
				struct conn *c = &conns[i];

				if (c->state == C_CLOSING && c->fd >= 0 && t > c->deadline_ns) {
					note_error(c, "no TCP close after the close handshake", 0);
					conn_release(c, C_DONE);
					on_cycle_done(c);
				}
			}
		} else if (open_count == 0) {
			fprintf(stderr, "loadclient: every connection was lost (%s)\n",
				last_error);
			return 1;
		}
		event_loop_once(5);
	}
	print_result();
	close_all(1.0);
	return errors && !msgs_window && !cycles_window ? 1 : 0;
}

static int
run_idle(void)
{
	uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(60 * 1e9);
	int next = 0;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	double open_s;

	nconns = conns_n;
	while ((next < nconns || pending_hs > 0) && now_ns() < deadline) {
		while (next < nconns && pending_hs < MAX_PENDING_HS)
			conn_start(&conns[next++]);
		event_loop_once(10);
	}
	open_s = (double)(now_ns() - t0) / 1e9;
	printf("{\"mode\": \"idle\", \"conns\": %d, \"opened\": %d, \"open_s\": %.3f, "
	       "\"errors\": %llu, \"last_error\": \"%s\"}\n",
	       nconns, open_count, open_s, (unsigned long long)errors, last_error);
	fflush(stdout);
	/* hold until stdin closes (or says anything), bounded by --hold */
	epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
	deadline = now_ns() + (uint64_t)(hold_s * 1e9);
	while (now_ns() < deadline) {
		struct epoll_event evs[256];
		int n = epoll_wait(ep, evs, 256, 100), stop = 0;

		for (int i = 0; i < n; i++) {
			if (!evs[i].data.ptr)
				stop = 1;
			else
				on_event(evs[i].data.ptr, evs[i].events);
		}
		if (stop)
			break;
	}
	epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
	phase = P_END;
	close_all(5.0);
	return open_count == 0 && nconns ? 0 : 0;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: loadclient --port P [--host H] [--path /]\n"
		"         [--mode echo|connrate|idle] [--conns N] [--inflight K]\n"
		"         [--size BYTES] [--text] [--warmup S] [--duration S]\n"
		"         [--parallel C] [--hold S] [--server-pid PID]\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "path", required_argument, NULL, 'P' },
		{ "mode", required_argument, NULL, 'm' },
		{ "conns", required_argument, NULL, 'n' },
		{ "inflight", required_argument, NULL, 'k' },
		{ "size", required_argument, NULL, 's' },
		{ "text", no_argument, NULL, 't' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "duration", required_argument, NULL, 'd' },
		{ "parallel", required_argument, NULL, 'c' },
		{ "hold", required_argument, NULL, 'o' },
		{ "server-pid", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct rlimit rl;
	double budget;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "H:p:P:m:n:k:s:tw:d:c:o:S:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'H': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'P': path = optarg; break;
		case 'm': mode = optarg; break;
		case 'n': conns_n = atoi(optarg); break;
		case 'k': inflight_k = atoi(optarg); break;
		case 's': msg_size = (size_t)strtoull(optarg, NULL, 10); break;
		case 't': text_mode = 1; break;
		case 'w': warmup_s = atof(optarg); break;
		case 'd': duration_s = atof(optarg); break;
		case 'c': parallel = atoi(optarg); break;
		case 'o': hold_s = atof(optarg); break;
		case 'S': server_pid = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (port <= 0 || port > 65535 || conns_n < 1 || inflight_k < 1 || parallel < 1 ||
	    duration_s <= 0 || warmup_s < 0 || hold_s < 0 ||
	    (strcmp(mode, "echo") && strcmp(mode, "connrate") && strcmp(mode, "idle"))) {
		usage(stderr);
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	budget = !strcmp(mode, "idle") ? 60 + hold_s + 10 : 10 + warmup_s + duration_s + 10;
	signal(SIGALRM, on_alarm);
	alarm((unsigned)budget + 1);
	signal(SIGPIPE, SIG_IGN);
	clk_tck = sysconf(_SC_CLK_TCK);
	rng_state ^= (uint32_t)now_ns() ^ (uint32_t)getpid() << 16;
	if (!rng_state)
		rng_state = 1;

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("epoll_create1");
		return 2;
	}
	{
		int n = !strcmp(mode, "connrate") ? parallel : conns_n;

		conns = calloc((size_t)n, sizeof(*conns));
		if (!conns) {
			perror("calloc");
			return 2;
		}
		for (int i = 0; i < n; i++) {
			conns[i].fd = -1;
			conns[i].idx = i;
			conns[i].sent_ns = calloc((size_t)inflight_k, sizeof(uint64_t));
			if (!conns[i].sent_ns) {
				perror("calloc");
				return 2;
			}
		}
	}
	if (!strcmp(mode, "echo")) {
		samples = malloc(MAX_SAMPLES * sizeof(*samples));
		if (!samples) {
			perror("malloc");
			return 2;
		}
		build_frames();
	}
	rc = !strcmp(mode, "idle") ? run_idle() : run_echo_or_connrate();
	close(ep);
	return rc;
}
