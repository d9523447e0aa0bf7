/* PostgreSQL data page checksums (FNV-1a based, 32 parallel lanes, as storage/checksum_impl.h
 * defines the algorithm), checked while a base backup reads relation files. */
#ifndef WALVAULT_BACKUP_CHECKSUM_H
#define WALVAULT_BACKUP_CHECKSUM_H

#include <stdbool.h>
#include <stdint.h>

#define PG_PAGE_SIZE 8192
#define PG_RELSEG_BLOCKS 131072u /* blocks per 1 GiB relation segment file */

/* The checksum PostgreSQL stores in pd_checksum for this page at absolute block number blkno
 * (segment number * PG_RELSEG_BLOCKS + block within the segment). */
uint16_t pg_page_checksum(const uint8_t page[PG_PAGE_SIZE], uint32_t blkno);
/* The page LSN (pd_lsn) stored in the page header. */
uint64_t pg_page_lsn(const uint8_t page[PG_PAGE_SIZE]);
/* True when the page is a valid new (all-zero) page or its stored checksum matches. */
bool pg_page_checksum_ok(const uint8_t page[PG_PAGE_SIZE], uint32_t blkno);

#endif
