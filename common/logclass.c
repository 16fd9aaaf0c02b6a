/* logclass.c - pcre2 classification rules loaded from data. */
#include "logclass.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "rules.h"

const char logclass_default_yaml[] =
        "- name: crash\n"
        "  severity: 1\n"
        "  pattern: '\\b(panic|segmentation fault|segfault|sigsegv|sigabrt|sigbus|core dumped|fatal error"
        "|uncaught (exception|error)|unhandled (exception|rejection|error)|stack overflow|out of memory"
        "|oom[- ]?kill(ed)?|crash(ed|es)?|assertion failed)\\b'\n"
        "- name: payment\n"
        "  severity: 2\n"
        "  pattern: '\\b(payments?|billing|invoices?|charges?|checkout|subscriptions?|card|refunds?|purchase)\\b"
        ".{0,80}\\b(fail\\w*|declin\\w*|errors?|denied|reject\\w*|unable|could not|cannot|invalid|insufficient)\\b"
        "|\\b(fail\\w*|declin\\w*|errors?|unable to|could not|cannot)\\b.{0,40}\\b(pay\\w*|charge|bill\\w*|checkout"
        "|subscri\\w*|refund)\\b'\n"
        "- name: authentication\n"
        "  severity: 2\n"
        "  pattern: '\\b(auth\\w*|log ?in|sign[- ]?in|passwords?|credentials?|tokens?|sessions?|sso|oauth|jwt)\\b"
        ".{0,60}\\b(fail\\w*|invalid|denied|expired|unauthori[sz]ed|forbidden|reject\\w*|mismatch|locked)\\b"
        "|\\bunauthori[sz]ed\\b|\\bforbidden\\b|\\baccess denied\\b'\n"
        "- name: database\n"
        "  severity: 2\n"
        "  pattern: '\\b(sql\\w*|database|db|postgres\\w*|psql|mysql|mariadb|sqlite|mongo\\w*|redis|deadlock"
        "|duplicate key|foreign key|constraint violation|connection pool|too many connections|relation \\S+ does not"
        " exist|query failed|transaction (rolled back|aborted))\\b'\n"
        "- name: timeout\n"
        "  severity: 3\n"
        "  pattern: '\\b(time[ds]? ?out|timeouts|deadline exceeded|etimedout|gateway timeout)\\b'\n"
        "- name: server-error\n"
        "  severity: 2\n"
        "  status_min: 500\n"
        "  status_max: 599\n"
        "  pattern: '\\b(internal server error|bad gateway|service unavailable|http[/ ][0-9.]* 5[0-9][0-9]"
        "|status[=: ]+5[0-9][0-9])\\b'\n";

typedef struct {
	logclass_rule r;
	int status_min, status_max;
} class_info;

struct logclass {
	rules *rs;
	class_info *info;
	size_t n;
};

static const char *const fields[] = {"message", "detail", NULL};

/* Check the keys rules.h leaves to us, and fill info[i]. */
static int read_info(class_info *ci, const cJSON *item, const char *name, const char *origin)
{
	const cJSON *sev = cJSON_GetObjectItemCaseSensitive(item, "severity");
	const cJSON *smin = cJSON_GetObjectItemCaseSensitive(item, "status_min");
	const cJSON *smax = cJSON_GetObjectItemCaseSensitive(item, "status_max");
	const cJSON *err = cJSON_GetObjectItemCaseSensitive(item, "error");

	if (!cJSON_IsNumber(sev) || sev->valuedouble < 1 || sev->valuedouble > 4 ||
	    sev->valuedouble != (int)sev->valuedouble)
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': severity must be a whole number from 1 to 4", origin,
		                  name);
	if ((smin && (!cJSON_IsNumber(smin) || smin->valuedouble < 100 || smin->valuedouble > 599)) ||
	    (smax && (!cJSON_IsNumber(smax) || smax->valuedouble < 100 || smax->valuedouble > 599)))
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': status_min and status_max must be HTTP statuses",
		                  origin, name);
	if (err && !cJSON_IsBool(err))
		return ferror_set(FACTORY_ECONFIG, "%s: rule '%s': error must be true or false", origin, name);
	ci->r.name = name;
	ci->r.severity = (int)sev->valuedouble;
	ci->r.makes_error = err ? cJSON_IsTrue(err) : 1;
	ci->status_min = smin ? (int)smin->valuedouble : 0;
	ci->status_max = smax ? (int)smax->valuedouble : (ci->status_min ? 599 : 0);
	return 0;
}

