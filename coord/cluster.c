/* The cluster's nodes, from the [node NAME] sections of the config file the agent reads its
 * options from (the agent skips those sections; this reads only them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "coord/coord.h"

struct parse_ctx {
    struct coord_cluster *c;
    const char *origin;
    wv_err_t *err;
    int rc;
    bool has_role[COORD_NODES_MAX]; /* by node index */
};

const char *coord_role_name(enum coord_role role)
{
    switch (role) {
    case COORD_SEQUENCER:
        return "sequencer";
    case COORD_MEDIATOR:
        return "mediator";
    case COORD_PARTICIPANT:
        return "participant";
    }
    return "?";
}

static int role_parse(const char *s, enum coord_role *out)
{
    for (int r = COORD_SEQUENCER; r <= COORD_PARTICIPANT; r++)
        if (strcmp(s, coord_role_name((enum coord_role)r)) == 0) {
            *out = (enum coord_role)r;
            return 0;
        }
    return -1;
}

const struct coord_node *coord_cluster_find(const struct coord_cluster *c, const char *name)
{
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->nodes[i].name, name) == 0)
            return &c->nodes[i];
    return NULL;
}

/* "node NAME" -> NAME; NULL for any other section. */
static const char *node_section(const char *section)
{
    if (strncmp(section, "node", 4) != 0 || (section[4] != ' ' && section[4] != '\t'))
        return NULL;
    section += 4;
    while (*section == ' ' || *section == '\t')
        section++;
    return section;
}

/* A section's keys arrive one by one; the role is unknown until its line, so a node is
 * created with its first key and checked once the whole file is read. */
static struct coord_node *node_get(struct parse_ctx *p, const char *name)
{
    struct coord_cluster *c = p->c;
    struct coord_node *n = (struct coord_node *)coord_cluster_find(c, name);
    if (n)
        return n;
    if (repo_check_node_name(name, p->err) != 0) {
        wv_err_prefix(p->err, "%s: section [node %s]", p->origin, name);
        return NULL;
    }
    if (c->count == COORD_NODES_MAX) {
        wv_err_set(p->err, WV_EUSAGE, "%s: more than %d nodes", p->origin, COORD_NODES_MAX);
        return NULL;
    }
    struct coord_node *nodes = realloc(c->nodes, (c->count + 1) * sizeof *nodes);
    if (!nodes) {
        wv_err_set(p->err, WV_EFAIL, "out of memory");
        return NULL;
    }
    c->nodes = nodes;
    n = &nodes[c->count++];
    *n = (struct coord_node){.role = COORD_PARTICIPANT};
    snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

static int set_key(struct parse_ctx *p, struct coord_node *n, const char *key, const char *value)
{
    if (strcmp(key, "role") == 0) {
        p->has_role[n - p->c->nodes] = true;
        if (role_parse(value, &n->role) != 0)
            return wv_err_set(p->err, WV_EUSAGE,
                              "%s: node %s: unknown role \"%s\" (use sequencer, mediator or "
                              "participant)",
                              p->origin, n->name, value);
    } else if (strcmp(key, "archive") == 0) {
        if (strcmp(value, "command") == 0)
            n->archive = COORD_ARCHIVE_COMMAND;
        else if (strcmp(value, "stream") == 0)
            n->archive = COORD_ARCHIVE_STREAM;
        else
            return wv_err_set(p->err, WV_EUSAGE,
                              "%s: node %s: archive wants command or stream, got \"%s\"", p->origin,
                              n->name, value);
    } else if (strcmp(key, "pg") == 0 || strcmp(key, "pgdata") == 0) {
        char **slot = key[2] == '\0' ? &n->pg : &n->pgdata;
        free(*slot);
        if (!(*slot = strdup(value)))
            return wv_err_set(p->err, WV_EFAIL, "out of memory");
    } else {
        return wv_err_set(p->err, WV_EUSAGE,
                          "%s: node %s: unknown key \"%s\" (known: role, pg, archive, pgdata)",
                          p->origin, n->name, key);
    }
    return 0;
}

static int on_ini(void *user, const char *section, const char *key, const char *value)
{
    struct parse_ctx *p = user;
    const char *name = node_section(section);
    if (!name || p->rc)
        return 1;
    struct coord_node *n = node_get(p, name);
    p->rc = n ? set_key(p, n, key, value) : p->err->code;
    return p->rc == 0;
}

static int check_cluster(const struct parse_ctx *p)
{
    const struct coord_cluster *c = p->c;
    size_t sequencers = 0;
    if (c->count == 0)
        return wv_err_set(p->err, WV_EUSAGE,
                          "%s: no [node NAME] sections: the coordinator needs the cluster's "
                          "nodes, each with role and pg",
                          p->origin);
    for (size_t i = 0; i < c->count; i++) {
        const struct coord_node *n = &c->nodes[i];
        if (!p->has_role[i])
            return wv_err_set(p->err, WV_EUSAGE,
                              "%s: node %s has no role (sequencer, mediator or participant)",
                              p->origin, n->name);
        if (!n->pg || !n->pg[0])
            return wv_err_set(p->err, WV_EUSAGE,
                              "%s: node %s has no pg (its libpq connection string)", p->origin,
                              n->name);
        if (n->role == COORD_SEQUENCER) {
            p->c->sequencer = i;
            sequencers++;
        }
    }
    if (sequencers != 1)
        return wv_err_set(p->err, WV_EUSAGE,
                          "%s: the cluster needs exactly one sequencer node, found %zu", p->origin,
                          sequencers);
    return 0;
}

static int finish(struct parse_ctx *p, int ini_rc)
{
    int rc = p->rc;
    if (rc == 0 && ini_rc == -1)
        rc = wv_err_set(p->err, WV_EUSAGE, "cannot open config file %s", p->origin);
    else if (rc == 0 && ini_rc != 0)
        rc = wv_err_set(p->err, WV_EUSAGE, "%s: syntax error on line %d", p->origin, ini_rc);
    if (rc == 0)
        rc = check_cluster(p);
    if (rc)
        coord_cluster_free(p->c);
    return rc;
}

int coord_cluster_load(const char *path, struct coord_cluster *out, wv_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!path)
        return wv_err_set(err, WV_EUSAGE,
                          "the coordinator reads the cluster's nodes from the config file: give "
                          "--config FILE with one [node NAME] section per node");
    struct parse_ctx p = {.c = out, .origin = path, .err = err};
    return finish(&p, ini_parse(path, on_ini, &p));
}

int coord_cluster_parse(const char *text, const char *origin, struct coord_cluster *out,
                        wv_err_t *err)
{
    memset(out, 0, sizeof *out);
    struct parse_ctx p = {.c = out, .origin = origin, .err = err};
    return finish(&p, ini_parse_string(text, on_ini, &p));
}

void coord_cluster_free(struct coord_cluster *c)
{
    for (size_t i = 0; i < c->count; i++) {
        free(c->nodes[i].pg);
        free(c->nodes[i].pgdata);
    }
    free(c->nodes);
    memset(c, 0, sizeof *c);
}
