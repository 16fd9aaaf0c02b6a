/*
 * fs.c - file-system chores (fs.h).
 */
#define _GNU_SOURCE /* nftw, FTW_DEPTH, FTW_PHYS */
#include "fs.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

int fs_remove_tree(const char *path)
{
	struct stat st;

	if (!path || !path[0])
		return 0;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
	return lstat(path, &st) < 0 && errno == ENOENT ? 0 : -1;
}
