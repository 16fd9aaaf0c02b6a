/*
 * scan.c - the run's passes over the issues.
 *
 * How a rerun knows what it already did, without state on disk and without a
 * request per issue: the decision is a pure function of what the list pass
 * returns (title, description, labels), so each open issue is decided again
 * from the page itself, with the rules alone (TRIAGE_FRESH), and compared
 * with the triage labels it carries:
 *   - no valid priority:: label              -> triage it (PLAN_TRIAGE);
 *   - a priority, but not our mark label      -> a person's: left as it is;
 *   - our mark, and the labels agree          -> unchanged: nothing, no request;
 *   - our mark, and they disagree             -> read our last note (PLAN_LOOK):
 *       its marker holds a hash of title, description and other labels as
 *       they were, and the labels we left. Labels changed since -> a person
 *       took over (PLAN_HANDOVER: the mark goes); content changed -> triage
 *       again; nothing changed -> a model's or an older policy's answer
 *       stands, unless the rules now say security or something more urgent.
 * So an unchanged project costs one list pass and no other request.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "error.h"
#include "log.h"
#include "triage_job.h"
#include "untrusted.h"
#include "json.h"

#define NOTE_MAX (64 * 1024)

/* "#12" for report targets (a static buffer: used at once). */
static const char *target(const tri_item *it)
{
	static char buf[32];

	snprintf(buf, sizeof(buf), "#%ld", it->iid);
	return buf;
}

/* A warning for people: logged, and listed in the report (not a change). */
static int __attribute__((format(printf, 2, 3))) add_warning(tri_run *r, const char *fmt, ...)
{
	char buf[512];
	cJSON *arr = cJSON_GetObjectItemCaseSensitive(report_data(r->job->rep), "warnings"), *s;
	va_list ap;

	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): a false positive, va_start is above */
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_warn("%s", buf);
	if (!arr && !(arr = cJSON_AddArrayToObject(report_data(r->job->rep), "warnings")))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (!(s = cJSON_CreateString(buf)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	cJSON_AddItemToArray(arr, s);
	report_counter_add(r->job->rep, "warnings", 1);
	return 0;
}

static int is_triage_family(const char *name)
{
	return triage_is_own_label(name) && strncmp(name, "workflow::", 10) != 0;
}

static const char *label_name(const cJSON *l)
{
	if (cJSON_IsString(l))
		return l->valuestring;
	return json_str(l, "name");
}

/* The triage labels of an issue as they are, in the decision's spelling. */
static int current_labels(fbuf *out, const cJSON *issue)
{
	triage_decision d;
	int t = triage_issue_type(issue), error;

	triage_decision_init(&d);
	d.type = t >= 0 ? (triage_type)t : TRIAGE_NTYPES;
	d.priority = triage_issue_priority(issue);
	d.severity = triage_issue_severity(issue);
	d.fast_lane = triage_issue_has_label(issue, LABEL_FAST_LANE);
	error = fbuf_printf(out, "type::%s,priority::%d", t >= 0 ? triage_type_name(d.type) : "-", d.priority);
	if (!error && d.severity)
		error = fbuf_printf(out, ",severity::%d", d.severity);
	if (!error && d.fast_lane)
		error = fbuf_puts(out, ",fast-lane");
	return error;
}

/* Whether the triage labels on the issue are those of decision `d`. */
static int labels_agree(const cJSON *issue, const triage_decision *d)
{
	fbuf want, have;
	int same;

	fbuf_init(&want, 256);
	fbuf_init(&have, 256);
	same = triage_decision_labels(&want, d) == 0 && current_labels(&have, issue) == 0 &&
	       !strcmp(fbuf_cstr(&want), fbuf_cstr(&have));
	/* a bug's severity label is ours; other types carry none */
	fbuf_release(&want);
	fbuf_release(&have);
	return same;
}

static int csv_has(const char *csv, const char *name)
{
	size_t n = strlen(name);
	const char *p = csv;

	while (p && *p) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && !strncmp(p, name, n))
			return 1;
		p = e ? e + 1 : NULL;
	}
	return 0;
}

static int csv_add(fbuf *b, const char *name)
{
	if (b->len && fbuf_putc(b, ',') < 0)
		return FACTORY_ENOMEM;
	return fbuf_puts(b, name);
}

