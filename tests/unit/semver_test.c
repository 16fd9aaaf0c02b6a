/* Tests for common/semver.c: strict parsing, precedence (semver.org's own
 * example list), npm-style bumps, the 0.x rule, formatting. */
#include <criterion/criterion.h>
#include <string.h>

#include "error.h"
#include "semver.h"

static semver P(const char *s)
{
	semver v;

	cr_assert_eq(semver_parse(&v, s, "v"), 0, "%s: %s", s, ferror_last());
	return v;
}

static const char *fmt(const semver *v)
{
	static char buf[200];

	cr_assert_eq(semver_format(buf, sizeof(buf), v, NULL), 0);
	return buf;
}

Test(semver, parses_every_part)
{
	semver v = P("1.22.333-rc.1+build.7");

	cr_assert_eq(v.major, 1);
	cr_assert_eq(v.minor, 22);
	cr_assert_eq(v.patch, 333);
	cr_assert_str_eq(v.pre, "rc.1");
	cr_assert_str_eq(v.build, "build.7");
	v = P("v0.0.0");
	cr_assert_eq(v.major + v.minor + v.patch, 0);
	cr_assert_str_eq(v.pre, "");
	v = P("1.0.0-x-y.0a.--");
	cr_assert_str_eq(v.pre, "x-y.0a.--");
	v = P("1.0.0+001");
	cr_assert_str_eq(v.build, "001"); /* leading zeros are fine in build metadata */
}

Test(semver, refuses_what_is_not_a_version)
{
	static const char *bad[] = {"",
	                            "1",
	                            "1.2",
	                            "1.2.3.4",
	                            "01.2.3",
	                            "1.02.3",
	                            "1.2.03",
	                            "1.2.3-",
	                            "1.2.3-01",
	                            "1.2.3-a..b",
	                            "1.2.3+",
	                            "1.2.3+a_b",
	                            "1.2.3 ",
	                            " 1.2.3",
	                            "v",
	                            "vv1.2.3",
	                            "1.2.3-é",
	                            "-1.2.3",
	                            "1.2.-3",
	                            "1000000000.0.0",
	                            "1.2.3-rc.1+",
	                            "x1.2.3",
	                            "1.2.3-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
	size_t i;
	semver v;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(semver_parse(&v, bad[i], "v"), FACTORY_EINVALID, "'%s' was accepted", bad[i]);
		cr_assert(strstr(ferror_last(), "not a semantic version"), "%s", ferror_last());
	}
	cr_assert_eq(semver_parse(&v, NULL, NULL), FACTORY_EINVALID);
	/* a prefix is only stripped when it is the one given */
	cr_assert_eq(semver_parse(&v, "v1.2.3", NULL), FACTORY_EINVALID);
	cr_assert_eq(semver_parse(&v, "release-1.2.3", "release-"), 0);
	cr_assert_eq(v.minor, 2);
}

Test(semver, precedence_follows_the_spec_example)
{
	/* semver.org section 11, in increasing order */
	static const char *order[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
	                              "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
	                              "1.0.0-rc.1",  "1.0.0",         "1.0.1",
	                              "1.1.0",       "2.0.0",         "10.0.0"};
	size_t i, j, n = sizeof(order) / sizeof(order[0]);

	for (i = 0; i < n; i++) {
		for (j = 0; j < n; j++) {
			semver a = P(order[i]), b = P(order[j]);
			int c = semver_compare(&a, &b);
			int want = i < j ? -1 : i > j;
			cr_assert_eq(c, want, "%s vs %s: %d", order[i], order[j], c);
		}
	}
	{
		semver a = P("1.0.0+a"), b = P("1.0.0+b");
		cr_assert_eq(semver_compare(&a, &b), 0, "build metadata is ignored");
	}
}

Test(semver, bumps_like_npm)
{
	static const struct {
		const char *from;
		semver_change c;
		const char *to;
	} cases[] = {
	        {"1.2.3", SEMVER_PATCH, "1.2.4"},         {"1.2.3", SEMVER_MINOR, "1.3.0"},
	        {"1.2.3", SEMVER_BREAKING, "2.0.0"},      {"1.2.3-rc.1", SEMVER_PATCH, "1.2.3"},
	        {"1.3.0-rc.1", SEMVER_MINOR, "1.3.0"},    {"1.2.3-rc.1", SEMVER_MINOR, "1.3.0"},
	        {"2.0.0-rc.1", SEMVER_BREAKING, "2.0.0"}, {"2.1.0-rc.1", SEMVER_BREAKING, "3.0.0"},
	        {"0.4.2", SEMVER_BREAKING, "0.5.0"},      {"0.4.2", SEMVER_MINOR, "0.5.0"},
	        {"0.4.2", SEMVER_PATCH, "0.4.3"},         {"1.2.3+b.9", SEMVER_PATCH, "1.2.4"},
	        {"0.0.0", SEMVER_PATCH, "0.0.1"},         {"9.99.999", SEMVER_MINOR, "9.100.0"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		semver cur = P(cases[i].from), next;
		cr_assert_eq(semver_bump(&next, &cur, cases[i].c), 0);
		cr_assert_str_eq(fmt(&next), cases[i].to, "%s + %s", cases[i].from, semver_change_name(cases[i].c));
		cr_assert_gt(semver_compare(&next, &cur), 0, "a bump always goes up");
	}
	{
		semver big = P("1.999999999.0"), next;
		cr_assert_eq(semver_bump(&next, &big, SEMVER_MINOR), FACTORY_ETOOBIG);
	}
}

Test(semver, formats_with_a_prefix_and_refuses_small_buffers)
{
	semver v = P("v3.1.4-beta.2+sha.abc");
	char small[6], buf[64];

	cr_assert_eq(semver_format(buf, sizeof(buf), &v, "v"), 0);
	cr_assert_str_eq(buf, "v3.1.4-beta.2+sha.abc");
	cr_assert_eq(semver_format(small, sizeof(small), &v, "v"), FACTORY_ETOOBIG);
	cr_assert_str_eq(small, "");
	/* round trip */
	{
		semver back;
		cr_assert_eq(semver_parse(&back, buf, "v"), 0);
		cr_assert_eq(semver_compare(&back, &v), 0);
		cr_assert_str_eq(back.build, "sha.abc");
	}
}
