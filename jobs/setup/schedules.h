/*
 * schedules.h - factory-setup's pipeline schedules: one per job, routed by
 * the schedule variable FACTORY_JOB=<job> (templates/factory.yml runs a job
 * only when FACTORY_JOB names it).
 *
 * Settings (config.h precedence: flag > FACTORY_* > .factory.yml > default):
 *   setup.schedules      on/off (--schedules; default off for the binary,
 *                        on in the component through its `schedules` input)
 *   jobs                 the enabled jobs, comma-separated (FACTORY_JOBS, set
 *                        by the component); default all
 *   schedules.<job>      the job's cron (five fields); "off" (or false,
 *                        none, no) for no schedule. Defaults (the table in
 *                        schedules.c): triage hourly, implement every 30
 *                        minutes, pipeline every 15, release daily at 06:00,
 *                        watch every 10 minutes; setup and intake have none
 *                        unless given one.
 *   schedules.timezone   cron_timezone, default "UTC"
 *   schedules.ref        the ref, default the project's default branch
 *
 * A schedule is the Factory's when its description is "factory: <job>" and
 * its owner is the token's user. A rerun finds them (GET, every page) and
 * repairs drift (cron, timezone, ref, active, the FACTORY_JOB variable) with
 * PUT instead of duplicating; a job no longer wanted (disabled, or its cron
 * "off") has its schedule deactivated, never deleted. A schedule of that
 * description owned by another user, and every other schedule, is left as
 * it is. Dry run: reads only, every write reported.
 */
#ifndef FACTORY_SETUP_SCHEDULES_H
#define FACTORY_SETUP_SCHEDULES_H

#include <cjson/cJSON.h>

#include "job.h"

/* Check the schedule settings without sending anything. 0, or
 * FACTORY_ECONFIG naming the setting and where its bad value came from. */
int schedules_check(job_ctx *ctx);

/*
 * Create or repair the schedules in the project ctx->gl points at; `project`
 * is its GET /projects/:id answer (for the default branch; may be NULL).
 * Actions go to ctx->rep (schedule.create, schedule.update,
 * schedule.deactivate, schedule.variable.create, schedule.variable.update),
 * the schedules to report data "schedules" and a table in report.md.
 * Returns 0 or an error; a 403 is FACTORY_EAUTH with a message that says
 * which permission is missing.
 */
int schedules_setup(job_ctx *ctx, const cJSON *project);

#endif