/* Plan the label moves that make `issue` carry decision `d` (and our mark
 * when the decision is the Factory's own). Labels that are not triage's are
 * never removed; triage's own are removed only from an issue we triaged
 * before (`own`): on a first triage every label already there is a
 * person's, and stays. */
static int plan_labels(tri_item *it, const cJSON *issue, const triage_decision *d, int own)
{
	fbuf want, add, rem;
	const cJSON *l;
	const char *p, *e;
	int error = -1;

	fbuf_init(&want, 512);
	fbuf_init(&add, 512);
	fbuf_init(&rem, 4096);
	if ((error = triage_decision_labels(&want, d)) < 0)
		goto cleanup;
	if (!d->human && (error = csv_add(&want, TRIAGE_MARK_LABEL)) < 0)
		goto cleanup;
	for (p = fbuf_cstr(&want); p && *p; p = e ? e + 1 : NULL) {
		char name[128];
		size_t len;
		e = strchr(p, ',');
		len = e ? (size_t)(e - p) : strlen(p);
		if (len >= sizeof(name))
			continue;
		memcpy(name, p, len);
		name[len] = '\0';
		if (!triage_issue_has_label(issue, name) && (error = csv_add(&add, name)) < 0)
			goto cleanup;
	}
	cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(issue, "labels")) {
		const char *name = label_name(l);
		if (own && name && is_triage_family(name) && !csv_has(fbuf_cstr(&want), name) && !csv_has(fbuf_cstr(&rem), name) &&
		    (error = csv_add(&rem, name)) < 0)
			goto cleanup;
	}
	free(it->add);
	free(it->remove);
	it->add = add.len ? fbuf_detach(&add) : NULL;
	it->remove = rem.len ? fbuf_detach(&rem) : NULL;
	it->set_confidential = d->confidential && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(issue, "confidential"));
	it->priority = d->priority;
	it->severity = d->type == TRIAGE_BUG ? d->severity : 0;
	it->fast_lane = d->fast_lane;
	it->marked = !d->human;
	error = 0;
cleanup:
	fbuf_release(&want);
	fbuf_release(&add);
	fbuf_release(&rem);
	return error;
}

int tri_decide(triage_decision *d, tri_model *m, const triage_policy *p, const cJSON *issue)
{
	int error = triage_decide(d, p, issue, 0);

	if (error < 0)
		return error;
	if (m && d->ambiguous)
		error = tri_model_ask(m, d, issue);
	return error;
}

/* Decide for an issue and plan its labels (PLAN_TRIAGE), unless it already
 * carries that decision. `issue` is what the decision reads (our own old
 * labels stripped when it is a re-triage), `actual` the issue as it is. */
static int plan_triage(tri_run *r, tri_item *it, const cJSON *issue, const cJSON *actual, int own, const char *why)
{
	int error;

	triage_decision_release(&it->d);
	if ((error = tri_decide(&it->d, r->model, r->policy, issue)) < 0)
		return error;
	if ((error = plan_labels(it, actual, &it->d, own)) < 0)
		return error;
	if (!it->add && !it->remove && !it->set_confidential) {
		/* already as decided (a person's labels agreed): nothing to write */
		it->plan = PLAN_NONE;
		triage_decision_release(&it->d);
		return 0;
	}
	it->plan = PLAN_TRIAGE;
	it->why = why;
	return 0;
}

static int grow(tri_run *r)
{
	tri_item *v;
	size_t n;

	if (r->n < r->alloc)
		return 0;
	n = r->alloc ? r->alloc * 2 : 256;
	if (!(v = realloc(r->v, n * sizeof(*v))))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	r->v = v;
	r->alloc = n;
	return 0;
}

static int retriage(tri_run *r, tri_item *it, const char *ours, const char *why);

/* Issues the Factory keeps for itself (the pipeline job's failure ledger)
 * are not work to triage: the setting triage.skip_labels (comma-separated,
 * default "factory::ledger", read once at start-up into r->skip_labels)
 * names the labels that leave an issue out. */
static int skipped(const tri_run *r, const cJSON *issue)
{
	const char *list = r->skip_labels ? r->skip_labels : "factory::ledger";
	const cJSON *labels = cJSON_GetObjectItemCaseSensitive(issue, "labels"), *l;

	cJSON_ArrayForEach(l, labels) {
		if (cJSON_IsString(l) && *l->valuestring && csv_has(list, l->valuestring))
			return 1;
	}
	return 0;
}

