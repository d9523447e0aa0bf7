/* Progress on a terminal (bytes done and total, rate, time left), redrawn at most a few
 * times a second; nothing at all when stderr is not a terminal, so logs stay clean. */
#ifndef WALVAULT_AGENT_PROGRESS_H
#define WALVAULT_AGENT_PROGRESS_H

#include "backup/backup.h"

struct progress_display;

struct progress_display *progress_display_new(void);
struct progress_sink progress_display_sink(struct progress_display *d);
/* Clears the line; safe with NULL. */
void progress_display_free(struct progress_display *d);

#endif