int logclass_new(logclass **out, const cJSON *project_rules, int with_defaults)
{
	logclass *lc = NULL;
	cJSON *all = NULL, *defaults = NULL;
	const cJSON *item;
	rules_limits limits;
	size_t i;
	int error;

	*out = NULL;
	if (project_rules && !cJSON_IsArray(project_rules))
		return ferror_set(FACTORY_ECONFIG, "watch.rules: expected a list of rules");
	if (!(all = project_rules ? cJSON_Duplicate(project_rules, 1) : cJSON_CreateArray()))
		return ferror_set(FACTORY_ENOMEM, "out of memory");
	if (with_defaults) {
		if ((error = fconfig_yaml_to_json(&defaults, logclass_default_yaml, strlen(logclass_default_yaml),
		                                  "built-in watch rules")) < 0)
			goto fail;
		while (cJSON_GetArraySize(defaults) > 0) {
			cJSON *d = cJSON_DetachItemFromArray(defaults, 0);
			const cJSON *dn = cJSON_GetObjectItemCaseSensitive(d, "name"), *p;
			int overridden = 0;
			cJSON_ArrayForEach(p, all)
			{
				const cJSON *pn = cJSON_GetObjectItemCaseSensitive(p, "name");
				if (cJSON_IsString(pn) && cJSON_IsString(dn) &&
				    !strcmp(pn->valuestring, dn->valuestring))
					overridden = 1;
			}
			if (overridden)
				cJSON_Delete(d); /* the project's rule of that name replaces it */
			else
				cJSON_AddItemToArray(all, d);
		}
	}
	if (!(lc = calloc(1, sizeof(*lc)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto fail;
	}
	rules_limits_init(&limits);
	limits.max_subject = 16 << 10;
	if ((error = rules_compile(&lc->rs, all, fields, &limits, "watch rules")) < 0)
		goto fail;
	lc->n = rules_count(lc->rs);
	if (!(lc->info = calloc(lc->n ? lc->n : 1, sizeof(*lc->info)))) {
		error = ferror_set(FACTORY_ENOMEM, "out of memory");
		goto fail;
	}
	for (i = 0; i < lc->n; i++) {
		item = rules_data(lc->rs, i);
		if ((error = read_info(&lc->info[i], item, rules_name(lc->rs, i), "watch rules")) < 0)
			goto fail;
	}
	cJSON_Delete(all);
	cJSON_Delete(defaults);
	*out = lc;
	return 0;
fail:
	cJSON_Delete(all);
	cJSON_Delete(defaults);
	logclass_free(lc);
	return error;
}

void logclass_free(logclass *lc)
{
	if (!lc)
		return;
	rules_free(lc->rs);
	free(lc->info);
	free(lc);
}

const logclass_rule *logclass_match(const logclass *lc, const char *message, size_t len, const char *detail,
                                    size_t detail_len, int status)
{
	rules_result res;
	rules_field f[2];
	const logclass_rule *found = NULL;
	size_t i, h = 0;

	f[0].name = "message";
	f[0].text = message;
	f[0].len = len;
	f[1].name = "detail";
	f[1].text = detail ? detail : "";
	f[1].len = detail ? detail_len : 0;
	rules_result_init(&res);
	if (rules_match(&res, lc->rs, f, detail_len ? 2 : 1) < 0) {
		rules_result_release(&res);
		return NULL;
	}
	for (i = 0; i < lc->n && !found; i++) {
		const class_info *ci = &lc->info[i];
		while (h < res.nhits && res.hits[h].rule < i)
			h++;
		if ((ci->status_min && status >= ci->status_min && status <= ci->status_max) ||
		    (h < res.nhits && res.hits[h].rule == i))
			found = &ci->r;
	}
	rules_result_release(&res);
	return found;
}

size_t logclass_count(const logclass *lc)
{
	return lc->n;
}
