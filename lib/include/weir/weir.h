/*
 * libweir's umbrella header: error codes, the log callback, and the version,
 * plus every layer's header (Proto, Dialect, Pool, Engine). An embedder needs
 * only `#include <weir/weir.h>` and `pkg-config --cflags --libs weir`.
 *
 * Conventions across the library: objects are opaque and come in
 * weir_x_new()/weir_x_free() pairs (free accepts NULL); fallible calls return
 * 0 or a negative WEIR_E* code that weir_strerror() names; the library never
 * prints and never aborts, it reports through return codes and the log
 * callback of the object that did the work. There is no process-global
 * mutable state: two pools or engines in one process share nothing.
 */
#ifndef WEIR_WEIR_H
#define WEIR_WEIR_H

#include <weir/common.h>
#include <weir/proto.h>
#include <weir/dialect.h>
#include <weir/pool.h>
#include <weir/engine.h>

#endif
