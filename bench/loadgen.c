/*
 * loadgen: remote-write load driver for the promgate benchmarks.
 *
 * POSTs pre-compressed WriteRequest bodies round-robin over N keep-alive
 * HTTP/1.1 connections; one thread, epoll, non-blocking sockets.
 *
 *   max rate    (-r 0, the default) every connection sends its next request
 *               as soon as the previous answer arrived; latency is measured
 *               from the moment the request is written.
 *   fixed rate  (-r RATE) open loop: request i is due at t0 + i/RATE and its
 *               latency is measured from that due time, so a request that
 *               waits for a free connection (the server is behind) carries
 *               its queueing delay: no coordinated omission.  Requests due
 *               inside the window are all sent, even after it ends, until
 *               the grace time (-t) runs out; what is left is reported as
 *               "unfinished" (counted in "errors") and enters the latency
 *               figures with (end - due time), a lower bound.
 *
 * One JSON line on stdout:
 *   {"label":..,"mode":..,"requests":..,"completed":..,"responses":{"204":..},
 *    "errors":..,"duration_s":..,"req_per_s":..,"samples_per_s":..,
 *    "latency_us":{"p50":..,"p90":..,"p99":..,"p999":..,"max":..,"mean":..}}
 *
 * Remote write 1.0 or 2.0: a body whose file name contains ".v2-" (what
 * gen_bodies.py writes for 2.0) is sent with the 2.0 headers
 *     Content-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request
 *     X-Prometheus-Remote-Write-Version: 2.0.0
 * every other body with the 1.0 headers a Prometheus 2.x sender uses
 *     Content-Type: application/x-protobuf
 *     X-Prometheus-Remote-Write-Version: 0.1.0
 * -V 1 / -V 2 forces one of them for every body.  The JSON line says which
 * ("rw_version": "1.0", "2.0" or "mixed").
 *
 * -u rewrites, in every request, the 16-character placeholders listed in
 * BODY.bin.patch (offsets into the snappy body; written by gen_bodies.py,
 * which makes sure each is one snappy literal) with a value unique to the
 * request, so those series are new in every request.
 *
 * Build: cc -O2 -o loadgen loadgen.c -lm
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>


#define PLACEHOLDER_LEN       16
#define PLACEHOLDER_ALPHABET  "GHJKLMNPQRSTVWXZ"   /* gen_bodies.py */
#define MAX_STATUS            600
#define RBUF_INIT             4096


typedef struct {
    uint8_t    *data;
    size_t      len;
    char        hdr[512];
    size_t      hdr_len;
    uint32_t   *patch;        /* placeholder offsets into data */
    int         npatch;
    int         version;      /* remote write 1 (1.0) or 2 (2.0) */
} body_t;


enum { C_DOWN, C_CONNECTING, C_IDLE, C_SENDING, C_WAITING };


typedef struct {
    int         fd;
    int         state;
    int         idx;
    body_t     *body;
    uint8_t    *data;         /* body->data, or the private patched copy */
    uint8_t    *copy;         /* private buffer for -u */
    size_t      sent;         /* bytes of header + body written */
    double      t_sched;      /* latency is measured from here */
    double      retry_at;     /* C_DOWN: reconnect not before */
    int         answered;     /* a full answer arrived while still sending */

    char       *rbuf;
    size_t      rlen;
    size_t      rcap;
} conn_t;


/* options */
static const char  *o_host = "127.0.0.1";
static int          o_port;
static const char  *o_path = "/api/v1/write";
static int          o_conns = 4;
static double       o_duration = 10;
static long         o_max_requests;       /* 0: no limit */
static double       o_rate;               /* 0: max rate */
static long         o_samples = -1;
static double       o_grace = 10;
static int          o_unique;
static const char  *o_label = "";
static int          o_version;            /* 0: from the file name */

/* state */
static body_t      *bodies;
static int          nbodies;
static conn_t      *conns;
static int          epfd, tfd;
static struct sockaddr_in  addr;
static double       t0, deadline, grace_end;
static long         next_body;            /* round-robin */
static long         issued;               /* requests started (max) / scheduled (rate) */
static long         sent_reqs;            /* requests written (started) */
static long         completed;
static long         status_count[MAX_STATUS];
static long         status_other;
static long         err_connect, err_io, err_parse, err_closed;
static double       t_last;
static uint64_t     bytes_sent;
static uint64_t     seq;                  /* -u: request sequence */
static uint64_t     nonce;

