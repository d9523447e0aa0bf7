/* The cut rule against a simulated cluster: a random interleaving of sequencer commits and
 * participants recording them, cut many times while it runs, each cut checked for a fork.
 * Also the rule that picks a node's backup for a watermark, the watermark record, times. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coord/coord.h"

#define MAX_EVENTS 200000
#define NODES 5 /* node 2 is the sequencer */
#define SEQ 2

/* The world: the sequencer's log of events, and each other node's log of the events it
 * recorded. A node's position (its "LSN") is the length of its log. A participant records
 * only events the sequencer already committed, in any order. */
struct world {
    pthread_mutex_t lock;
    unsigned seed;
    uint32_t *log[NODES];
    size_t len[NODES];
    uint32_t *seq_pos;        /* event -> its index in the sequencer's log */
    uint8_t *recorded[NODES]; /* event -> recorded by node */
    uint32_t oldest[NODES];   /* the oldest event the node has not recorded */
    uint32_t events;
    long steps_per_read;
};

static uint32_t rnd(struct world *w, uint32_t n)
{
    w->seed = w->seed * 1103515245u + 12345u;
    return (w->seed >> 8) % n;
}

static void step(struct world *w)
{
    uint32_t node = rnd(w, NODES);
    if (node == SEQ || w->events == 0) {
        if (w->events == MAX_EVENTS)
            return;
        uint32_t e = w->events++;
        w->seq_pos[e] = (uint32_t)w->len[SEQ];
        w->log[SEQ][w->len[SEQ]++] = e;
        return;
    }
    /* Mostly the oldest event not yet recorded, sometimes a newer one. */
    while (w->oldest[node] < w->events && w->recorded[node][w->oldest[node]])
        w->oldest[node]++;
    if (w->oldest[node] == w->events)
        return;
    uint32_t e = w->oldest[node];
    if (rnd(w, 4) == 0)
        e += rnd(w, w->events - e);
    if (w->recorded[node][e])
        return;
    w->recorded[node][e] = 1;
    w->log[node][w->len[node]++] = e;
}

static void advance(struct world *w, long max_steps)
{
    long n = (long)rnd(w, (uint32_t)max_steps + 1);
    for (long i = 0; i < n; i++)
        step(w);
}

static int sim_read(void *ctx, size_t node, wal_lsn_t *lsn, wv_err_t *err)
{
    (void)err;
    struct world *w = ctx;
    if (rnd(w, 2)) /* let the other readers run first sometimes */
        sched_yield();
    pthread_mutex_lock(&w->lock);
    advance(w, w->steps_per_read);
    *lsn = w->len[node];
    advance(w, w->steps_per_read);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

static struct coord_cluster sim_cluster(struct coord_node nodes[NODES])
{
    for (size_t i = 0; i < NODES; i++) {
        memset(&nodes[i], 0, sizeof nodes[i]);
        snprintf(nodes[i].name, sizeof nodes[i].name, "n%zu", i);
        nodes[i].role = i == SEQ ? COORD_SEQUENCER : i % 2 ? COORD_PARTICIPANT : COORD_MEDIATOR;
    }
    return (struct coord_cluster){.nodes = nodes, .count = NODES, .sequencer = SEQ};
}

/* A fork: some node's prefix holds an event beyond the sequencer's prefix. */
static bool forks(const struct world *w, const wal_lsn_t *lsns)
{
    for (size_t node = 0; node < NODES; node++)
        for (size_t i = 0; node != SEQ && i < lsns[node]; i++)
            if (w->seq_pos[w->log[node][i]] >= lsns[SEQ])
                return true;
    return false;
}

static void world_init(struct world *w, unsigned seed)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    w->seed = seed;
    w->steps_per_read = 3;
    w->seq_pos = calloc(MAX_EVENTS, sizeof *w->seq_pos);
    for (size_t i = 0; i < NODES; i++) {
        w->log[i] = calloc(MAX_EVENTS, sizeof *w->log[i]);
        w->recorded[i] = calloc(MAX_EVENTS, 1);
    }
}

static void world_free(struct world *w)
{
    free(w->seq_pos);
    for (size_t i = 0; i < NODES; i++) {
        free(w->log[i]);
        free(w->recorded[i]);
    }
    pthread_mutex_destroy(&w->lock);
}

/* The wrong order, for the control: sequencer first, then the others. */
static void read_seq_first(struct world *w, wal_lsn_t *lsns)
{
    wv_err_t err;
    for (size_t i = SEQ; i < SEQ + NODES; i++)
        sim_read(w, i % NODES, &lsns[i % NODES], &err);
}

static int run_cuts(unsigned seed, bool seq_first, int cuts)
{
    struct world w;
    struct coord_node nodes[NODES];
    struct coord_cluster c = sim_cluster(nodes);
    world_init(&w, seed);
    int found = 0;
    for (int i = 0; i < cuts; i++) {
        wal_lsn_t lsns[NODES] = {0};
        wv_err_t err = {0};
        if (seq_first)
            read_seq_first(&w, lsns);
        else
            assert_int_equal(coord_cut_read(&c, sim_read, &w, lsns, &err), 0);
        found += forks(&w, lsns);
    }
    world_free(&w);
    return found;
}

static void test_random_cuts_never_fork(void **state)
{
    (void)state;
    unsigned seed = (unsigned)getpid();
    int forked = run_cuts(seed, false, 3000);
    if (forked)
        fail_msg("%d of 3000 cuts forked (seed %u)", forked, seed);
}

static void test_control_wrong_order_forks(void **state)
{
    (void)state;
    int forked = run_cuts(12345u, true, 3000);
    print_message("reading the sequencer first: %d of 3000 cuts forked\n", forked);
    assert_true(forked > 0);
}

