#ifndef WALVAULT_REPO_INTERNAL_H
#define WALVAULT_REPO_INTERNAL_H

#include "repo/repo.h"

struct repo {
    storage_t *st;
    seal_keyring_t *keys;
    char *node;
};

#endif