static double      *lat;                  /* µs */
static size_t       nlat, caplat;

static volatile sig_atomic_t  stop_flag;


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static void
die(const char *fmt, const char *arg)
{
    fprintf(stderr, "loadgen: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}


static void
on_signal(int sig)
{
    (void) sig;
    stop_flag = 1;
}


static void
record_latency(double us)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof(double));
        if (lat == NULL) {
            die("%s", "out of memory");
        }
    }
    lat[nlat++] = us;
}


static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE        *f;
    struct stat  st;
    uint8_t     *p;

    f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        die("cannot open %s", path);
    }
    p = malloc(st.st_size ? st.st_size : 1);
    if (p == NULL || fread(p, 1, st.st_size, f) != (size_t) st.st_size) {
        die("cannot read %s", path);
    }
    fclose(f);
    *len = st.st_size;
    return p;
}


static void
load_body(body_t *b, const char *path)
{
    char         ppath[4096];
    FILE        *f;
    int          n, plen, i;
    long         off;
    const char  *base;

    b->data = read_file(path, &b->len);

    base = strrchr(path, '/');
    base = base ? base + 1 : path;
    b->version = o_version ? o_version : (strstr(base, ".v2-") ? 2 : 1);

    b->hdr_len = snprintf(b->hdr, sizeof(b->hdr),
        "POST %s HTTP/1.1\r\n"
        "Host: %s:%d\r\n"
        "User-Agent: promgate-bench-loadgen/1\r\n"
        "Content-Encoding: snappy\r\n"
        "Content-Type: %s\r\n"
        "X-Prometheus-Remote-Write-Version: %s\r\n"
        "Content-Length: %zu\r\n"
        "\r\n", o_path, o_host, o_port,
        b->version == 2
            ? "application/x-protobuf;proto=io.prometheus.write.v2.Request"
            : "application/x-protobuf",
        b->version == 2 ? "2.0.0" : "0.1.0", b->len);

    if (!o_unique) {
        return;
    }

    snprintf(ppath, sizeof(ppath), "%s.patch", path);
    f = fopen(ppath, "r");
    if (f == NULL) {
        die("-u: no placeholder list %s", ppath);
    }
    if (fscanf(f, "%d %d", &n, &plen) != 2 || n < 0 || n > 1000000
        || plen != PLACEHOLDER_LEN)
    {
        die("-u: bad placeholder list %s", ppath);
    }
    b->patch = calloc(n ? n : 1, sizeof(uint32_t));
    for (i = 0; i < n; i++) {
        if (fscanf(f, "%ld", &off) != 1 || off < 0
            || (size_t) off + PLACEHOLDER_LEN > b->len)
        {
            die("-u: bad offset in %s", ppath);
        }
        b->patch[i] = off;
    }
    b->npatch = n;
    fclose(f);
}


static void
set_timer(double at)
{
    struct itimerspec  its;

    memset(&its, 0, sizeof(its));
    if (at <= 0) {
        at = 1e-9;     /* zero would disarm */
    }
    its.it_value.tv_sec = (time_t) at;
    its.it_value.tv_nsec = (long) ((at - (double) (time_t) at) * 1e9);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) {
        its.it_value.tv_nsec = 1;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}


static void
conn_close(conn_t *c, double retry_delay)
{
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_DOWN;
    c->rlen = 0;
    c->answered = 0;
    c->retry_at = now_s() + retry_delay;
}


static void
conn_open(conn_t *c)
{
    struct epoll_event  ev;
    int                 one = 1;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        die("%s", "socket() failed");
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);

    if (connect(c->fd, (struct sockaddr *) &addr, sizeof(addr)) == 0) {
        c->state = C_IDLE;
    } else if (errno == EINPROGRESS) {
        c->state = C_CONNECTING;
    } else {
        err_connect++;
        conn_close(c, 0.1);
    }
}


static void
encode_unique(uint8_t *dst, uint64_t v)
{
    int  i;

    for (i = PLACEHOLDER_LEN - 1; i >= 0; i--) {
        dst[i] = PLACEHOLDER_ALPHABET[v & 0xf];
        v >>= 4;
    }
}


static void conn_write(conn_t *c);


