/* Tests for common/json.c: member accessors, wrong types, hostile numbers. */
#include <criterion/criterion.h>
#include <limits.h>

#include "json.h"

Test(json, reads_strings_and_numbers)
{
	cJSON *o = cJSON_Parse("{\"s\":\"v\",\"n\":42.9,\"neg\":-7,\"big\":1e300,\"small\":-1e300}");

	cr_assert_not_null(o);
	cr_assert_str_eq(json_str(o, "s"), "v");
	cr_assert_eq(json_long(o, "n"), 42);
	cr_assert_eq(json_long(o, "neg"), -7);
	cr_assert_eq(json_long(o, "big"), LONG_MAX);
	cr_assert_eq(json_long(o, "small"), LONG_MIN);
	cJSON_Delete(o);
}

Test(json, missing_or_other_types_give_the_fallback)
{
	cJSON *o = cJSON_Parse("{\"s\":1,\"n\":\"42\",\"x\":null,\"S\":\"case\"}");

	cr_assert_not_null(o);
	cr_assert_null(json_str(o, "s"));
	cr_assert_eq(json_long(o, "n"), 0);
	cr_assert_null(json_str(o, "x"));
	cr_assert_null(json_str(o, "absent"));
	cr_assert_null(json_str(o, "s_")); /* exact key only */
	cr_assert_str_eq(json_str(o, "S"), "case");
	cr_assert_null(json_str(NULL, "s"));
	cr_assert_eq(json_long(NULL, "n"), 0);
	cJSON_Delete(o);
}
