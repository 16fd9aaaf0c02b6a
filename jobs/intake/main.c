/*
 * factory-intake - feedback from customers, people and agents into GitLab
 * issues.
 *
 *   factory-intake serve [--listen HOST:PORT]   the feedback server and widget;
 *                                               delivers the spool to GitLab
 *   factory-intake deliver                      deliver what waits in the spool, then exit
 *   factory-intake create --kind K --title T --body B [--email E]
 *                                               file one issue now (or FEEDBACK_KIND,
 *                                               FEEDBACK_TITLE, FEEDBACK_BODY, FEEDBACK_EMAIL)
 *
 * Submissions are stored in the spool (FACTORY_INTAKE_SPOOL) before they are
 * acknowledged, and delivered in order, exactly once (deliver.h).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver.h"
#include "error.h"
#include "feedback.h"
#include "job.h"
#include "log.h"
#include "server.h"
#include "spool.h"

static const job_option options[] = {
	{"listen", "intake.listen", 1, "HOST:PORT  where serve listens (default 127.0.0.1:8080; port 0 picks one)"},
	{"spool", "intake.spool", 1, "DIR  the durable spool (FACTORY_INTAKE_SPOOL)"},
	{"allowed-origins", "intake.allowed_origins", 1, "LIST  origins whose pages may post, comma-separated (* any)"},
	{"max-body", "intake.max_body", 1, "BYTES  largest request body (default 65536)"},
	{"rate-limit", "intake.rate_limit", 1, "N  submissions per client per minute (default 10; 0 no limit)"},
	{"rate-burst", "intake.rate_burst", 1, "N  submissions a client may send at once (default: the rate)"},
	{"min-fill-ms", "intake.min_fill_ms", 1, "MS  fastest human fill time of the widget (default 3000)"},
	{"dedup-window", "intake.dedup_window_s", 1, "SECONDS  fold identical submissions within (default 600)"},
	{"timeout", "intake.timeout_s", 1, "SECONDS  idle connection timeout (default 10)"},
	{"threads", "intake.threads", 1, "N  server threads (default: one per core; a request waiting for the disk holds none)"},
	{"max-conns-per-client", "intake.max_conns_per_client", 1, "N  open connections per client (default 32)"},
	{"trust-proxy", "intake.trust_proxy", 0, "take the client address from X-Forwarded-For"},
	{"no-deliver", "intake.no_deliver", 0, "serve without delivering (the spool keeps everything)"},
	{"retry-max-ms", "intake.retry_max_ms", 1, "MS  longest wait between delivery tries (default 60000)"},
	{"kind", "create.kind", 1, "KIND  create: bug, feature, support or feedback (FEEDBACK_KIND)"},
	{"title", "create.title", 1, "TEXT  create: the title (FEEDBACK_TITLE)"},
	{"body", "create.body", 1, "TEXT  create: the description (FEEDBACK_BODY)"},
	{"body-file", "create.body_file", 1, "FILE  create: the description from a file, - for stdin"},
	{"email", "create.email", 1, "ADDRESS  create: the reporter's email, kept internal (FEEDBACK_EMAIL)"},
	{"source", "create.source", 1, "SOURCE  create: customer, internal or factory (default internal)"},
	{NULL, NULL, 0, NULL},
};

static const job_spec spec = {
	"intake",
	"Feedback from customers, people and agents into GitLab issues: the feedback server, its widget, and create.",
	"commands:\n"
	"  serve     the feedback server (POST /v1/feedback, /widget.js, /feedback, /healthz);\n"
	"            submissions are spooled to disk, then delivered to GitLab in order, exactly once\n"
	"  deliver   deliver what waits in the spool, then exit (3 if GitLab stays unavailable)\n"
	"  create    file one issue now from flags or FEEDBACK_KIND/TITLE/BODY/EMAIL\n",
	options,
};

static int get_long(long *out, job_ctx *ctx, const char *key, long def, long min, long max)
{
	return fconfig_get_long(out, ctx->cfg, key, def, min, max);
}

/* Delivered segments kept for duplicate folding: 8 x 8 MiB, some 180,000
 * submissions. */
#define KEEP_SEGMENTS 8

static int open_spool(spool **out, job_ctx *ctx, const char **dir_out)
{
	const char *dir = fconfig_get_str(ctx->cfg, "intake.spool", NULL);
	long window_s;
	int error;

	if (!dir || !*dir)
		return ferror_set(FACTORY_ECONFIG, "missing setting intake.spool (set FACTORY_INTAKE_SPOOL or --spool DIR)");
	*dir_out = dir;
	if ((error = get_long(&window_s, ctx, "intake.dedup_window_s", 600, 0, 86400)) < 0 ||
	    (error = spool_open(out, dir)) < 0)
		return error;
	/* Delivered submissions stay on disk for the folding window (at most
	 * KEEP_SEGMENTS segments), so serve can fold copies across a restart. */
	spool_keep_delivered(*out, window_s * 1000, KEEP_SEGMENTS);
	return 0;
}