static int scan_cb(void *vctx, const cJSON *issue)
{
	tri_run *r = vctx;
	tri_item *it;
	triage_decision fresh;
	const cJSON *pos;
	const char *s;
	int error;

	if (skipped(r, issue))
		return 0;
	if ((error = grow(r)) < 0)
		return error;
	it = &r->v[r->n++];
	memset(it, 0, sizeof(*it));
	triage_decision_init(&it->d);
	it->iid = json_long(issue, "iid");
	it->id = json_long(issue, "id");
	it->upvotes = json_long(issue, "upvotes");
	if ((s = json_str(issue, "created_at")))
		snprintf(it->created_at, sizeof(it->created_at), "%s", s);
	pos = cJSON_GetObjectItemCaseSensitive(issue, "relative_position");
	if (cJSON_IsNumber(pos)) {
		it->relpos = pos->valuedouble;
		it->has_relpos = 1;
	}
	it->priority = triage_issue_priority(issue);
	it->severity = triage_issue_severity(issue);
	it->fast_lane = triage_issue_has_label(issue, LABEL_FAST_LANE);
	it->marked = triage_issue_has_label(issue, TRIAGE_MARK_LABEL);
	it->up_next = triage_issue_has_label(issue, "workflow::up next");
	it->busy = triage_issue_has_label(issue, "workflow::in progress") ||
		   triage_issue_has_label(issue, "workflow::validation");
	it->confidential = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(issue, "confidential"));
	it->content = triage_content_hash(issue);
	report_counter_add(r->job->rep, "issues_seen", 1);
	if (it->iid <= 0 || it->id <= 0) {
		log_warn("an issue in the list has no iid or id: skipped");
		it->gone = 1;
		return 0;
	}

	if (!it->priority && !it->marked)
		return plan_triage(r, it, issue, issue, 0, "new");
	if (!it->priority) {
		/* ours, and a person removed the priority: triage it afresh */
		if (!(it->issue = cJSON_Duplicate(issue, 1)))
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		error = retriage(r, it, NULL, "priority removed");
		cJSON_Delete(it->issue);
		it->issue = NULL;
		return error;
	}
	if (!it->marked) {
		report_counter_add(r->job->rep, "left_to_people", 1);
		/* a person's issue: left as it is, but say so when the rules see a security issue in it */
		if ((error = triage_decide(&fresh, r->policy, issue, TRIAGE_FRESH)) < 0)
			return error;
		if (fresh.type == TRIAGE_SECURITY && triage_issue_type(issue) != TRIAGE_SECURITY) {
			if ((error = add_warning(r, "#%ld: the rules see a security issue; a person set priority::%d, "
						    "left as it is", it->iid, it->priority)) < 0) {
				triage_decision_release(&fresh);
				return error;
			}
		}
		triage_decision_release(&fresh);
		return 0;
	}
	if ((error = triage_decide(&fresh, r->policy, issue, TRIAGE_FRESH)) < 0)
		return error;
	if (labels_agree(issue, &fresh) && !(fresh.confidential && !it->confidential)) {
		triage_decision_release(&fresh);
		report_counter_add(r->job->rep, "unchanged", 1);
		return 0;
	}
	triage_decision_release(&fresh);
	if (!(it->issue = cJSON_Duplicate(issue, 1)))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	it->plan = PLAN_LOOK;
	return 0;
}

int tri_scan(tri_run *r)
{
	int error;

	log_section_start("triage_scan", "reading open issues", 1);
	error = gitlab_list_each(r->job->gl, "projects/:id/issues", "state=opened", "id", 0, scan_cb, r);
	log_section_end("triage_scan");
	if (error < 0)
		return error;
	log_info("%zu open issues read", r->n);
	return 0;
}

/* ---- the look: our last note on an issue ---- */

typedef struct {
	long me;
	triage_marker m;
	int found;
} note_find;

static int note_cb(void *vctx, const cJSON *note)
{
	note_find *f = vctx;
	const cJSON *author = cJSON_GetObjectItemCaseSensitive(note, "author");
	const char *body = json_str(note, "body");

	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(note, "system")) || !body)
		return 0;
	if (json_long(author, "id") != f->me)
		return 0;
	if (triage_marker_parse(&f->m, body) == 0) {
		f->found = 1;
		return 1; /* newest first: this is the last one */
	}
	return 0;
}

