/*
 * A Kafka broker for tests and benchmarks: librdkafka's mock cluster
 * (rdkafka_mock.h) as a standalone process on loopback, driven through a
 * control protocol on stdin/stdout, so that tests can take brokers down and
 * up without losing the cluster's in-memory state or its port.
 *
 *   kafka_mock [BROKERS]        prints "ready BOOTSTRAP_SERVERS"
 *
 * Commands, one per line; every answer ends with a line starting with
 * "ok", "end" or "err":
 *
 *   create TOPIC PARTITIONS
 *   down ID|all             up ID|all          (broker ids from 1)
 *   produce TOPIC PARTITION HEX...             one message per HEX ("-" is
 *                                              empty); PARTITION -1: any;
 *                                              HEX@name=HEX,... adds headers
 *   repeat TOPIC PARTITION COUNT HEX           COUNT copies of one message
 *   consume TOPIC           "msg PARTITION OFFSET HEX HEADERS" per message
 *                           (HEADERS: name=HEX,... or "-"), then "end N"
 *   committed GROUP TOPIC   "committed PARTITION OFFSET" lines, then "end"
 *   hwm TOPIC               "hwm PARTITION LOW HIGH" lines, then "end"
 *   quit
 */

#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>


static rd_kafka_t               *mock_rk;
static rd_kafka_mock_cluster_t  *mock;
static const char               *bootstraps;
static int                       nbrokers;
static rd_kafka_t               *producer;
static int                       dr_failed;


static void
reply(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);

    putchar('\n');
    fflush(stdout);
}


static void
quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level <= 3) {
        fprintf(stderr, "%s: %s: %s\n", rd_kafka_name(rk), fac, buf);
    }
}


static rd_kafka_conf_t *
client_conf(void)
{
    char              err[512];
    rd_kafka_conf_t  *conf;

    conf = rd_kafka_conf_new();

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err,
                          sizeof(err)) != RD_KAFKA_CONF_OK)
    {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }

    rd_kafka_conf_set_log_cb(conf, quiet_log);

    return conf;
}


static void
dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    if (m->err) {
        dr_failed++;
        fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
}


static rd_kafka_t *
get_producer(void)
{
    char              err[512];
    rd_kafka_conf_t  *conf;

    if (producer) {
        return producer;
    }

    conf = client_conf();
    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err));
    rd_kafka_conf_set(conf, "message.timeout.ms", "30000", err, sizeof(err));
    rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err,
                      sizeof(err));
    rd_kafka_conf_set(conf, "queue.buffering.max.kbytes", "2097151", err,
                      sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);

    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (producer == NULL) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }

    return producer;
}


static int
unhex(const char *hex, char **out, size_t *len)
{
    size_t  n, i;
    char   *buf;
    int     hi, lo;

    if (strcmp(hex, "-") == 0) {
        *out = NULL;
        *len = 0;
        return 0;
    }

    n = strlen(hex);
    if (n % 2) {
        return -1;
    }

    buf = malloc(n / 2 + 1);
    if (buf == NULL) {
        return -1;
    }

    for (i = 0; i < n / 2; i++) {
        if (sscanf(hex + 2 * i, "%1x%1x", &hi, &lo) != 2) {
            free(buf);
            return -1;
        }
        buf[i] = (char) (hi << 4 | lo);
    }

    *out = buf;
    *len = n / 2;

    return 0;
}


static void
hexout(const void *p, size_t len)
{
    size_t               i;
    const unsigned char *s = p;

    if (len == 0) {
        fputs("-", stdout);
        return;
    }

    for (i = 0; i < len; i++) {
        printf("%02x", s[i]);
    }
}


/* "name=HEX,name=HEX" */

static rd_kafka_headers_t *
parse_headers(char *spec)
{
    char                *save, *kv, *eq, *val;
    size_t               vlen;
    rd_kafka_headers_t  *hdrs;

    hdrs = rd_kafka_headers_new(4);

    for (kv = strtok_r(spec, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        eq = strchr(kv, '=');
        if (eq == NULL) {
            continue;
        }

        *eq = '\0';

        if (unhex(eq + 1, &val, &vlen) != 0) {
            continue;
        }

        rd_kafka_header_add(hdrs, kv, -1, val, vlen);
        free(val);
    }

    return hdrs;
}


static int
produce_one(rd_kafka_t *rk, const char *topic, int partition, char *buf,
    size_t len, char *hspec)
{
    rd_kafka_resp_err_t  err;
    rd_kafka_headers_t  *hdrs;
    int                  tries;

    for (tries = 0; tries < 1000; tries++) {
        hdrs = hspec ? parse_headers(hspec) : NULL;

        if (hdrs) {
            err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION(partition),
                                    RD_KAFKA_V_VALUE(buf, len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_HEADERS(hdrs),
                                    RD_KAFKA_V_END);
            if (err) {
                rd_kafka_headers_destroy(hdrs);
            }

        } else {
            err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION(partition),
                                    RD_KAFKA_V_VALUE(buf, len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_END);
        }

        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            return err ? -1 : 0;
        }

        rd_kafka_poll(rk, 100);
    }

    return -1;
}