static int delivery_status(cJSON *parent, void *d)
{
	return deliverer_status_json(parent, d);
}

static int deliver_options_of(deliver_options *o, job_ctx *ctx, const char *dir)
{
	long max;
	int error;

	memset(o, 0, sizeof(*o));
	o->spool_dir = dir;
	if ((error = get_long(&max, ctx, "intake.retry_max_ms", 60000, 10, 3600000)) < 0)
		return error;
	o->retry_min_ms = max < 1000 ? max : 1000;
	o->retry_max_ms = max;
	/* A create that got no answer may run in GitLab for as long as we wait for one. */
	return get_long(&o->settle_ms, ctx, "http.timeout_ms", 60000, 100, 3600000);
}

static void record_delivery(job_ctx *ctx, deliverer *d)
{
	deliver_stats st;

	deliverer_get_stats(&st, d);
	report_counter_set(ctx->rep, "delivered", st.delivered);
	report_counter_set(ctx->rep, "found_after_retry", st.found);
	report_counter_set(ctx->rep, "reporter_notes", st.notes);
	report_counter_set(ctx->rep, "delivery_failures", st.failures);
	report_counter_set(ctx->rep, "dead", st.dead);
}

static int serve(job_ctx *ctx)
{
	intake_server_options so;
	intake_server *srv = NULL;
	deliver_options dopts;
	deliverer *dl = NULL;
	spool *sp = NULL;
	sigset_t sigs;
	const char *dir = NULL;
	long v;
	int no_deliver = 0, sig = 0, error;

	intake_server_options_init(&so);
	so.listen = fconfig_get_str(ctx->cfg, "intake.listen", so.listen);
	so.allowed_origins = fconfig_get_str(ctx->cfg, "intake.allowed_origins", "");
	if ((error = get_long(&v, ctx, "intake.max_body", (long)so.max_body, 1024, 16L << 20)) < 0)
		goto cleanup;
	so.max_body = (size_t)v;
	if ((error = get_long(&so.rate_per_minute, ctx, "intake.rate_limit", so.rate_per_minute, 0, 100000000)) < 0 ||
	    (error = get_long(&so.rate_burst, ctx, "intake.rate_burst", 0, 0, 100000000)) < 0 ||
	    (error = get_long(&so.min_fill_ms, ctx, "intake.min_fill_ms", so.min_fill_ms, 0, 600000)) < 0 ||
	    (error = get_long(&so.dedup_window_s, ctx, "intake.dedup_window_s", so.dedup_window_s, 0, 86400)) < 0 ||
	    (error = get_long(&so.timeout_s, ctx, "intake.timeout_s", so.timeout_s, 1, 3600)) < 0 ||
	    (error = get_long(&v, ctx, "intake.threads", so.threads, 1, 256)) < 0)
		goto cleanup;
	so.threads = (int)v;
	if ((error = get_long(&v, ctx, "intake.max_conns_per_client", so.max_conns_per_client, 0, 100000)) < 0 ||
	    (error = fconfig_get_bool(&so.trust_proxy, ctx->cfg, "intake.trust_proxy", 0)) < 0 ||
	    (error = fconfig_get_bool(&no_deliver, ctx->cfg, "intake.no_deliver", 0)) < 0)
		goto cleanup;
	so.max_conns_per_client = (int)v;
	if (ctx->dry_run && !no_deliver) {
		log_info("dry run: submissions are spooled but not delivered");
		no_deliver = 1;
	}

	/* Signals are taken by this thread alone: block them before any thread starts. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((error = open_spool(&sp, ctx, &dir)) < 0)
		goto cleanup;
	{
		spool_stats st;
		spool_get_stats(&st, sp);
		log_info("spool %s: %llu submission%s waiting", dir, (unsigned long long)st.pending,
			 st.pending == 1 ? "" : "s");
	}
	if (!no_deliver) {
		if ((error = job_connect(ctx)) < 0 || (error = deliver_options_of(&dopts, ctx, dir)) < 0 ||
		    (error = deliverer_new(&dl, ctx->gl, sp, &dopts)) < 0 || (error = deliverer_start(dl)) < 0)
			goto cleanup;
		so.status_fn = delivery_status;
		so.status_ctx = dl;
	}
	if ((error = intake_server_start(&srv, &so, sp)) < 0)
		goto cleanup;
	log_info("listening on http://%s (spool %s, delivery %s)", intake_server_address(srv), dir,
		 no_deliver ? "off" : "on");
	printf("listening on http://%s\n", intake_server_address(srv));
	fflush(stdout);

	while (sigwait(&sigs, &sig) != 0)
		;
	log_info("signal %d: stopping (finishing requests in flight)", sig);
	error = 0;
cleanup:
	if (srv) {
		intake_server_stats st;
		intake_server_stop(srv);
		intake_server_get_stats(&st, srv);
		intake_server_free(srv);
		report_counter_set(ctx->rep, "accepted", st.accepted);
		report_counter_set(ctx->rep, "duplicates", st.duplicates);
		report_counter_set(ctx->rep, "rejected", st.rejected);
		report_counter_set(ctx->rep, "rate_limited", st.rate_limited);
		report_counter_set(ctx->rep, "store_failed", st.store_failed);
		report_summary(ctx->rep, "served: %ld accepted, %ld folded as duplicates, %ld refused", st.accepted,
			       st.duplicates, st.rejected);
	}
	if (dl) {
		deliverer_stop(dl);
		record_delivery(ctx, dl);
		deliverer_free(dl);
	}
	spool_close(sp);
	return error;
}

static int deliver(job_ctx *ctx)
{
	deliver_options dopts;
	deliverer *dl = NULL;
	spool *sp = NULL;
	spool_stats st;
	deliver_stats ds;
	const char *dir = NULL;
	int error;

	if ((error = open_spool(&sp, ctx, &dir)) < 0)
		goto cleanup;
	spool_get_stats(&st, sp);
	if (ctx->dry_run) {
		log_info("dry run: %llu submission%s waiting in %s; nothing delivered", (unsigned long long)st.pending,
			 st.pending == 1 ? "" : "s", dir);
		report_summary(ctx->rep, "dry run: %llu submissions waiting", (unsigned long long)st.pending);
		error = 0;
		goto cleanup;
	}
	if ((error = job_connect(ctx)) < 0 || (error = deliver_options_of(&dopts, ctx, dir)) < 0 ||
	    (error = deliverer_new(&dl, ctx->gl, sp, &dopts)) < 0)
		goto cleanup;
	error = deliverer_drain(dl, 5);
	record_delivery(ctx, dl);
	deliverer_get_stats(&ds, dl);
	spool_get_stats(&st, sp);
	report_summary(ctx->rep, "%ld submission%s delivered, %llu waiting", ds.delivered, ds.delivered == 1 ? "" : "s",
		       (unsigned long long)st.pending);
	log_info("%ld delivered, %llu still waiting", ds.delivered, (unsigned long long)st.pending);
cleanup:
	deliverer_free(dl);
	spool_close(sp);
	return error;
}

/* A create setting: the flag, else the FEEDBACK_* variable. */
static const char *create_arg(job_ctx *ctx, const char *key, const char *env)
{
	const char *v = fconfig_get(ctx->cfg, key, NULL);

	if (v && *v)
		return v;
	v = getenv(env);
	return v && *v ? v : NULL;
}

static int read_body_file(fbuf *out, const char *path)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	char chunk[8192];
	size_t n;
	int error = 0;

	if (!f)
		return ferror_set(FACTORY_ECONFIG, "cannot read --body-file %s: %s", path, strerror(errno));
	while (!error && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		error = fbuf_put(out, chunk, n);
	if (!error && ferror(f))
		error = ferror_set(FACTORY_ECONFIG, "cannot read --body-file %s: %s", path, strerror(errno));
	if (error == FACTORY_ETOOBIG)
		error = ferror_set(FACTORY_ECONFIG, "--body-file %s is larger than %zu bytes", path, out->max);
	if (f != stdin)
		fclose(f);
	return error;
}

static int create(job_ctx *ctx)
{
	feedback f;
	feedback_problem pr;
	cJSON *fields = NULL, *issue = NULL, *note = NULL;
	fbuf body, msg, text;
	const char *body_file = fconfig_get(ctx->cfg, "create.body_file", NULL);
	const char *source = create_arg(ctx, "create.source", "FEEDBACK_SOURCE");
	const cJSON *iid, *url;
	int error;

	feedback_init(&f);
	fbuf_init(&body, 1 << 20);
	fbuf_init(&msg, 4096);
	fbuf_init(&text, 4096);
	if (body_file && (error = read_body_file(&body, body_file)) < 0)
		goto cleanup;
	if (source && strcmp(source, "customer") != 0 && strcmp(source, "internal") != 0 && strcmp(source, "factory") != 0) {
		error = ferror_set(FACTORY_ECONFIG, "bad --source '%s': expected customer, internal or factory", source);
		goto cleanup;
	}
	error = feedback_from_fields(&f, &pr, create_arg(ctx, "create.kind", "FEEDBACK_KIND"),
				     create_arg(ctx, "create.title", "FEEDBACK_TITLE"),
				     body_file ? fbuf_cstr(&body) : create_arg(ctx, "create.body", "FEEDBACK_BODY"),
				     create_arg(ctx, "create.email", "FEEDBACK_EMAIL"), NULL, NULL);
	if (error == FACTORY_EINVALID) {
		feedback_problem_text(&msg, &pr);
		error = ferror_set(FACTORY_ECONFIG, "cannot file the issue: %s", fbuf_cstr(&msg));
		goto cleanup;
	}
	if (error < 0)
		goto cleanup;
	snprintf(f.source, sizeof(f.source), "%s", source ? source : "internal");
	if ((error = feedback_new_id(&f)) < 0 || (error = feedback_issue_fields(&fields, &f)) < 0)
		goto cleanup;
	if ((error = job_connect(ctx)) < 0 || (error = gitlab_issue_create(&issue, ctx->gl, fields)) < 0)
		goto cleanup;
	if (!issue) { /* dry run */
		report_action(ctx->rep, "issue.create", f.id, "would file a %s issue", feedback_kind_name(f.kind));
		report_summary(ctx->rep, "dry run: would file one %s issue", feedback_kind_name(f.kind));
		error = 0;
		goto cleanup;
	}
	iid = cJSON_GetObjectItemCaseSensitive(issue, "iid");
	url = cJSON_GetObjectItemCaseSensitive(issue, "web_url");
	if (!cJSON_IsNumber(iid)) {
		error = ferror_set(FACTORY_EINVALID, "GitLab answered the issue create without an iid");
		goto cleanup;
	}
	report_action(ctx->rep, "issue.create", f.id, "issue #%ld (%s)", (long)iid->valuedouble, feedback_kind_name(f.kind));
	if (f.email) {
		if ((error = feedback_reporter_note(&text, &f)) < 0 ||
		    (error = gitlab_note_create(&note, ctx->gl, "issues", (long)iid->valuedouble, fbuf_cstr(&text), 1)) < 0) {
			log_error("issue #%ld was filed, but the internal note with the email was not: %s",
				  (long)iid->valuedouble, ferror_last());
			goto cleanup;
		}
		report_action(ctx->rep, "note.create", f.id, "internal note with the reporter's email");
	}
	printf("created issue #%ld %s\n", (long)iid->valuedouble, cJSON_IsString(url) ? url->valuestring : "");
	report_summary(ctx->rep, "filed issue #%ld", (long)iid->valuedouble);
	error = 0;
cleanup:
	cJSON_Delete(fields);
	cJSON_Delete(issue);
	cJSON_Delete(note);
	fbuf_release(&body);
	fbuf_release(&msg);
	fbuf_release(&text);
	feedback_release(&f);
	return error;
}

int main(int argc, char **argv)
{
	const char *command = NULL;
	job_ctx ctx;
	int rc;

	/* "factory-intake serve --listen X": take the command out so that the
	 * flags after it are parsed as well. */
	if (argc > 1 && argv[1][0] != '-') {
		command = argv[1];
		memmove(&argv[1], &argv[2], (size_t)(argc - 1) * sizeof(char *));
		argc--;
	}
	rc = job_start(&ctx, &spec, argc, argv);
	if (rc != JOB_CONTINUE)
		return rc;
	if (!command && ctx.nargs > 0) {
		command = ctx.args[0];
		ctx.args++;
		ctx.nargs--;
	}
	if (!command)
		return job_finish(&ctx, ferror_set(FACTORY_ECONFIG, "no command given: serve, deliver or create (see --help)"));
	if (ctx.nargs > 0)
		return job_finish(&ctx, ferror_set(FACTORY_ECONFIG, "unexpected argument '%s' (see --help)", ctx.args[0]));
	if (!strcmp(command, "serve"))
		rc = serve(&ctx);
	else if (!strcmp(command, "deliver"))
		rc = deliver(&ctx);
	else if (!strcmp(command, "create"))
		rc = create(&ctx);
	else
		rc = ferror_set(FACTORY_ECONFIG, "unknown command '%s': serve, deliver or create (see --help)", command);
	return job_finish(&ctx, rc);
}
