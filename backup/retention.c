#include "backup/retention.h"

#include <string.h>

static bool is_full(const struct manifest_summary *b)
{
    return strcmp(b->type, "full") == 0;
}

/* Index of the n-th newest full backup (1 = newest), or -1 when there are fewer. */
static long nth_newest_full(const struct manifest_summary *b, size_t count, int n)
{
    for (size_t i = count; i-- > 0;)
        if (is_full(&b[i]) && --n == 0)
            return (long)i;
    return -1;
}

static void keep_from(bool *keep, size_t n, long first)
{
    for (size_t i = first < 0 ? 0 : (size_t)first; i < n; i++)
        keep[i] = true;
}

/* Everything that stopped inside the window, and the newest backup before it: restoring to
 * the window's first moment starts from that one. */
static void keep_window(const struct manifest_summary *b, size_t n, int64_t cutoff_ms, bool *keep)
{
    long before = -1;
    for (size_t i = 0; i < n; i++) {
        if (b[i].stop_time_ms >= cutoff_ms)
            keep[i] = true;
        else
            before = (long)i;
    }
    if (before >= 0)
        keep[before] = true;
}

int retention_decide(const struct manifest_summary *b, size_t n, const struct retention_policy *p,
                     bool *keep, wv_err_t *err)
{
    if (p->retain_full <= 0 && p->retain_days <= 0)
        return wv_err_set(err, WV_EUSAGE,
                          "expire needs a retention rule: --retain-full N and/or --retain-days D");
    memset(keep, 0, n * sizeof *keep);
    /* Never the last full backup, nor anything taken after it. */
    keep_from(keep, n, nth_newest_full(b, n, 1) >= 0 ? nth_newest_full(b, n, 1) : 0);
    if (p->retain_full > 0)
        keep_from(keep, n, nth_newest_full(b, n, p->retain_full));
    if (p->retain_days > 0)
        keep_window(b, n, p->now_ms - (int64_t)p->retain_days * 86400 * 1000, keep);
    return 0;
}
