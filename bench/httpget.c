/*
 * httpget: closed-loop GET latency on keep-alive HTTP/1.1 connections, the
 * timing client of bench/exemplar_bench.py.
 *
 *     httpget -P PATH [-n N] [-w WARMUP] [-b BLOCK] [-s SETTLE_MS]
 *             [-o DIR] [-H HEADER]... NAME=HOST:PORT...
 *
 * One blocking connection per target (TCP_NODELAY), opened before the
 * first request and reused for all of them.  Each round sends the same GET
 * (PATH, with its query string already encoded) to each target in turn and
 * waits for the whole answer, so that the targets see the same load and
 * the same noise; WARMUP rounds first (not timed), then N timed rounds.
 * With -b, BLOCK requests in a row to a target a turn (default 1), and
 * with -s a pause of SETTLE_MS after each turn: a server's work left after
 * its answers (a Go runtime's garbage collection) then runs in the pause,
 * not while the next target is timed on this 2-CPU machine.  A
 * request's time runs from before write() to the last byte of the body.
 * Bodies are read by Content-Length or de-chunked, in 1 MB reads, and
 * dropped, except the first answer's of each target, which is kept and
 * written to DIR/NAME.body (for the byte comparison; with WARMUP 0 it is
 * the first timed one, which then also pays for the copy).  Prints one
 * JSON line:
 *
 *     {"NAME": {"status": 200, "bytes": B, "p50_us": ..., "p99_us": ...,
 *               "min_us": ..., "max_us": ..., "mean_us": ...,
 *               "reconnects": 0}, ...}
 *
 * The percentile is the sorted value at index min(n - 1, n * p), as
 * exemplar_bench.py's pct().  A target that closes its connection is
 * reconnected (counted; the connect is inside that request's time).
 *
 *     cc -O2 -Wall -o httpget bench/httpget.c
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 8

typedef struct {
    const char  *name;
    struct sockaddr_in addr;
    int          fd;
    double      *lat;
    int          status;
    size_t       bytes;
    int          reconnects;
} target_t;

typedef struct {
    char   *p;
    size_t  len;        /* bytes held */
    size_t  pos;        /* bytes consumed */
    size_t  cap;
} buf_t;


static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}


static void
die(const char *what, const char *name)
{
    fprintf(stderr, "httpget: %s: %s (%s)\n", name, what,
            errno ? strerror(errno) : "protocol");
    exit(1);
}


static int
connect_target(target_t *t)
{
    int  fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        die("socket", t->name);
    }
    if (connect(fd, (struct sockaddr *) &t->addr, sizeof(t->addr)) < 0) {
        die("connect", t->name);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}


/* read more into b (1 MB; what was consumed is dropped); 0 on EOF */
static ssize_t
fill(int fd, buf_t *b)
{
    ssize_t  n;

    if (b->pos == b->len) {
        b->pos = b->len = 0;

    } else if (b->pos > 0 && b->cap - b->len < 65536) {
        memmove(b->p, b->p + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;
    }

    if (b->cap - b->len < 65536) {
        b->cap = b->cap ? b->cap * 2 : 1 << 20;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            die("out of memory", "buffer");
        }
    }

    do {
        n = read(fd, b->p + b->len, b->cap - b->len);
    } while (n < 0 && errno == EINTR);

    if (n > 0) {
        b->len += n;
    }

    return n;
}


/* the line ending at the next CRLF from b->pos (reads as needed); NULL on
 * EOF; the CRLF is consumed and replaced by NULs */
static char *
line(int fd, buf_t *b)
{
    char  *s, *e;

    for ( ;; ) {
        s = b->p + b->pos;
        e = b->len > b->pos ? memmem(s, b->len - b->pos, "\r\n", 2) : NULL;
        if (e != NULL) {
            *e = '\0';
            e[1] = '\0';
            b->pos = e + 2 - b->p;
            return s;
        }
        if (fill(fd, b) <= 0) {
            return NULL;
        }
    }
}


/* consumes n bytes of in, appended to body if not NULL; -1 on EOF */
static int
take(int fd, buf_t *in, buf_t *body, size_t n)
{
    size_t  k;

    while (n) {
        if (in->pos == in->len && fill(fd, in) <= 0) {
            return -1;
        }

        k = in->len - in->pos;
        k = k < n ? k : n;

        if (body != NULL) {
            if (body->cap - body->len < k) {
                body->cap = body->len + k + (1 << 20);
                body->p = realloc(body->p, body->cap);
                if (body->p == NULL) {
                    die("out of memory", "body");
                }
            }
            memcpy(body->p + body->len, in->p + in->pos, k);
            body->len += k;
        }

        in->pos += k;
        n -= k;
    }

    return 0;
}


