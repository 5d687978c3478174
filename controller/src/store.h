/* store.h: objects of one kind keyed by name, and the writes expected to show up in them. */
#ifndef JP_STORE_H
#define JP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A store holds fixed-size records (a compact struct per kind, e.g. struct kube_job). Every
 * record begins with its key, a NUL-terminated string: the object's name, or namespace/name when
 * the kind is watched across namespaces. Each record carries the resourceVersion it was read at
 * (0 when unknown) and the source (reflector) that listed it.
 *
 * Expectations are ControllerExpectations: a create the controller sent and has not yet seen
 * listed or watched counts as present (its placeholder record), a delete it sent and has not
 * yet seen counts as gone. Both survive a relist, and end when the store observes the object
 * (or its absence), or after a timeout measured on a clock the caller passes: the time the
 * store was last known to be current, so that a stale store never forgets a write.
 *
 * Not thread-safe: the owner (watch.c) serialises every call. */
struct store;

/* Records of rec_size bytes whose first key_size bytes hold NUL-terminated strings, the key
 * first (a kind may pack more strings after it; 2 <= key_size <= rec_size and <=
 * STORE_STRS_MAX). The store keeps that region only up to its last string's NUL, not whole;
 * records handed out are whole again, the region's bytes after the last string zero. 0,
 * JP_EINVAL or JP_ENOMEM; *out NULL on failure. */
#define STORE_STRS_MAX 1024
int store_new(size_t rec_size, size_t key_size, struct store **out);
/* Frees every record and expectation. NULL is fine. */
void store_free(struct store *s);

/* A write's own answer (the object the server returned): insert or replace, unless the store
 * holds a newer resourceVersion of it. src is the source whose relists may later drop it. Not
 * an observation: expectations stay. 0 or JP_ENOMEM. */
int store_put(struct store *s, const void *rec, uint64_t rv, int src);

/* From a watch event: insert or replace (unless newer), or delete; fulfils the expectations of
 * key. 0 or JP_ENOMEM. */
int store_observe(struct store *s, const void *rec, uint64_t rv, int src);
void store_observe_deleted(struct store *s, const char *key);

/* A relist of source src, merged instead of swapped in: store_list_begin, store_list_item for
 * each listed object (inserted or replaced unless newer, fulfilling its create expectation),
 * then store_list_end with the list's resourceVersion. Records of src that were not listed are
 * dropped unless they are newer than the list (written after it was taken): those the watch
 * will confirm. A delete expectation whose object was not listed is fulfilled. A relist that
 * fails half way just never calls store_list_end. Returns the number of records dropped. */
void store_list_begin(struct store *s, int src);
int store_list_item(struct store *s, const void *rec, uint64_t rv, int src);
size_t store_list_end(struct store *s, int src, uint64_t list_rv);

/* The record of key, or NULL; valid until the next call that changes s. Ignores expectations. */
const void *store_get(const struct store *s, const char *key);
/* Records held (not counting placeholders). */
size_t store_count(const struct store *s);

/* Call fn for every record as the controller should see it: expected deletes left out,
 * expected creates not yet observed added as their placeholders. Stops early when fn returns
 * non-zero, and returns that value. rec is valid during the call only. */
typedef int (*store_visit_fn)(void *ud, const void *rec);
int store_visit(const struct store *s, store_visit_fn fn, void *ud);

/* Expectations. now_ms and current_ms are monotonic. */
/* The controller is about to create the object placeholder describes (its key included). */
int store_expect_create(struct store *s, const void *placeholder, int64_t now_ms);
/* The controller deleted key (the server said so, or 404). */
int store_expect_delete(struct store *s, const char *key, int64_t now_ms);
/* The create of key certainly did not happen (the server refused it). */
void store_expect_forget(struct store *s, const char *key);
/* Drop expectations made more than timeout_ms before current_ms (when the store was last known
 * to be current): a write not seen by then never happened (or its object is long gone). Returns
 * how many were dropped. */
size_t store_expect_expire(struct store *s, int64_t current_ms, int64_t timeout_ms);
/* Expectations held: creates and deletes not yet observed. */
void store_expect_count(const struct store *s, size_t *creates, size_t *deletes);

/* A resourceVersion as the store compares them: the decimal number etcd gives, 0 when it is
 * not one (such records are always replaced). */
uint64_t store_rv(const char *rv);

#endif
