/* backend.c: what both backends share: the growable worker list. */
#include "backend.h"
#include "err.h"

#include <stdlib.h>

int backend_list_push(struct backend_list *l, const struct backend_worker *w)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct backend_worker *v = realloc(l->v, cap * sizeof *v);
        if (!v) return JP_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *w;
    return 0;
}

void backend_list_free(struct backend_list *l)
{
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
