/* Resume: a killed `run` continues where it stopped (issue 10).
 *
 * After the embeddings and after each block, once its shard is fsynced in
 * OUT.tmp, the fused run records the step in OUT.tmp:
 *
 *   resume-input-GGGGG-CCCCC.sgac  chunk C of the next block's inputs (the
 *                                  store's "input" signal) after step G
 *                                  (0 the embeddings, l+1 block l), in the
 *                                  activation store's spill format, fsynced
 *   resume.state                   the step, written to resume.state.tmp,
 *                                  fsynced and renamed over the last one
 *
 * resume.state (little-endian host order):
 *
 *     u8[4] magic "SGRS", u32 version (1), u64 fingerprint of the job,
 *     i64 last step done (-1 the embeddings, l block l), i64 D,
 *     i64 chunks, i64 width, i64 rows[chunks] (the input chunks' shapes),
 *     i32 next shard, u64 n + n bytes: the index's weight map (JSON),
 *     u64 n + n bytes: the eigenvalue spectra so far (JSON),
 *     f64 Q[D * D]: the rotation of the step's output (the next block's
 *     input rotation), u32 CRC-32C of everything before it.
 *
 * The state names only files completely written before it, so whatever
 * moment a kill comes, the last state names a consistent point; files of
 * other steps are removed once a new state is in place. The fingerprint
 * hashes the model files (names, sizes, mtimes), the calibration tokens
 * and their chunks, the backend and every option that changes the bytes
 * written: a resume of another job is refused. */
#ifndef SG_STAGE_RESUME_H
#define SG_STAGE_RESUME_H

#include <stddef.h>
#include <stdint.h>

#define SG_RESUME_STATE "resume.state"
#define SG_RESUME_CHUNK_PREFIX "resume-input-"
#define SG_RESUME_CHUNK_FMT SG_RESUME_CHUNK_PREFIX "%05u-%05u.sgac"

typedef struct {
    uint64_t fingerprint;
    int64_t last;       /* -1: the embeddings; l: block l */
    int64_t D;
    int64_t n_chunks;   /* input chunks kept (0 after the last block) */
    int64_t width;      /* their width: the block's sliced output width */
    int64_t *rows;      /* (n_chunks) */
    int next_shard;
    char *weight_map;   /* JSON */
    char *spectra;      /* JSON */
    double *q;          /* (D, D) row-major, as sg_rotation's host copy; NULL:
                         * the identity (nothing rotated, --method nystrom),
                         * which the file does not store */
} sg_resume_state;

/* dir/resume-input-... of chunk c after step `last`. */
void sg_resume_chunk_path(const char *dir, int64_t last, int64_t c, char *buf, size_t n);
/* Writes dir/resume.state atomically (temporary name, fsync, rename,
 * directory fsync), then removes the chunk files of every other step. */
int sg_resume_save(const char *dir, const sg_resume_state *st);
/* Reads dir/resume.state: SG_EMISSING if there is none, SG_EFORMAT or
 * SG_ECHECKSUM for a damaged one. */
int sg_resume_load(const char *dir, sg_resume_state *st);
void sg_resume_state_free(sg_resume_state *st);
/* Removes resume.state and every chunk file from the directory open as dfd. */
void sg_resume_remove(int dfd);

/* FNV-1a, 64 bits: the fingerprint's hash. */
uint64_t sg_resume_hash(uint64_t h, const void *data, size_t n);
/* Folds the names, sizes and modification times of the model's files (a
 * directory's regular files, or the one file) into *h. */
int sg_resume_hash_files(const char *path, uint64_t *h);

/* Test hook: when $SG_TEST_KILL_AT equals point ("block:2", "mid:1",
 * "head", "write", ...), the process dies of SIGKILL here, as a kill -9
 * at that moment would do; with $SG_TEST_KILL_SIGNAL TERM or INT, of that
 * signal instead, through the program's handlers. For the tests only. */
void sg_test_kill_at(const char *point);

#endif