static int failing_read(void *ctx, size_t node, wal_lsn_t *lsn, wv_err_t *err)
{
    int *seq_reads = ctx;
    if (node == SEQ)
        (*seq_reads)++;
    *lsn = 1;
    return node == 3 ? wv_err_set(err, WV_EFAIL, "node n3 (participant): cannot connect") : 0;
}

static void test_failed_node_stops_the_cut(void **state)
{
    (void)state;
    struct coord_node nodes[NODES];
    struct coord_cluster c = sim_cluster(nodes);
    wal_lsn_t lsns[NODES];
    wv_err_t err = {0};
    int seq_reads = 0;
    assert_int_equal(coord_cut_read(&c, failing_read, &seq_reads, lsns, &err), WV_EFAIL);
    assert_non_null(strstr(err.msg, "node n3"));
    assert_int_equal(seq_reads, 0);
}

static void test_plan_pick(void **state)
{
    (void)state;
    struct manifest_summary b[4] = {0};
    const uint32_t tli[] = {1, 1, 2, 1};
    const wal_lsn_t stop[] = {0x100, 0x200, 0x250, 0x300};
    for (int i = 0; i < 4; i++) {
        snprintf(b[i].id, sizeof b[i].id, "b%d", i);
        b[i].timeline = tli[i];
        b[i].stop_lsn = stop[i];
    }
    assert_null(coord_plan_pick(b, 4, 1, 0xff));
    assert_string_equal(coord_plan_pick(b, 4, 1, 0x100)->id, "b0"); /* at the stop LSN: yes */
    assert_string_equal(coord_plan_pick(b, 4, 1, 0x2ff)->id, "b1");
    assert_string_equal(coord_plan_pick(b, 4, 1, 0x400)->id, "b3");
    assert_string_equal(coord_plan_pick(b, 4, 2, 0x400)->id, "b2"); /* only its timeline */
    assert_null(coord_plan_pick(b, 4, 3, 0x400));
}

static void test_watermark_round_trip(void **state)
{
    (void)state;
    struct coord_wm_node nodes[2] = {
        {"seq", COORD_SEQUENCER, 7312345678901234567ull, 1, 0x3000060},
        {"p1", COORD_PARTICIPANT, 42, 3, 0x100000028ull},
    };
    struct coord_watermark w = {.number = 7, .time_ms = 1796000000123, .nodes = nodes, .count = 2};
    json_t *doc = coord_watermark_json(&w);
    struct coord_watermark back;
    wv_err_t err = {0};
    assert_int_equal(coord_watermark_from_json(doc, 7, &back, &err), 0);
    assert_int_equal(back.count, 2);
    assert_int_equal(back.time_ms, w.time_ms);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(back.nodes[i].name, nodes[i].name);
        assert_int_equal(back.nodes[i].role, nodes[i].role);
        assert_int_equal(back.nodes[i].system_identifier, nodes[i].system_identifier);
        assert_int_equal(back.nodes[i].timeline, nodes[i].timeline);
        assert_int_equal(back.nodes[i].lsn, nodes[i].lsn);
    }
    coord_watermark_free(&back);
    assert_int_equal(coord_watermark_from_json(doc, 8, &back, &err), WV_ECORRUPT);
    json_decref(doc);
    char a[64], b[64];
    coord_watermark_key(9, a, sizeof a);
    coord_watermark_key(10, b, sizeof b);
    assert_string_equal(a, "cluster/watermarks/0000000009");
    assert_true(strcmp(a, b) < 0); /* listing order is number order */
}

static void test_not_older(void **state)
{
    (void)state;
    struct coord_wm_node o[2] = {{"s", COORD_SEQUENCER, 1, 1, 100},
                                 {"p", COORD_PARTICIPANT, 2, 1, 50}};
    struct coord_wm_node n[2] = {{"s", COORD_SEQUENCER, 1, 1, 100},
                                 {"p", COORD_PARTICIPANT, 2, 1, 49}};
    struct coord_watermark older = {.nodes = o, .count = 2}, newer = {.nodes = n, .count = 2};
    assert_false(coord_watermark_not_older(&newer, &older));
    n[1].lsn = 50;
    assert_true(coord_watermark_not_older(&newer, &older));
    n[1].timeline = 2, n[1].lsn = 10; /* a later timeline counts as newer */
    assert_true(coord_watermark_not_older(&newer, &older));
}

static void test_times(void **state)
{
    (void)state;
    int64_t ms;
    wv_err_t err = {0};
    assert_int_equal(coord_parse_time("2026-11-30 22:15:00", &ms, &err), 0);
    assert_int_equal(ms, 1796076900000);
    assert_int_equal(coord_parse_time("2026-11-30T22:15:00.5Z", &ms, &err), 0);
    assert_int_equal(ms, 1796076900500);
    assert_int_equal(coord_parse_time("2026-11-30 23:15:00.123+01:00", &ms, &err), 0);
    assert_int_equal(ms, 1796076900123);
    assert_int_equal(coord_parse_time("2026-11-30 22:15:00 UTC", &ms, &err), 0);
    assert_int_equal(coord_parse_time("yesterday", &ms, &err), WV_EUSAGE);
    assert_int_equal(coord_parse_time("2026-13-01 00:00:00", &ms, &err), WV_EUSAGE);
    char out[40];
    coord_format_time(1796076900123, out, sizeof out);
    assert_string_equal(out, "2026-11-30T22:15:00.123Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_cuts_never_fork),
        cmocka_unit_test(test_control_wrong_order_forks),
        cmocka_unit_test(test_failed_node_stops_the_cut),
        cmocka_unit_test(test_plan_pick),
        cmocka_unit_test(test_watermark_round_trip),
        cmocka_unit_test(test_not_older),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