/*
 * one answer: status, its body's size, the body appended to body unless
 * NULL (timed answers are read without a copy); returns 1 if the server
 * keeps the connection, 0 if it closes it, -1 on EOF before an answer
 */
static int
response(int fd, buf_t *in, buf_t *body, int *status, size_t *size)
{
    char    *l, *v;
    long     clen = -1;
    int      chunked = 0, keep = 1;
    size_t   n;

    *size = 0;
    if (body != NULL) {
        body->len = body->pos = 0;
    }

    l = line(fd, in);
    if (l == NULL) {
        return -1;
    }
    if (strncmp(l, "HTTP/1.", 7) != 0 || strlen(l) < 12) {
        return -1;
    }
    *status = atoi(l + 9);
    while ((l = line(fd, in)) != NULL && *l != '\0') {
        v = strchr(l, ':');
        if (v == NULL) {
            continue;
        }
        *v++ = '\0';
        while (*v == ' ') {
            v++;
        }
        if (strcasecmp(l, "Content-Length") == 0) {
            clen = atol(v);
        } else if (strcasecmp(l, "Transfer-Encoding") == 0
                   && strcasestr(v, "chunked"))
        {
            chunked = 1;
        } else if (strcasecmp(l, "Connection") == 0
                   && strcasestr(v, "close"))
        {
            keep = 0;
        }
    }
    if (l == NULL) {
        return -1;
    }

    if (chunked) {
        for ( ;; ) {
            l = line(fd, in);
            if (l == NULL) {
                return -1;
            }
            n = strtoul(l, NULL, 16);
            if (n == 0) {
                /* trailers up to the empty line */
                while ((l = line(fd, in)) != NULL && *l != '\0') {
                    /* void */
                }
                break;
            }
            if (take(fd, in, body, n) < 0 || take(fd, in, NULL, 2) < 0) {
                return -1;
            }
            *size += n;
        }

    } else if (clen >= 0) {
        if (take(fd, in, body, clen) < 0) {
            return -1;
        }
        *size = clen;

    } else {
        return -1;      /* a body up to close: not from these servers */
    }

    return keep;
}


/*
 * One request to t, timed into *lat unless NULL; body (not NULL for the
 * first answer) is kept and written to DIR/NAME.body
 */
static void
one(target_t *t, const char *req, size_t reqlen, buf_t *in, buf_t *body,
    const char *dir, int tries, double *lat)
{
    int      rc, st;
    FILE    *f;
    char     fn[4096];
    size_t   size;
    double   t0;

    t0 = now_us();

    for (rc = -1; rc < 0; ) {
        in->len = in->pos = 0;
        if (write(t->fd, req, reqlen) != (ssize_t) reqlen) {
            rc = -1;
        } else {
            rc = response(t->fd, in, body, &st, &size);
        }
        if (rc < 0) {
            /* closed under us (idle timeout, keepalive_requests) */
            close(t->fd);
            t->fd = connect_target(t);
            if (++t->reconnects > tries + 10) {
                errno = 0;
                die("no answer", t->name);
            }
        }
    }

    if (lat != NULL) {
        *lat = now_us() - t0;
    }

    if (!rc) {
        close(t->fd);
        t->fd = connect_target(t);
        t->reconnects++;
    }

    if (body != NULL) {
        t->status = st;
        t->bytes = size;
        if (dir) {
            snprintf(fn, sizeof(fn), "%s/%s.body", dir, t->name);
            f = fopen(fn, "wb");
            if (f == NULL || fwrite(body->p, 1, body->len, f) != body->len
                || fclose(f) != 0)
            {
                die("cannot write the body", fn);
            }
        }
    }
}