static void
conn_start(conn_t *c, double t_sched)
{
    body_t  *b;
    int      i;

    b = &bodies[next_body++ % nbodies];
    c->body = b;
    c->data = b->data;

    if (o_unique && b->npatch) {
        memcpy(c->copy, b->data, b->len);
        for (i = 0; i < b->npatch; i++) {
            /* 24 bits of run nonce, 32 of request number, 8 of slot */
            encode_unique(c->copy + b->patch[i],
                          (nonce << 40) | ((seq & 0xffffffffu) << 8)
                          | (uint64_t) (i & 0xff));
        }
        seq++;
        c->data = c->copy;
    }

    c->sent = 0;
    c->rlen = 0;
    c->answered = 0;
    c->t_sched = t_sched;
    c->state = C_SENDING;
    sent_reqs++;
    conn_write(c);
}


/* a request is lost (error); the connection is torn down */
static void
conn_fail(conn_t *c, long *counter)
{
    (*counter)++;
    conn_close(c, 0.05);
}


/*
 * Parses a complete response in c->rbuf.  Returns the status (>0) when the
 * whole response is there, 0 when more bytes are needed, -1 on garbage.
 * *close_after is set when the server will close the connection.
 */
static int
parse_response(conn_t *c, int *close_after)
{
    char    *p, *end, *hend, *line, *eol;
    int      status, chunked = 0;
    long     clen = -1;
    size_t   need;

    *close_after = 0;
    p = c->rbuf;
    end = c->rbuf + c->rlen;

    hend = memmem(p, c->rlen, "\r\n\r\n", 4);
    if (hend == NULL) {
        return c->rlen > 65536 ? -1 : 0;
    }
    if (c->rlen < 12 || memcmp(p, "HTTP/1.", 7) != 0) {
        return -1;
    }
    status = atoi(p + 9);
    if (status < 100 || status > 999) {
        return -1;
    }

    line = memchr(p, '\n', hend - p) + 1;
    while (line < hend + 2) {
        eol = memchr(line, '\n', end - line);
        if (eol == NULL) {
            break;
        }
        if (strncasecmp(line, "content-length:", 15) == 0) {
            clen = strtol(line + 15, NULL, 10);
        } else if (strncasecmp(line, "transfer-encoding:", 18) == 0) {
            chunked = memmem(line, eol - line, "chunked", 7) != NULL;
        } else if (strncasecmp(line, "connection:", 11) == 0) {
            if (memmem(line, eol - line, "close", 5) != NULL) {
                *close_after = 1;
            }
        }
        line = eol + 1;
    }

    p = hend + 4;

    if (status < 200) {
        /* 100 Continue (we never ask) and friends: drop it, read on */
        memmove(c->rbuf, p, end - p);
        c->rlen = end - p;
        return parse_response(c, close_after);
    }

    if (status == 204 || status == 304) {
        return status;
    }

    if (chunked) {
        for ( ;; ) {
            long  sz;
            char *q;

            eol = memmem(p, end - p, "\r\n", 2);
            if (eol == NULL) {
                return 0;
            }
            sz = strtol(p, &q, 16);
            if (q == p || sz < 0) {
                return -1;
            }
            p = eol + 2;
            if (sz == 0) {
                /* trailers until an empty line */
                for ( ;; ) {
                    eol = memmem(p, end - p, "\r\n", 2);
                    if (eol == NULL) {
                        return 0;
                    }
                    if (eol == p) {
                        return status;
                    }
                    p = eol + 2;
                }
            }
            if ((size_t) (end - p) < (size_t) sz + 2) {
                return 0;
            }
            p += sz + 2;
        }
    }

    if (clen >= 0) {
        need = (size_t) (hend + 4 - c->rbuf) + (size_t) clen;
        return c->rlen >= need ? status : 0;
    }

    /* no length: the body ends when the server closes */
    *close_after = 1;
    return 0;
}


static int can_issue(double now);
static void issue_all(void);


static void
response_done(conn_t *c, int status, int close_after)
{
    double  now = now_s();

    completed++;
    if (status > 0 && status < MAX_STATUS) {
        status_count[status]++;
    } else {
        status_other++;
    }
    record_latency((now - c->t_sched) * 1e6);
    t_last = now;

    if (close_after) {
        conn_close(c, 0);
    } else {
        c->state = C_IDLE;
        c->rlen = 0;
    }
}


