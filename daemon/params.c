/*
 * The session parameters weir carries from client to server: their names as
 * PostgreSQL spells them, whether the server reports them (ParameterStatus),
 * and a small value set per client and per server.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon.h"

static const struct {
    const char *name;
    int reported;
} tracked[TP_COUNT] = {
    [TP_CLIENT_ENCODING] = {"client_encoding", 1},
    [TP_DATESTYLE] = {"DateStyle", 1},
    [TP_TIMEZONE] = {"TimeZone", 1},
    [TP_INTERVALSTYLE] = {"IntervalStyle", 1},
    [TP_STANDARD_CONFORMING_STRINGS] = {"standard_conforming_strings", 1},
    [TP_APPLICATION_NAME] = {"application_name", 1},
    [TP_EXTRA_FLOAT_DIGITS] = {"extra_float_digits", 0},
};

const char *tracked_param_name(int i)
{
    return tracked[i].name;
}

int tracked_param_reported(int i)
{
    return tracked[i].reported;
}

int tracked_param_index(const char *name)
{
    for (int i = 0; i < TP_COUNT; i++)
        if (strcasecmp(name, tracked[i].name) == 0)
            return i;
    return -1;
}

void param_set_put(struct param_set *p, int i, const char *value)
{
    char *copy = value ? strdup(value) : NULL;

    if (value && copy == NULL)
        return; /* keep the old value rather than lose it */
    free(p->v[i]);
    p->v[i] = copy;
}

void param_set_clear(struct param_set *p)
{
    for (int i = 0; i < TP_COUNT; i++) {
        free(p->v[i]);
        p->v[i] = NULL;
    }
}