static int whoami(tri_run *r)
{
	cJSON *user = NULL;
	int error;

	if (r->me)
		return 0;
	if ((error = gitlab_request(&user, r->job->gl, "GET", NULL, "user")) < 0)
		return error;
	r->me = json_long(user, "id");
	cJSON_Delete(user);
	if (r->me <= 0)
		return ferror_set(FACTORY_EINVALID, "GET user: no id in the answer");
	return 0;
}

/* Our labels as the marker recorded them (NULL: every triage label),
 * stripped from a copy of the issue, so that a new decision is not pinned
 * by our own old one. */
static void strip_labels(cJSON *issue, const char *csv)
{
	cJSON *labels = cJSON_GetObjectItemCaseSensitive(issue, "labels");
	int i;

	for (i = cJSON_GetArraySize(labels) - 1; i >= 0; i--) {
		const char *name = label_name(cJSON_GetArrayItem(labels, i));
		if (name && ((csv ? csv_has(csv, name) : is_triage_family(name)) || !strcmp(name, TRIAGE_MARK_LABEL)))
			cJSON_DeleteItemFromArray(labels, i);
	}
}

/* Triage again, deciding on a copy of the issue without the labels we left
 * (`ours`, and the mark), and moving labels from what the issue has now. */
static int retriage(tri_run *r, tri_item *it, const char *ours, const char *why)
{
	cJSON *copy = cJSON_Duplicate(it->issue, 1);
	int error;

	if (!copy)
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	strip_labels(copy, ours);
	error = plan_triage(r, it, copy, it->issue, 1, why);
	cJSON_Delete(copy);
	return error;
}

/* An issue-shaped object carrying the labels of a comma-separated list. */
static cJSON *labels_from_csv(const char *csv)
{
	cJSON *o = cJSON_CreateObject(), *arr = o ? cJSON_AddArrayToObject(o, "labels") : NULL;
	const char *p, *e;

	if (!arr) {
		cJSON_Delete(o);
		return NULL;
	}
	for (p = csv; p && *p; p = e ? e + 1 : NULL) {
		char name[128];
		size_t len;
		cJSON *s;
		e = strchr(p, ',');
		len = e ? (size_t)(e - p) : strlen(p);
		if (!len || len >= sizeof(name))
			continue;
		memcpy(name, p, len);
		name[len] = '\0';
		if (!(s = cJSON_CreateString(name))) {
			cJSON_Delete(o);
			return NULL;
		}
		cJSON_AddItemToArray(arr, s);
	}
	return o;
}

static int look_one(tri_run *r, tri_item *it)
{
	note_find f;
	fbuf have, want;
	cJSON *left = NULL;
	triage_decision fresh;
	char path[96];
	int error;

	memset(&f, 0, sizeof(f));
	f.me = r->me;
	snprintf(path, sizeof(path), "projects/:id/issues/%ld/notes", it->iid);
	error = gitlab_list_each(r->job->gl, path, "sort=desc&order_by=created_at", NULL, 0, note_cb, &f);
	if (error == FACTORY_ENOTFOUND) {
		log_warn("#%ld: deleted while the run went on: skipped", it->iid);
		report_counter_add(r->job->rep, "deleted", 1);
		it->gone = 1;
		it->plan = PLAN_NONE;
		return 0;
	}
	if (error < 0)
		return error;
	report_counter_add(r->job->rep, "looked_up", 1);
	if (!f.found) /* our note is gone: treat the issue as changed */
		return retriage(r, it, NULL, "changed (no marker)");
	fbuf_init(&have, 256);
	fbuf_init(&want, 256);
	if (!(left = labels_from_csv(f.m.labels))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto done;
	}
	if ((error = current_labels(&have, it->issue)) < 0 || (error = current_labels(&want, left)) < 0)
		goto done;
	if (strcmp(fbuf_cstr(&have), fbuf_cstr(&want)) != 0 || (f.m.confidential && !it->confidential)) {
		/* a person moved our labels (or made it public again): theirs now */
		it->plan = PLAN_HANDOVER;
		it->why = "a person changed the triage";
		free(it->remove);
		it->remove = strdup(TRIAGE_MARK_LABEL);
		it->marked = 0;
		error = it->remove ? 1 : ferror_set(FACTORY_ENOMEM, "out of memory");
	}
done:
	cJSON_Delete(left);
	fbuf_release(&have);
	fbuf_release(&want);
	if (error)
		return error < 0 ? error : 0;
	if (f.m.content != it->content)
		return retriage(r, it, f.m.labels, "changed");
	/* Unchanged since our note: the rules disagree because a model raised
	 * it, or the policy changed. Act only on something more urgent. */
	if ((error = triage_decide(&fresh, r->policy, it->issue, TRIAGE_FRESH)) < 0)
		return error;
	if (fresh.type == TRIAGE_SECURITY || fresh.priority < it->priority) {
		triage_decision_release(&fresh);
		return retriage(r, it, f.m.labels, "policy");
	}
	triage_decision_release(&fresh);
	it->plan = PLAN_NONE;
	report_counter_add(r->job->rep, "unchanged", 1);
	return 0;
}