static int
cmp(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


int
main(int argc, char **argv)
{
    const char  *path = NULL, *dir = NULL;
    char        *req, *hdrs, *c, *host;
    int          i, j, k, n = 100, warm = 5, nt = 0, opt, blk = 1;
    int          settle = 0;
    size_t       reqlen, hlen = 0;
    double       sum;
    target_t     t[MAX_TARGETS];
    buf_t        in, body;

    hdrs = calloc(1, 1);
    while ((opt = getopt(argc, argv, "P:n:w:o:H:b:s:")) != -1) {
        switch (opt) {
        case 'P': path = optarg; break;
        case 'n': n = atoi(optarg); break;
        case 'w': warm = atoi(optarg); break;
        case 'o': dir = optarg; break;
        case 'b': blk = atoi(optarg); break;
        case 's': settle = atoi(optarg); break;
        case 'H':
            hlen += strlen(optarg) + 2;
            hdrs = realloc(hdrs, hlen + 1);
            strcat(hdrs, optarg);
            strcat(hdrs, "\r\n");
            break;
        default:
            fprintf(stderr, "usage: httpget -P PATH [-n N] [-w WARMUP] "
                    "[-b BLOCK] [-s SETTLE_MS] [-o DIR] [-H HEADER]... "
                    "NAME=HOST:PORT...\n");
            return 2;
        }
    }
    if (path == NULL || optind >= argc || n < 1 || warm < 0 || blk < 1
        || settle < 0)
    {
        fprintf(stderr, "httpget: -P PATH and at least one NAME=HOST:PORT\n");
        return 2;
    }

    memset(t, 0, sizeof(t));
    for (i = optind; i < argc && nt < MAX_TARGETS; i++, nt++) {
        c = strchr(argv[i], '=');
        host = c ? c + 1 : NULL;
        c = host ? strrchr(host, ':') : NULL;
        if (c == NULL) {
            fprintf(stderr, "httpget: %s: not NAME=HOST:PORT\n", argv[i]);
            return 2;
        }
        host[-1] = '\0';
        *c = '\0';
        t[nt].name = argv[i];
        t[nt].addr.sin_family = AF_INET;
        t[nt].addr.sin_port = htons(atoi(c + 1));
        if (inet_pton(AF_INET, host, &t[nt].addr.sin_addr) != 1) {
            fprintf(stderr, "httpget: %s: not an IPv4 address\n", host);
            return 2;
        }
        t[nt].lat = calloc(n, sizeof(double));
        t[nt].fd = connect_target(&t[nt]);
    }

    /* the same request to each: only Host differs (all on 127.0.0.1) */
    reqlen = strlen(path) + hlen + 256;
    req = malloc(reqlen);
    snprintf(req, reqlen, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "User-Agent: promgate-bench-httpget\r\nAccept: */*\r\n%s\r\n",
             path, hdrs);
    reqlen = strlen(req);

    memset(&in, 0, sizeof(in));
    memset(&body, 0, sizeof(body));

    /* the warm-up rounds, then the timed ones, blk requests a turn */

    for (i = -warm; i < 0; i++) {
        for (k = 0; k < nt; k++) {
            one(&t[k], req, reqlen, &in, i == -warm ? &body : NULL, dir,
                n + warm, NULL);
        }
    }

    for (i = 0; i < n; i += blk) {
        for (k = 0; k < nt; k++) {
            for (j = i; j < n && j < i + blk; j++) {
                one(&t[k], req, reqlen, &in,
                    (warm == 0 && j == 0) ? &body : NULL, dir, n + warm,
                    &t[k].lat[j]);
            }
            if (settle) {
                usleep(settle * 1000);
            }
        }
    }

    printf("{");
    for (k = 0; k < nt; k++) {
        qsort(t[k].lat, n, sizeof(double), cmp);
        for (sum = 0, i = 0; i < n; i++) {
            sum += t[k].lat[i];
        }
        printf("%s\"%s\": {\"status\": %d, \"bytes\": %zu, \"p50_us\": %.1f, "
               "\"p99_us\": %.1f, \"min_us\": %.1f, \"max_us\": %.1f, "
               "\"mean_us\": %.1f, \"n\": %d, \"reconnects\": %d}",
               k ? ", " : "", t[k].name, t[k].status, t[k].bytes,
               t[k].lat[(int) (n * 0.5) < n ? (int) (n * 0.5) : n - 1],
               t[k].lat[(int) (n * 0.99) < n ? (int) (n * 0.99) : n - 1],
               t[k].lat[0], t[k].lat[n - 1], sum / n, n, t[k].reconnects);
        close(t[k].fd);
    }
    printf("}\n");
    return 0;
}
