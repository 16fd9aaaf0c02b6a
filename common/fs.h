/*
 * fs.h - file-system chores shared by the jobs.
 */
#ifndef FACTORY_FS_H
#define FACTORY_FS_H

/*
 * Remove `path` and everything below it, depth first, without following
 * symbolic links (a link is removed, never what it points to). Best effort:
 * an entry that cannot be removed is left and the walk goes on. Returns 0
 * when the tree is gone (or never existed), -1 when something was left.
 */
int fs_remove_tree(const char *path);

#endif