int tri_look(tri_run *r)
{
	size_t i;
	int error = 0;

	for (i = 0; i < r->n; i++) {
		if (r->v[i].plan != PLAN_LOOK)
			continue;
		if ((error = whoami(r)) < 0 || (error = look_one(r, &r->v[i])) < 0)
			break;
	}
	for (i = 0; i < r->n; i++) {
		cJSON_Delete(r->v[i].issue);
		r->v[i].issue = NULL;
	}
	return error;
}

/* ---- the writes ---- */

static int decision_data(tri_run *r, const tri_item *it)
{
	cJSON *o = NULL, *j = NULL;

	if (triage_decision_json(&j, &it->d) < 0)
		return FACTORY_ENOMEM;
	o = cJSON_CreateObject();
	if (!o || !cJSON_AddNumberToObject(o, "iid", it->iid) || !cJSON_AddStringToObject(o, "why", it->why ? it->why : "") ||
	    !cJSON_AddStringToObject(o, "add", it->add ? it->add : "") ||
	    !cJSON_AddStringToObject(o, "remove", it->remove ? it->remove : "") ||
	    !cJSON_AddBoolToObject(o, "make_confidential", it->set_confidential)) {
		cJSON_Delete(o);
		cJSON_Delete(j);
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	}
	cJSON_AddItemToObject(o, "decision", j);
	cJSON_AddItemToArray(r->decisions, o);
	return 0;
}

/* The full label moves for an item: its plan plus the Up Next change. */
static int moves(fbuf *add, fbuf *rem, const tri_item *it)
{
	int error = 0;

	if (it->add)
		error = fbuf_puts(add, it->add);
	if (!error && it->remove)
		error = fbuf_puts(rem, it->remove);
	if (!error && it->want_up_next && !it->up_next)
		error = csv_add(add, "workflow::up next");
	if (!error && !it->want_up_next && it->up_next)
		error = csv_add(rem, "workflow::up next");
	return error;
}

/* One PUT with every change of the issue. 0, 1 when the issue is gone, or
 * an error. */
static int put_changes(tri_run *r, tri_item *it, const char *add, const char *rem)
{
	cJSON *out = NULL, *fields = NULL;
	int error;

	if (it->set_confidential) {
		if (!(fields = cJSON_CreateObject()) || (*add && !cJSON_AddStringToObject(fields, "add_labels", add)) ||
		    (*rem && !cJSON_AddStringToObject(fields, "remove_labels", rem)) ||
		    !cJSON_AddTrueToObject(fields, "confidential")) {
			cJSON_Delete(fields);
			return ferror_set(FACTORY_ENOMEM, "out of memory");
		}
		error = gitlab_issue_update(&out, r->job->gl, it->iid, fields);
		cJSON_Delete(fields);
	} else {
		error = gitlab_issue_move_labels(&out, r->job->gl, it->iid, add, rem);
	}
	cJSON_Delete(out);
	if (error == FACTORY_ENOTFOUND) {
		log_warn("#%ld: deleted while the run went on: skipped", it->iid);
		report_counter_add(r->job->rep, "deleted", 1);
		it->gone = 1;
		return 1;
	}
	return error;
}

static int is_fatal(int error)
{
	return error == FACTORY_EUPSTREAM || error == FACTORY_EAUTH || error == FACTORY_ENOMEM;
}

