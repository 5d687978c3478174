/* backend.c: what both backends share: the growable worker list. */
#include "backend.h"
#include "err.h"

#include <stdlib.h>

/* A view is not the list's to grow or free: forget it. */
static void drop_view(struct backend_list *l)
{
    if (!l->cap) {
        l->v = NULL;
        l->n = 0;
    }
}

int backend_list_push(struct backend_list *l, const struct backend_worker *w)
{
    drop_view(l);
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

int backend_list_reserve(struct backend_list *l, size_t n)
{
    drop_view(l);
    if (n < 16) n = 16; /* a pool's list is never smaller than push's first step */
    if (n <= l->cap && l->cap / 4 <= n) return 0;
    struct backend_worker *v = realloc(l->v, n * sizeof *v);
    if (!v) return JP_ENOMEM;
    l->v = v;
    l->cap = n;
    if (l->n > n) l->n = n;
    return 0;
}

void backend_list_view(struct backend_list *l, struct backend_worker *v, size_t n)
{
    if (l->cap) free(l->v);
    l->v = v;
    l->n = n;
    l->cap = 0;
}

void backend_list_free(struct backend_list *l)
{
    if (l->cap) free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