static void
cmd_produce(char **argv, int argc, int repeat)
{
    int          i, partition, n, count, failed;
    char        *buf, *hspec;
    size_t       len;
    rd_kafka_t  *rk;

    if (argc < (repeat ? 5 : 4)) {
        reply("err usage");
        return;
    }

    rk = get_producer();
    partition = atoi(argv[2]);
    n = 0;
    failed = 0;
    dr_failed = 0;

    if (repeat) {
        count = atoi(argv[3]);

        if (unhex(argv[4], &buf, &len) != 0) {
            reply("err bad hex");
            return;
        }

        for (i = 0; i < count; i++) {
            if (produce_one(rk, argv[1],
                            partition == -1 ? RD_KAFKA_PARTITION_UA
                                            : partition, buf, len, NULL)
                != 0)
            {
                failed++;
            } else {
                n++;
            }
        }

        free(buf);

    } else {
        for (i = 3; i < argc; i++) {
            hspec = strchr(argv[i], '@');
            if (hspec) {
                *hspec++ = '\0';
            }

            if (unhex(argv[i], &buf, &len) != 0) {
                reply("err bad hex");
                return;
            }

            if (produce_one(rk, argv[1],
                            partition == -1 ? RD_KAFKA_PARTITION_UA
                                            : partition, buf, len, hspec)
                != 0)
            {
                failed++;
            } else {
                n++;
            }

            free(buf);
        }
    }

    if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        reply("err flush timed out");
        return;
    }

    if (failed || dr_failed) {
        reply("err %d failed", failed + dr_failed);
        return;
    }

    reply("ok %d", n);
}


static int
partitions_of(rd_kafka_t *rk, const char *topic)
{
    int                            n;
    rd_kafka_topic_t              *rkt;
    const struct rd_kafka_metadata *md;

    rkt = rd_kafka_topic_new(rk, topic, NULL);

    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) != 0) {
        rd_kafka_topic_destroy(rkt);
        return -1;
    }

    n = md->topic_cnt == 1 && md->topics[0].err == 0
        ? md->topics[0].partition_cnt : -1;

    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);

    return n;
}


static void
cmd_consume(const char *topic)
{
    int                               i, n, eof, count;
    char                              err[512];
    size_t                            j, vlen;
    const char                       *hname;
    const void                       *hval;
    rd_kafka_t                       *rk;
    rd_kafka_conf_t                  *conf;
    rd_kafka_message_t               *m;
    rd_kafka_headers_t               *hdrs;
    rd_kafka_topic_partition_list_t  *parts;

    conf = client_conf();
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "kafka_mock-consume", err,
                      sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));

    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL) {
        reply("err %s", err);
        return;
    }

    n = partitions_of(rk, topic);
    if (n < 0) {
        rd_kafka_destroy(rk);
        reply("err no topic %s", topic);
        return;
    }

    parts = rd_kafka_topic_partition_list_new(n);

    for (i = 0; i < n; i++) {
        rd_kafka_topic_partition_list_add(parts, topic, i)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    }

    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);

    eof = 0;
    count = 0;

    for (i = 0; eof < n && i < 300; ) {
        m = rd_kafka_consumer_poll(rk, 100);

        if (m == NULL) {
            i++;
            continue;
        }

        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof++;

        } else if (m->err) {
            fprintf(stderr, "consume: %s\n", rd_kafka_message_errstr(m));

        } else {
            printf("msg %d %lld ", (int) m->partition, (long long) m->offset);
            hexout(m->payload, m->len);
            putchar(' ');

            if (rd_kafka_message_headers(m, &hdrs) == 0
                && rd_kafka_header_cnt(hdrs))
            {
                for (j = 0; rd_kafka_header_get_all(hdrs, j, &hname, &hval,
                                                    &vlen) == 0; j++)
                {
                    printf("%s%s=", j ? "," : "", hname);
                    hexout(hval, vlen);
                }

            } else {
                putchar('-');
            }

            putchar('\n');
            count++;
        }

        rd_kafka_message_destroy(m);
    }

    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);

    if (eof < n) {
        reply("err timed out after %d messages", count);
        return;
    }

    reply("end %d", count);
}


/* one handle per group, kept: benchmarks ask often */

static rd_kafka_t  *committed_rk;
static char         committed_group[256];


