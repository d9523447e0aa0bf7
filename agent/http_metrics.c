/* /metrics in Prometheus text format 0.0.4: every family with its HELP and TYPE lines, every
 * sample labelled with the node. Series that do not apply (the stream's, when the node
 * archives with archive_command; the last backup's, before any) are left out, not zero. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "agent/daemon_internal.h"
#include "agent/httpd.h"
#include "common/timeutil.h"

struct out {
    struct httpd_text t;
    const char *node;
};

/* label: "" or `,key="value"` after the node label. */
static void sample_u(struct out *o, const char *name, const char *label, uint64_t v)
{
    httpd_printf(&o->t, "%s{node=\"%s\"%s} %" PRIu64 "\n", name, o->node, label, v);
}

static void sample_f(struct out *o, const char *name, const char *label, double v)
{
    httpd_printf(&o->t, "%s{node=\"%s\"%s} %.3f\n", name, o->node, label, v);
}

static void gauge_u(struct out *o, const char *name, const char *help, uint64_t v)
{
    httpd_metric_family(&o->t, name, "gauge", help);
    sample_u(o, name, "", v);
}

static void gauge_f(struct out *o, const char *name, const char *help, double v)
{
    httpd_metric_family(&o->t, name, "gauge", help);
    sample_f(o, name, "", v);
}

static void counter_u(struct out *o, const char *name, const char *help, uint64_t v)
{
    httpd_metric_family(&o->t, name, "counter", help);
    sample_u(o, name, "", v);
}

static void stream_positions(struct out *o, struct agent *a)
{
    struct wal_stream_stats *s = &a->stats;
    uint64_t received = atomic_load(&s->received_lsn), archived = atomic_load(&s->archived_lsn);
    gauge_u(o, "walvault_streaming", "1 while the agent streams WAL from PostgreSQL",
            atomic_load(&s->streaming) ? 1 : 0);
    gauge_u(o, "walvault_synchronous",
            "1 when synchronous_standby_names names the agent (commits wait for the archive)",
            atomic_load(&s->synchronous) ? 1 : 0);
    gauge_u(o, "walvault_timeline", "Timeline of the WAL being streamed",
            atomic_load(&s->timeline));
    gauge_u(o, "walvault_received_lsn", "End of the WAL received from PostgreSQL (LSN as bytes)",
            received);
    gauge_u(o, "walvault_archived_lsn",
            "End of the WAL durable in the repository (LSN as bytes); reported to PostgreSQL as "
            "flushed",
            archived);
    gauge_u(o, "walvault_archive_lag_bytes", "WAL received but not yet durable in the repository",
            received > archived ? received - archived : 0);
    gauge_f(o, "walvault_archive_lag_seconds",
            "How long the oldest received WAL not yet in the repository has waited",
            lag_seconds(&a->lag, time_monotonic(), received, archived));
}

static void stream_stores(struct out *o, struct agent *a)
{
    struct wal_stream_stats *s = &a->stats;
    gauge_f(o, "walvault_last_fragment_timestamp_seconds",
            "When the newest fragment (new bytes of an unfinished segment) was stored, Unix "
            "time; 0: none yet",
            (double)atomic_load(&s->last_fragment_ms) / 1000.0);
    gauge_f(o, "walvault_last_segment_timestamp_seconds",
            "When the newest whole WAL segment was stored, Unix time; 0: none yet",
            (double)atomic_load(&s->last_segment_ms) / 1000.0);
    counter_u(o, "walvault_wal_fragments_stored_total", "WAL fragments stored",
              atomic_load(&s->fragments));
    counter_u(o, "walvault_wal_segments_stored_total", "Whole WAL segments stored",
              atomic_load(&s->segments));
    counter_u(o, "walvault_wal_stored_bytes_total",
              "WAL bytes (before compression) stored, fragments and segments",
              atomic_load(&s->bytes_stored));
    counter_u(o, "walvault_reconnects_total", "Replication connections made again after a drop",
              atomic_load(&s->reconnects));
}

static void store_errors(struct out *o, struct agent *a)
{
    uint64_t wal = a->opts.streaming ? atomic_load(&a->stats.store_errors) : 0;
    httpd_metric_family(
        &o->t, "walvault_store_errors_total", "counter",
        "Failed stores to the repository by what was stored (wal, lease); each is retried");
    if (a->opts.streaming)
        sample_u(o, "walvault_store_errors_total", ",kind=\"wal\"", wal);
    sample_u(o, "walvault_store_errors_total", ",kind=\"lease\"", a->lease_errors);
    counter_u(o, "walvault_store_retries_total",
              "Stores tried again after a failure (WAL stores and lease renewals)",
              wal + a->lease_errors);
}

static void last_backup(struct out *o, const struct backup_record *b)
{
    if (!b->known)
        return;
    gauge_f(o, "walvault_last_backup_timestamp_seconds",
            "When the newest backup (or failed attempt) ended, Unix time", (double)b->end_s);
    gauge_f(o, "walvault_last_backup_duration_seconds", "How long the newest backup took",
            b->duration_s);
    gauge_u(o, "walvault_last_backup_bytes",
            "Bytes the newest successful backup stored in the repository (sealed, new blocks "
            "only)",
            b->bytes);
    gauge_u(o, "walvault_last_backup_database_bytes",
            "Size of the database the newest successful backup covers", b->db_bytes);
    gauge_u(o, "walvault_last_backup_success", "1 when the newest backup attempt succeeded",
            b->success ? 1 : 0);
}

static void backups(struct out *o, struct agent *a)
{
    last_backup(o, &a->last);
    httpd_metric_family(&o->t, "walvault_backups_total", "counter",
                        "Scheduled backups run by this agent");
    sample_u(o, "walvault_backups_total", ",result=\"success\"", a->backups_ok);
    sample_u(o, "walvault_backups_total", ",result=\"failure\"", a->backups_failed);
    counter_u(o, "walvault_retention_failures_total", "Retention runs after a backup that failed",
              a->expire_failed);
    gauge_u(o, "walvault_backup_running", "1 while a scheduled backup runs",
            a->backup_running ? 1 : 0);
    int64_t full_at, incremental_at;
    agent_backup_due(a, &full_at, &incremental_at);
    if (full_at == SCHEDULE_NEVER && incremental_at == SCHEDULE_NEVER)
        return;
    httpd_metric_family(
        &o->t, "walvault_next_backup_timestamp_seconds", "gauge",
        "When the schedule starts the next backup of each type, Unix time (0: now)");
    if (full_at != SCHEDULE_NEVER)
        sample_f(o, "walvault_next_backup_timestamp_seconds", ",type=\"full\"", (double)full_at);
    if (incremental_at != SCHEDULE_NEVER)
        sample_f(o, "walvault_next_backup_timestamp_seconds", ",type=\"incremental\"",
                 (double)incremental_at);
}

int agent_metrics_render(struct agent *a, char *out, size_t len)
{
    struct out o = {.t = {.p = out, .cap = len}, .node = repo_node(a->repo)};
    out[0] = '\0';
    if (a->opts.streaming) {
        stream_positions(&o, a);
        stream_stores(&o, a);
    }
    store_errors(&o, a);
    backups(&o, a);
    gauge_u(&o, "walvault_lease_valid", "1 while this agent holds a renewed lease on its node",
            a->lease_valid ? 1 : 0);
    return (int)o.t.n;
}