static int write_note(tri_run *r, tri_item *it)
{
	triage_marker m;
	fbuf note, labels;
	cJSON *out = NULL;
	int error;

	fbuf_init(&note, NOTE_MAX);
	fbuf_init(&labels, 256);
	memset(&m, 0, sizeof(m));
	if (it->plan == PLAN_HANDOVER) {
		error = fbuf_puts(&note, "**Triage:** a person changed the triage labels of this issue, so the Factory leaves "
					 "it to them (the `" TRIAGE_MARK_LABEL "` label is removed; add it back to hand it "
					 "back).");
	} else {
		m.content = it->content;
		if ((error = triage_decision_labels(&labels, &it->d)) < 0)
			goto cleanup;
		snprintf(m.labels, sizeof(m.labels), "%s", fbuf_cstr(&labels));
		m.confidential = it->d.confidential;
		error = triage_note(&note, &it->d, &m,
				    it->d.human ? "Labels a person set were kept; the Factory will not re-triage this issue." : NULL);
	}
	if (error < 0)
		goto cleanup;
	error = gitlab_note_create(&out, r->job->gl, "issues", it->iid, fbuf_cstr(&note), it->d.confidential);
	if (error == FACTORY_ENOTFOUND) {
		log_warn("#%ld: deleted while the run went on: no note", it->iid);
		it->gone = 1;
		error = 0;
		goto cleanup;
	}
	if (error < 0)
		goto cleanup;
	report_action(r->job->rep, "note", target(it), "%s",
		      it->plan == PLAN_HANDOVER ? "left to the person who changed its labels" : "decision explained");
cleanup:
	cJSON_Delete(out);
	fbuf_release(&note);
	fbuf_release(&labels);
	return error;
}

static void print_decision(tri_run *r, const tri_item *it, const char *add, const char *rem)
{
	fbuf labels, names;
	const cJSON *n;

	fbuf_init(&labels, 256);
	fbuf_init(&names, 4096);
	triage_decision_labels(&labels, &it->d);
	cJSON_ArrayForEach(n, it->d.rules) {
		if (names.len)
			fbuf_puts(&names, ", ");
		fbuf_puts(&names, n->valuestring);
	}
	printf("%s#%ld: %s%s (%s; %s%s)%s%s%s%s\n", r->job->dry_run ? "would triage " : "triaged ", it->iid,
	       fbuf_cstr(&labels), it->d.confidential ? ",confidential" : "", it->why ? it->why : "",
	       it->d.model ? "model, " : "", names.len ? fbuf_cstr(&names) : "no rule matched",
	       *add ? " +" : "", add, *rem ? " -" : "", rem);
	fbuf_release(&labels);
	fbuf_release(&names);
}

static int find_label_cb(void *vctx, const cJSON *label)
{
	int *found = vctx;
	const char *name = json_str(label, "name");

	if (name && !strcmp(name, TRIAGE_MARK_LABEL)) {
		*found = 1;
		return 1;
	}
	return 0;
}

/* The mark label, with its colour and description, before the first issue
 * gets it (add_labels would make it grey and bare). One read, and one write
 * the first time. */
static int ensure_mark_label(tri_run *r)
{
	cJSON *out = NULL;
	int found = 0, error;
	size_t i;

	for (i = 0; i < r->n; i++)
		if (!r->v[i].gone && r->v[i].add && csv_has(r->v[i].add, TRIAGE_MARK_LABEL))
			break;
	if (i == r->n)
		return 0;
	error = gitlab_list_each(r->job->gl, "projects/:id/labels", "search=triage%3A%3Afactory&include_ancestor_groups=true",
				 NULL, 0, find_label_cb, &found);
	if (error < 0 || found)
		return error;
	error = gitlab_label_create(&out, r->job->gl, TRIAGE_MARK_LABEL, TRIAGE_MARK_COLOR, TRIAGE_MARK_DESCRIPTION);
	cJSON_Delete(out);
	if (error == FACTORY_ECONFLICT)
		return 0; /* made meanwhile */
	if (error == 0)
		report_action(r->job->rep, "label.create", TRIAGE_MARK_LABEL, "color %s", TRIAGE_MARK_COLOR);
	return error;
}

