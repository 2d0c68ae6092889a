// hiredis 0.14 (Debian 12), plus small helpers Swift cannot write itself: the event hooks are
// function-pointer fields of a C struct, and the commands are variadic.
#ifndef PLAYGROUND_CHIREDIS_H
#define PLAYGROUND_CHIREDIS_H
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

typedef void (*chiredis_hook)(void *);

/// Attaches an event library to an async context (hiredis calls the hooks when it wants to read
/// or write, and `cleanup` when the context goes away).
static inline void chiredis_attach(redisAsyncContext *ac, void *data, chiredis_hook addRead, chiredis_hook delRead,
                                   chiredis_hook addWrite, chiredis_hook delWrite, chiredis_hook cleanup) {
    ac->ev.data = data;
    ac->ev.addRead = addRead;
    ac->ev.delRead = delRead;
    ac->ev.addWrite = addWrite;
    ac->ev.delWrite = delWrite;
    ac->ev.cleanup = cleanup;
}

static inline int chiredis_fd(const redisAsyncContext *ac) { return ac->c.fd; }
static inline int chiredis_err(const redisAsyncContext *ac) { return ac->err; }
static inline const char *chiredis_errstr(const redisAsyncContext *ac) { return ac->errstr ? ac->errstr : ""; }
static inline void *chiredis_data(const redisAsyncContext *ac) { return ac->data; }
static inline void chiredis_set_data(redisAsyncContext *ac, void *data) { ac->data = data; }
#endif