static void
cmd_committed(const char *group, const char *topic)
{
    int                               i, n;
    char                              err[512];
    rd_kafka_t                       *rk;
    rd_kafka_conf_t                  *conf;
    rd_kafka_topic_partition_list_t  *parts;

    if (committed_rk && strcmp(committed_group, group) != 0) {
        rd_kafka_destroy(committed_rk);
        committed_rk = NULL;
    }

    if (committed_rk == NULL) {
        conf = client_conf();
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));

        committed_rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err,
                                    sizeof(err));
        if (committed_rk == NULL) {
            reply("err %s", err);
            return;
        }

        snprintf(committed_group, sizeof(committed_group), "%s", group);
    }

    rk = committed_rk;

    n = partitions_of(rk, topic);
    if (n < 0) {
        reply("err no topic %s", topic);
        return;
    }

    parts = rd_kafka_topic_partition_list_new(n);

    for (i = 0; i < n; i++) {
        rd_kafka_topic_partition_list_add(parts, topic, i);
    }

    if (rd_kafka_committed(rk, parts, 10000) != 0) {
        reply("err committed failed");

    } else {
        for (i = 0; i < parts->cnt; i++) {
            if (parts->elems[i].err) {
                reply("err committed %d: %s", (int) parts->elems[i].partition,
                      rd_kafka_err2str(parts->elems[i].err));
                goto done;
            }

            printf("committed %d %lld\n", (int) parts->elems[i].partition,
                   (long long) parts->elems[i].offset);
        }

        reply("end");
    }

done:

    rd_kafka_topic_partition_list_destroy(parts);
}


static void
cmd_hwm(const char *topic)
{
    int          i, n;
    int64_t      lo, hi;
    rd_kafka_t  *rk;

    rk = get_producer();

    n = partitions_of(rk, topic);
    if (n < 0) {
        reply("err no topic %s", topic);
        return;
    }

    for (i = 0; i < n; i++) {
        if (rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi, 10000)
            != 0)
        {
            reply("err watermarks of %s/%d", topic, i);
            return;
        }

        printf("hwm %d %lld %lld\n", i, (long long) lo, (long long) hi);
    }

    reply("end");
}


static void
cmd_broker(const char *id, int up)
{
    int  i, from, to;

    if (strcmp(id, "all") == 0) {
        from = 1;
        to = nbrokers;

    } else {
        from = to = atoi(id);
    }

    for (i = from; i <= to; i++) {
        if ((up ? rd_kafka_mock_broker_set_up(mock, i)
                : rd_kafka_mock_broker_set_down(mock, i)) != 0)
        {
            reply("err broker %d", i);
            return;
        }
    }

    reply("ok");
}


int
main(int argc, char **argv)
{
    int               n;
    char             *line, *argp[4100], *save, *tok;
    size_t            cap;
    ssize_t           len;
    char              err[512];
    rd_kafka_conf_t  *conf;

    nbrokers = argc > 1 ? atoi(argv[1]) : 1;
    if (nbrokers < 1) {
        nbrokers = 1;
    }

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log);

    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (mock_rk == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    mock = rd_kafka_mock_cluster_new(mock_rk, nbrokers);
    if (mock == NULL) {
        fprintf(stderr, "could not start the mock cluster\n");
        return 1;
    }

    bootstraps = rd_kafka_mock_cluster_bootstraps(mock);

    reply("ready %s", bootstraps);

    line = NULL;
    cap = 0;

    while ((len = getline(&line, &cap, stdin)) > 0) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }

        n = 0;
        for (tok = strtok_r(line, " ", &save); tok && n < 4099;
             tok = strtok_r(NULL, " ", &save))
        {
            argp[n++] = tok;
        }

        if (n == 0) {
            continue;
        }

        if (strcmp(argp[0], "quit") == 0) {
            reply("ok");
            break;

        } else if (strcmp(argp[0], "create") == 0 && n == 3) {
            if (rd_kafka_mock_topic_create(mock, argp[1], atoi(argp[2]), 1)
                != 0)
            {
                reply("err create %s", argp[1]);
            } else {
                reply("ok");
            }

        } else if (strcmp(argp[0], "down") == 0 && n == 2) {
            cmd_broker(argp[1], 0);

        } else if (strcmp(argp[0], "up") == 0 && n == 2) {
            cmd_broker(argp[1], 1);

        } else if (strcmp(argp[0], "produce") == 0) {
            cmd_produce(argp, n, 0);

        } else if (strcmp(argp[0], "repeat") == 0) {
            cmd_produce(argp, n, 1);

        } else if (strcmp(argp[0], "consume") == 0 && n == 2) {
            cmd_consume(argp[1]);

        } else if (strcmp(argp[0], "committed") == 0 && n == 3) {
            cmd_committed(argp[1], argp[2]);

        } else if (strcmp(argp[0], "hwm") == 0 && n == 2) {
            cmd_hwm(argp[1]);

        } else {
            reply("err unknown command %s", argp[0]);
        }
    }

    free(line);

    if (producer) {
        rd_kafka_flush(producer, 1000);
        rd_kafka_destroy(producer);
    }

    if (committed_rk) {
        rd_kafka_destroy(committed_rk);
    }

    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);

    return 0;
}