static void
conn_read(conn_t *c)
{
    ssize_t  n;
    int      status, close_after;

    for ( ;; ) {
        if (c->rcap - c->rlen < 1024) {
            c->rcap *= 2;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (c->rbuf == NULL) {
                die("%s", "out of memory");
            }
        }
        n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen - 1);
        if (n > 0) {
            c->rlen += n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            break;
        }
        /* EOF or error */
        if (c->state == C_SENDING || c->state == C_WAITING) {
            if (c->rlen) {
                c->rbuf[c->rlen] = '\0';
                status = parse_response(c, &close_after);
                if (status > 0) {
                    response_done(c, status, 1);
                    return;
                }
            }
            conn_fail(c, n == 0 ? &err_closed : &err_io);
        } else {
            conn_close(c, 0);
        }
        return;
    }

    if (c->state != C_SENDING && c->state != C_WAITING) {
        if (c->rlen) {      /* bytes nobody asked for */
            conn_fail(c, &err_parse);
        }
        return;
    }
    if (c->rlen == 0) {
        return;
    }

    c->rbuf[c->rlen] = '\0';
    status = parse_response(c, &close_after);
    if (status < 0) {
        conn_fail(c, &err_parse);
        return;
    }
    if (status == 0) {
        return;
    }
    if (c->state == C_SENDING) {
        /* answered before the body was all sent (e.g. 413): the rest of
         * the body would be read as the next request; start afresh */
        close_after = 1;
    }
    response_done(c, status, close_after);
}


static void
conn_write(conn_t *c)
{
    struct iovec  iov[2];
    int           iovcnt;
    ssize_t       n;
    size_t        total;
    body_t       *b = c->body;

    total = b->hdr_len + b->len;
    while (c->sent < total) {
        iovcnt = 0;
        if (c->sent < b->hdr_len) {
            iov[iovcnt].iov_base = b->hdr + c->sent;
            iov[iovcnt].iov_len = b->hdr_len - c->sent;
            iovcnt++;
            iov[iovcnt].iov_base = c->data;
            iov[iovcnt].iov_len = b->len;
            iovcnt++;
        } else {
            iov[iovcnt].iov_base = c->data + (c->sent - b->hdr_len);
            iov[iovcnt].iov_len = total - c->sent;
            iovcnt++;
        }
        n = writev(c->fd, iov, iovcnt);
        if (n > 0) {
            c->sent += n;
            bytes_sent += n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        conn_fail(c, &err_io);
        return;
    }
    c->state = C_WAITING;
}


static void
conn_event(conn_t *c, uint32_t events)
{
    int        err = 0;
    socklen_t  len = sizeof(err);

    if (c->state == C_CONNECTING) {
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            err_connect++;
            conn_close(c, 0.1);
            return;
        }
        if (events & EPOLLOUT) {
            c->state = C_IDLE;
        }
        return;
    }

    if (c->state == C_SENDING && (events & EPOLLOUT)) {
        conn_write(c);
    }
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        conn_read(c);
    }
}


/* may another request start now? */
static int
can_issue(double now)
{
    if (stop_flag) {
        return 0;
    }
    if (o_max_requests && issued >= o_max_requests) {
        return 0;
    }
    if (o_rate > 0) {
        /* request `issued` is due at t0 + issued/rate */
        double due = t0 + issued / o_rate;
        return due <= now && due < deadline;
    }
    return now < deadline;
}


static long
backlog_count(void)
{
    /* rate mode: due but not yet written */
    return issued - sent_reqs;
}


/*
 * Rate mode: everything due goes into the backlog (just a counter: request i
 * is due at t0 + i/rate); idle connections take from it in order.
 * Max mode: every idle connection starts a request.
 */
static void
issue_all(void)
{
    double  now = now_s();
    int     i;

    if (o_rate > 0) {
        while (can_issue(now)) {
            issued++;
        }
        for (i = 0; i < o_conns && backlog_count() > 0; i++) {
            if (conns[i].state == C_IDLE) {
                long k = sent_reqs;
                conn_start(&conns[i], t0 + k / o_rate);
            }
        }
        return;
    }

    for (i = 0; i < o_conns; i++) {
        if (conns[i].state == C_IDLE && can_issue(now)) {
            issued++;
            conn_start(&conns[i], now_s());
        }
    }
}


