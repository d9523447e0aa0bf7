#ifndef WALVAULT_COMMON_TIMEUTIL_H
#define WALVAULT_COMMON_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Seconds since the epoch with sub-second precision, from the monotonic clock. */
double time_monotonic(void);
/* Formats an epoch time as "YYYY-MM-DD HH:MM:SS+00" (PostgreSQL accepts it). */
void time_format_utc(time_t t, char *out, size_t len);
/* Backup ids sort by time: YYYYMMDDTHHMMSSZ. */
void time_format_id(time_t t, char *out, size_t len);
void time_sleep_ms(long ms);

#endif
