/* Removal of private scratch directories when the process dies early.
 *
 * A long run spills gigabytes of activations to a scratch directory; a
 * Ctrl-C must not leave them behind. Each owner of such a directory (the
 * activation store) registers it here; on SIGINT, SIGTERM or SIGHUP the
 * handler empties and removes every registered directory, restores the
 * default action and re-raises the signal, so the exit status still says
 * "killed by SIGTERM". An atexit hook does the same on exit() paths that
 * skipped the owner's close.
 *
 * The handler is async-signal-safe: the registry is a fixed array of slots
 * guarded by a sequence counter (the handler skips a slot being rewritten),
 * and it lists the directory with getdents64 into a stack buffer, so it
 * needs no per-file bookkeeping and also removes a file half-written at the
 * moment of the signal. Only the process that registered a directory
 * removes it: a forked child that exits leaves its parent's files alone.
 *
 * Registered directories must be private to this process (made with
 * mkdtemp): everything in them is deleted. */
#ifndef SG_CLEANUP_H
#define SG_CLEANUP_H

/* At most this many directories registered at once in a process. */
#define SG_CLEANUP_MAX_DIRS 64

/* Registers path (an existing private directory) and stores the slot to
 * pass to sg_cleanup_unregister in *slot. Also installs the atexit hook the
 * first time. -EMFILE when every slot is taken, -ENAMETOOLONG for a path
 * longer than PATH_MAX. */
int sg_cleanup_register_dir(const char *path, int *slot);

/* Forgets the slot (the owner removed the directory itself). */
void sg_cleanup_unregister(int slot);

/* Installs the handler for SIGINT, SIGTERM and SIGHUP, once. A signal that
 * is ignored (nohup) stays ignored, and one that already has a handler keeps
 * it: that handler can call sg_cleanup_run() itself. Returns 0 or -errno. */
int sg_cleanup_install_signals(void);

/* Empties and removes every directory registered by this process.
 * Async-signal-safe; preserves errno. */
void sg_cleanup_run(void);

/* Empties and removes one directory (not registered necessarily); returns 0
 * or -errno of the first failure. Async-signal-safe. */
int sg_cleanup_remove_dir(const char *path);

#endif
