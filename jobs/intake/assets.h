/*
 * assets.h - the files intake serves, built into the binary.
 *
 * assets.c is generated from jobs/intake/widget/ by
 * jobs/intake/widget/embed.py (run it after editing a file there, and
 * commit both); the integration tests check that the served bytes match
 * the files, so a stale assets.c fails the suite.
 */
#ifndef FACTORY_INTAKE_ASSETS_H
#define FACTORY_INTAKE_ASSETS_H

#include <stddef.h>

typedef struct {
	const char *path;          /* "/widget.js" */
	const char *content_type;
	const char *etag;          /* strong, quoted: "\"<sha256 prefix>\"" */
	const char *csp;           /* Content-Security-Policy to send with it, or NULL */
	const unsigned char *data;
	size_t len;
} intake_asset;

/* The asset served at `path`, or NULL. */
const intake_asset *intake_asset_find(const char *path);

#endif
