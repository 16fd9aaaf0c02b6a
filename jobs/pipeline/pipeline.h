/*
 * pipeline.h - what the files of factory-pipeline share.
 *
 * classify.c  the offline classifier command (a job log -> one JSON object)
 * repair.c    repair mode: failed pipelines -> retries, fix merge requests, issues
 * ledger.c    the failure ledger kept in GitLab (an issue holding JSON)
 * optimise.c  optimise mode: CI speed, dependencies, clean-up
 */
#ifndef FACTORY_PIPELINE_H
#define FACTORY_PIPELINE_H

#include "cilog.h"
#include "job.h"

/* The rule set from the settings: pipeline.rules_file (a YAML list of
 * rules; when unset, .factory/ci-rules.yml if it exists) before the
 * built-in rules. */
int pipeline_load_rules(cilog_rules **out, job_ctx *ctx);

/* factory-pipeline classify [FILE] */
int pipeline_cmd_classify(job_ctx *ctx);
/* factory-pipeline rules: the built-in rules, as YAML, on standard output */
int pipeline_cmd_rules(job_ctx *ctx);

#endif