int tri_write(tri_run *r)
{
	fbuf add, rem;
	size_t i;
	int error = 0;

	if ((error = ensure_mark_label(r)) < 0)
		return error;

	fbuf_init(&add, 64 * 1024);
	fbuf_init(&rem, 64 * 1024);
	log_section_start("triage_write", "writing decisions", 0);
	for (i = 0; i < r->n; i++) {
		tri_item *it = &r->v[i];
		int rc;

		if (it->gone)
			continue;
		fbuf_reset(&add);
		fbuf_reset(&rem);
		if ((error = moves(&add, &rem, it)) < 0)
			break;
		if (!add.len && !rem.len && !it->set_confidential && it->plan == PLAN_NONE)
			continue;
		if (it->plan == PLAN_TRIAGE) {
			report_counter_add(r->job->rep, "triaged", 1);
			if ((error = decision_data(r, it)) < 0)
				break;
			print_decision(r, it, fbuf_cstr(&add), fbuf_cstr(&rem));
		}
		if (add.len || rem.len || it->set_confidential) {
			rc = put_changes(r, it, fbuf_cstr(&add), fbuf_cstr(&rem));
			if (rc == 1)
				continue;
			if (rc < 0) {
				if (is_fatal(rc)) {
					error = rc;
					break;
				}
				log_warn("#%ld: %s", it->iid, ferror_last());
				r->failures++;
				continue;
			}
			if (add.len || rem.len)
				report_action(r->job->rep, "labels", target(it), "%s%s%s%s", add.len ? "+" : "",
					      fbuf_cstr(&add), rem.len ? (add.len ? " -" : "-") : "", fbuf_cstr(&rem));
			if (it->set_confidential)
				report_action(r->job->rep, "confidential", target(it), "made confidential (security)");
			if (it->plan == PLAN_NONE)
				log_info("%s#%ld: Up Next %s", r->job->dry_run ? "dry-run: " : "", it->iid,
					 it->want_up_next ? "joined" : "left");
		}
		if (it->plan == PLAN_TRIAGE || it->plan == PLAN_HANDOVER) {
			if ((rc = write_note(r, it)) < 0) {
				if (is_fatal(rc)) {
					error = rc;
					break;
				}
				log_warn("#%ld: note: %s", it->iid, ferror_last());
				r->failures++;
			}
		}
	}
	log_section_end("triage_write");
	fbuf_release(&add);
	fbuf_release(&rem);
	return error;
}

/* The report's own section: the decisions (the first MD_ROWS) and Up Next. */
#define MD_ROWS 500
int tri_report_markdown(tri_run *r)
{
	fbuf md, labels, names;
	const cJSON *n;
	size_t i, rows = 0, total = 0;
	int error = 0, first = 1;

	fbuf_init(&md, 4 << 20);
	fbuf_init(&labels, 256);
	fbuf_init(&names, 4096);
	for (i = 0; i < r->n; i++)
		total += r->v[i].plan == PLAN_TRIAGE;
	if (total)
		error = fbuf_puts(&md, "## Decisions\n\n| Issue | Labels | Why | Rules |\n| ---: | --- | --- | --- |\n");
	for (i = 0; i < r->n && !error && rows < MD_ROWS; i++) {
		const tri_item *it = &r->v[i];
		if (it->plan != PLAN_TRIAGE)
			continue;
		fbuf_reset(&labels);
		fbuf_reset(&names);
		triage_decision_labels(&labels, &it->d);
		cJSON_ArrayForEach(n, it->d.rules) {
			if (names.len)
				fbuf_puts(&names, ", ");
			fbuf_puts(&names, n->valuestring);
		}
		error = fbuf_printf(&md, "| #%ld%s | %s%s | %s%s%s | %s |\n", it->iid, it->gone ? " (deleted)" : "",
				    fbuf_cstr(&labels), it->d.confidential ? ", confidential" : "", it->why ? it->why : "",
				    it->d.model ? ", model" : "", it->d.human ? ", a person's labels" : "",
				    names.len ? fbuf_cstr(&names) : "none");
		rows++;
	}
	if (!error && total > rows)
		error = fbuf_printf(&md, "\n... and %zu more decisions (report.json has them all).\n", total - rows);
	cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(report_data(r->job->rep), "up_next")) {
		if (error)
			break;
		error = fbuf_printf(&md, "%s#%ld", first ? "\n## Up Next, in order\n\n" : ", ", (long)n->valuedouble);
		first = 0;
	}
	if (!error && !first)
		error = fbuf_puts(&md, "\n");
	if (!error && md.len)
		error = report_markdown(r->job->rep, "%s", fbuf_cstr(&md));
	fbuf_release(&md);
	fbuf_release(&labels);
	fbuf_release(&names);
	return error == FACTORY_ETOOBIG ? 0 : error;
}

void tri_run_release(tri_run *r)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		cJSON_Delete(r->v[i].issue);
		triage_decision_release(&r->v[i].d);
		free(r->v[i].add);
		free(r->v[i].remove);
	}
	free(r->v);
	tri_model_free(r->model);
	triage_policy_free(r->policy);
	memset(r, 0, sizeof(*r));
}
