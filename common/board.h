/*
 * board.h - the Factory's labels and its board, as data, and the calls that
 * read the board's state. Used by factory-setup (creates them), triage,
 * implement and the demo (prints the board).
 *
 * The board is named "Factory"; its lists are Up Next, In Progress and
 * Validation, each tied to a workflow:: label. Open and Closed are GitLab's
 * own lists. Moving a card = moving labels (gitlab_issue_move_labels).
 */
#ifndef FACTORY_BOARD_H
#define FACTORY_BOARD_H

#include <stdio.h>

#include "gitlab.h"

#define BOARD_NAME "Factory"

#define LABEL_UP_NEXT "workflow::up next"
#define LABEL_IN_PROGRESS "workflow::in progress"
#define LABEL_VALIDATION "workflow::validation"
#define LABEL_FAST_LANE "fast-lane"
/* Off the board: factory-implement asks a person (missing information, an
 * ambiguous issue, attempts used up), or its agent found nothing to change. */
#define LABEL_NEEDS_INFO "workflow::needs info"
#define LABEL_NO_CHANGE "factory::no change"

typedef struct {
	const char *name;
	const char *color;        /* "#RRGGBB", upper case */
	const char *description;
} board_label;

/* Every label the Factory runs on, NULL-terminated (name == NULL). */
extern const board_label board_labels[];
/* The workflow labels of the board's lists, in order, NULL-terminated. */
extern const char *const board_list_labels[];

/* How many labels the catalogue has. */
int board_label_count(void);

/* Find a label by name in the catalogue; NULL if it is not one of ours. */
const board_label *board_label_find(const char *name);

/* Find the Factory board among the project's boards: *out is a new copy
 * (caller frees) or NULL when there is none. Returns 0 or a GitLab error. */
int board_find(cJSON **out, gitlab *gl);

/*
 * Print the board as columns to `f`: Open (opened issues with none of the
 * list labels), each list in order, Closed (the last `closed_max` closed
 * issues). Each card shows "#iid [priority] title". Reads only.
 */
int board_print(FILE *f, gitlab *gl, int closed_max);

#endif
