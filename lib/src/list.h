/*
 * A circular, intrusive doubly-linked list with a sentinel head: O(1) insert
 * and removal without allocation, for the pool's idle connections, waiters
 * and bookkeeping. Internal only.
 */
#ifndef WEIR_LIST_H
#define WEIR_LIST_H

#include <stddef.h>

struct weir_link {
    struct weir_link *prev, *next;
};

#define weir_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void weir_list_init(struct weir_link *head)
{
    head->prev = head->next = head;
}

static inline int weir_list_empty(const struct weir_link *head)
{
    return head->next == head;
}

static inline void weir_list_insert_after(struct weir_link *pos, struct weir_link *l)
{
    l->prev = pos;
    l->next = pos->next;
    pos->next->prev = l;
    pos->next = l;
}

/* Push at the front / back. */
static inline void weir_list_push_front(struct weir_link *head, struct weir_link *l)
{
    weir_list_insert_after(head, l);
}

static inline void weir_list_push_back(struct weir_link *head, struct weir_link *l)
{
    weir_list_insert_after(head->prev, l);
}

static inline void weir_list_remove(struct weir_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

#endif
