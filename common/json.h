/*
 * json.h - read one member of a cJSON object, by exact key, without
 * surprises: a missing member, a member of another type or a NULL object
 * give the fallback, never a crash.
 *
 * The strings returned point into the object: they live as long as it does
 * and belong to it (do not free them).
 */
#ifndef FACTORY_JSON_H
#define FACTORY_JSON_H

#include <cjson/cJSON.h>

/* The string member `key` of `obj`, or NULL when there is none. */
const char *json_str(const cJSON *obj, const char *key);

/*
 * The number member `key` of `obj` as a long (fraction dropped), or 0 when
 * there is none. A number outside long's range is clamped to LONG_MIN or
 * LONG_MAX (NaN gives 0), so a hostile document cannot cause an undefined
 * conversion.
 */
long json_long(const cJSON *obj, const char *key);

#endif
