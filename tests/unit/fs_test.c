/* Tests for common/fs.c: removing a tree, never what a link points to. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"
#include "support/support.h"

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	cr_assert(fd >= 0, "cannot create %s", path);
	cr_assert_eq(write(fd, "x", 1), 1);
	close(fd);
}

Test(fs, removes_a_tree_but_not_what_links_point_to)
{
	char base[256], tree[512], sub[600], keep[600], path[700];
	struct stat st;

	tu_tmpdir_make(base, sizeof(base), "fs");
	snprintf(tree, sizeof(tree), "%s/tree", base);
	snprintf(sub, sizeof(sub), "%s/a", tree);
	snprintf(keep, sizeof(keep), "%s/keep", base);
	cr_assert_eq(mkdir(tree, 0700), 0);
	cr_assert_eq(mkdir(sub, 0700), 0);
	cr_assert_eq(mkdir(keep, 0700), 0);
	snprintf(path, sizeof(path), "%s/f", sub);
	touch(path);
	snprintf(path, sizeof(path), "%s/kept", keep);
	touch(path);
	snprintf(path, sizeof(path), "%s/link", sub);
	cr_assert_eq(symlink(keep, path), 0);

	cr_assert_eq(fs_remove_tree(tree), 0);
	cr_assert_neq(lstat(tree, &st), 0);
	snprintf(path, sizeof(path), "%s/kept", keep);
	cr_assert_eq(stat(path, &st), 0, "the link's target must survive");
	tu_tmpdir_remove(base);
}

Test(fs, nothing_to_remove_is_fine)
{
	cr_assert_eq(fs_remove_tree("/nonexistent/factory-fs-test"), 0);
	cr_assert_eq(fs_remove_tree(""), 0);
	cr_assert_eq(fs_remove_tree(NULL), 0);
}