static int
busy(void)
{
    int  i;

    if (o_rate > 0 && backlog_count() > 0) {
        return 1;
    }
    for (i = 0; i < o_conns; i++) {
        if (conns[i].state == C_SENDING || conns[i].state == C_WAITING) {
            return 1;
        }
    }
    return 0;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static double
pct(double q)
{
    size_t  k;

    if (nlat == 0) {
        return 0;
    }
    k = (size_t) ceil(q * nlat);
    if (k < 1) {
        k = 1;
    }
    return lat[k - 1];
}


static void
usage(void)
{
    fprintf(stderr,
        "usage: loadgen -p PORT [-H HOST] [-P PATH] [-c CONNS] [-d SECONDS]\n"
        "               [-n REQUESTS] [-r RATE] [-s SAMPLES | -S FILE] [-u]\n"
        "               [-t GRACE_S] [-l LABEL] [-V 1|2] BODY.bin...\n"
        "  -r 0 (default): max rate; -r R: open loop, R requests/s,\n"
        "  latency from the scheduled send time\n"
        "  -V: remote write 1.0 or 2.0 headers for every body (default: 2.0\n"
        "  for a file name containing \".v2-\", 1.0 otherwise)\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    struct epoll_event  evs[256];
    double              now, wake, dur;
    int                 opt, i, n, first;
    size_t              maxlen = 0;
    long                s2xx = 0, unfinished, inflight = 0;
    int                 nv2 = 0;
    const char         *rw_version;
    double              sum = 0;
    FILE               *f;

    while ((opt = getopt(argc, argv, "H:p:P:c:d:n:r:s:S:ut:l:V:h")) != -1) {
        switch (opt) {
        case 'H': o_host = optarg; break;
        case 'p': o_port = atoi(optarg); break;
        case 'P': o_path = optarg; break;
        case 'c': o_conns = atoi(optarg); break;
        case 'd': o_duration = atof(optarg); break;
        case 'n': o_max_requests = atol(optarg); break;
        case 'r': o_rate = atof(optarg); break;
        case 's': o_samples = atol(optarg); break;
        case 'S':
            f = fopen(optarg, "r");
            if (f == NULL || fscanf(f, "%ld", &o_samples) != 1) {
                die("cannot read samples per body from %s", optarg);
            }
            fclose(f);
            break;
        case 'u': o_unique = 1; break;
        case 't': o_grace = atof(optarg); break;
        case 'l': o_label = optarg; break;
        case 'V':
            o_version = atoi(optarg);
            if (o_version != 1 && o_version != 2) {
                usage();
            }
            break;
        default: usage();
        }
    }
    if (o_port <= 0 || optind >= argc || o_conns < 1 || o_duration <= 0) {
        usage();
    }

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(o_port);
    if (inet_pton(AF_INET, o_host, &addr.sin_addr) != 1) {
        die("bad IPv4 address %s", o_host);
    }

    nbodies = argc - optind;
    bodies = calloc(nbodies, sizeof(body_t));
    for (i = 0; i < nbodies; i++) {
        load_body(&bodies[i], argv[optind + i]);
        if (bodies[i].len > maxlen) {
            maxlen = bodies[i].len;
        }
        nv2 += bodies[i].version == 2;
    }
    rw_version = nv2 == 0 ? "1.0" : nv2 == nbodies ? "2.0" : "mixed";

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    nonce = ((uint64_t) time(NULL) ^ ((uint64_t) getpid() << 12)) & 0xffffff;

    epfd = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    {
        struct epoll_event  ev;

        ev.events = EPOLLIN;
        ev.data.ptr = NULL;
        epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);
    }

    conns = calloc(o_conns, sizeof(conn_t));
    for (i = 0; i < o_conns; i++) {
        conns[i].idx = i;
        conns[i].fd = -1;
        conns[i].rcap = RBUF_INIT;
        conns[i].rbuf = malloc(RBUF_INIT);
        if (o_unique) {
            conns[i].copy = malloc(maxlen ? maxlen : 1);
        }
        conn_open(&conns[i]);
    }

    /* wait (bounded) until the connections are up, so connects are not
     * counted in the first latencies */
    now = now_s();
    wake = now + 2;
    while (now < wake) {
        int up = 0;

        for (i = 0; i < o_conns; i++) {
            up += conns[i].state == C_IDLE;
        }
        if (up == o_conns) {
            break;
        }
        n = epoll_wait(epfd, evs, 256, 10);
        for (i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                conn_event(evs[i].data.ptr, evs[i].events);
            }
        }
        now = now_s();
    }

    t0 = now_s();
    deadline = t0 + o_duration;
    grace_end = deadline + o_grace;
    t_last = t0;

    first = 1;
    for ( ;; ) {
        now = now_s();

        /* reconnect what is down */
        for (i = 0; i < o_conns; i++) {
            if (conns[i].state == C_DOWN && conns[i].retry_at <= now
                && now < grace_end && !stop_flag)
            {
                conn_open(&conns[i]);
            }
        }

        issue_all();

        now = now_s();
        if (!first && !busy() && (now >= deadline || stop_flag
                                  || (o_max_requests
                                      && issued >= o_max_requests)))
        {
            break;
        }
        if (now >= grace_end || stop_flag > 1) {
            break;
        }
        first = 0;

        /* next wake-up: next due request, a reconnect, the deadline */
        wake = grace_end;
        if (now < deadline && deadline < wake) {
            wake = deadline;
        }
        if (o_rate > 0 && (!o_max_requests || issued < o_max_requests)) {
            double due = t0 + issued / o_rate;

            if (due < deadline && due < wake) {
                wake = due;
            }
        }
        for (i = 0; i < o_conns; i++) {
            if (conns[i].state == C_DOWN && conns[i].retry_at < wake) {
                wake = conns[i].retry_at;
            }
        }
        set_timer(wake);

        n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0 && errno != EINTR) {
            die("%s", "epoll_wait failed");
        }
        if (stop_flag) {
            stop_flag = 2;
        }
        for (i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t  exp;

                while (read(tfd, &exp, sizeof(exp)) > 0) { /* drain */ }
                continue;
            }
            conn_event(evs[i].data.ptr, evs[i].events);
        }
    }

    /* what never got an answer still counts in the latencies, as a lower
     * bound (now - due time): an overloaded server must not look fast */
    now = now_s();
    for (i = 0; i < o_conns; i++) {
        if (conns[i].state == C_SENDING || conns[i].state == C_WAITING) {
            inflight++;
            record_latency((now - conns[i].t_sched) * 1e6);
        }
        if (conns[i].fd >= 0) {
            close(conns[i].fd);
        }
    }
    unfinished = inflight + (o_rate > 0 ? backlog_count() : 0);
    if (o_rate > 0) {
        long  k;

        for (k = sent_reqs; k < issued; k++) {
            record_latency((now - (t0 + k / o_rate)) * 1e6);
        }
    }

    qsort(lat, nlat, sizeof(double), cmp_double);
    for (i = 0; i < (int) nlat; i++) {
        sum += lat[i];
    }
    for (i = 200; i < 300; i++) {
        s2xx += status_count[i];
    }

    dur = t_last - t0;
    if (o_rate > 0 && dur < o_duration) {
        dur = o_duration;
    }
    if (dur <= 0) {
        dur = 1e-9;
    }

    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"rate_target\":%.3f,"
           "\"rw_version\":\"%s\",\"path\":\"%s\","
           "\"connections\":%d,\"bodies\":%d,\"requests\":%ld,"
           "\"completed\":%ld,\"responses\":{",
           o_label, o_rate > 0 ? "rate" : "max", o_rate, rw_version, o_path,
           o_conns, nbodies, sent_reqs, completed);
    first = 1;
    for (i = 0; i < MAX_STATUS; i++) {
        if (status_count[i]) {
            printf("%s\"%d\":%ld", first ? "" : ",", i, status_count[i]);
            first = 0;
        }
    }
    if (status_other) {
        printf("%s\"other\":%ld", first ? "" : ",", status_other);
    }
    printf("},\"ok\":%ld,\"errors\":%ld,\"error_kinds\":{\"connect\":%ld,"
           "\"io\":%ld,\"closed\":%ld,\"parse\":%ld},\"unfinished\":%ld,"
           "\"duration_s\":%.3f,\"req_per_s\":%.2f,\"samples_per_body\":%ld,"
           "\"samples\":%ld,\"samples_per_s\":%.0f,\"bytes_sent\":%llu,"
           "\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,"
           "\"p999\":%.0f,\"max\":%.0f,\"mean\":%.0f}}\n",
           s2xx, err_connect + err_io + err_closed + err_parse + unfinished,
           err_connect, err_io, err_closed, err_parse, unfinished,
           dur, completed / dur, o_samples,
           o_samples >= 0 ? s2xx * o_samples : -1,
           o_samples >= 0 ? s2xx * o_samples / dur : -1.0,
           (unsigned long long) bytes_sent,
           pct(0.50), pct(0.90), pct(0.99), pct(0.999),
           nlat ? lat[nlat - 1] : 0, nlat ? sum / nlat : 0);

    return 0;
}
