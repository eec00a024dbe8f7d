/* Activation store: the calibration activations of the block being worked
 * on, by signal name (the slicer's "input", "residual" and "output") and
 * chunk index.
 *
 * Activations are the one thing that grows with the work (tokens x D
 * float32 per signal), so they stay in memory only while they fit a host
 * budget; chunks beyond it are spilled to a private scratch directory as
 * zstd-compressed files and streamed back on demand. A chunk goes to memory
 * if it fits what is left of the budget, else to disk; nothing is ever
 * evicted, so chunks put first stay resident and dropping a consumed
 * signal frees budget for the next ones.
 *
 * Spill file format (one file per chunk, little-endian host order, never
 * kept across runs):
 *
 *     offset size
 *      0     4    magic "SGAC"
 *      4     4    u32 version (1)
 *      8     8    i64 rows
 *     16     8    i64 width
 *     24     8    u64 raw bytes (rows * width * 4)
 *     32     8    u64 bytes of the zstd frame that follows
 *     40     4    u32 flags: bit 0 = byte-shuffled
 *     44     4    u32 floats per shuffle block
 *     48     ...  one zstd frame, content size and checksum included
 *
 * Byte-shuffled: the raw floats are cut into blocks of that many floats,
 * and each block is stored as all first bytes, then all second bytes, ...
 * (as blosc does): the sign/exponent bytes of activations are highly
 * repetitive, the low mantissa bytes are noise, and zstd compresses the
 * grouped bytes better and faster than interleaved ones.
 *
 * Every header field is checked against what the store recorded at put
 * time and the frame length against the file size; zstd's content checksum
 * catches corruption of the data. A bad file is a clean error naming it.
 *
 * Spill files are written with write() loops (an error such as ENOSPC
 * removes the partial file and names it) and read back through sg_io
 * (io_uring or pread), in 1 MiB pieces read ahead of the decompressor, so
 * a get needs no buffer of the chunk's size besides the caller's.
 *
 * Threads: calls on one store may come from several threads (a capture
 * stage putting while a covariance stage gets); bookkeeping is under a
 * lock, compression and decompression run outside it. Putting the same
 * chunk twice, or dropping a signal while another thread reads it, is an
 * error of the caller.
 *
 * Cleanup: sg_act_store_close removes every spill file and the private
 * directory; so do failed puts (their partial file) and failed opens. For
 * a run killed by SIGINT/SIGTERM/SIGHUP, the program calls
 * sg_act_store_install_signal_cleanup() once; exit() without close is
 * covered by an atexit hook (cleanup.h). */
#ifndef SG_ACT_STORE_H
#define SG_ACT_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_act_store sg_act_store;

typedef struct {
    int64_t budget_bytes;             /* as given to open */
    int64_t resident_bytes;           /* chunk data held in memory now */
    int64_t peak_resident_bytes;      /* most ever held at once (<= budget) */
    int64_t chunks_resident;          /* chunks in memory now */
    int64_t chunks_spilled;           /* chunks written to disk, ever */
    int64_t spilled_raw_bytes;        /* their float32 bytes, ever */
    int64_t spilled_compressed_bytes; /* their file bytes (headers included), ever */
    int64_t spill_files;              /* spill files on disk now */
    int64_t spill_file_bytes;         /* their size now */
    int64_t read_back_raw_bytes;      /* float32 bytes read back from disk, ever */
    double spill_write_seconds;       /* time in compress + write, summed over threads */
    double spill_read_seconds;        /* time in read + decompress, summed over threads */
    char io_backend[96];              /* sg_io_backend() once a spill was read back, or "" */
} sg_act_store_stats_t;

/* budget_bytes: resident bytes allowed for chunks kept in memory (>= 0).
 * spill_dir: where chunks beyond the budget go; created if needed, and a
 * private subdirectory spill_dir/slicegpt-XXXXXX (mode 0700) is made at
 * once, so an unwritable directory fails now rather than hours later and
 * concurrent runs never collide. NULL: never spill; then a chunk that does
 * not fit the budget is an -ENOMEM error saying so. */
int sg_act_store_open(int64_t budget_bytes, const char *spill_dir, sg_act_store **out);

/* Stores a copy of chunk `index` (>= 0) of signal `name`: data is (rows,
 * width) float32, row-major, rows and width > 0. In memory if it fits the
 * budget, else compressed to a spill file, completely written before put
 * returns. A new name creates the signal. The chunk must not exist yet
 * (SG_EARG). */
int sg_act_store_put(sg_act_store *s, const char *name, int64_t index, const float *data,
                     int64_t rows, int64_t width);

/* The shape of a stored chunk; SG_EMISSING if there is none. */
int sg_act_store_shape(const sg_act_store *s, const char *name, int64_t index, int64_t *rows,
                       int64_t *width);

/* Copies chunk `index` of `name` into data, a caller buffer of rows * width
 * floats (see sg_act_store_shape). Bit-exact. SG_EMISSING if absent;
 * SG_EFORMAT or SG_ECHECKSUM, naming the file, for a corrupted or truncated
 * spill file; -errno for a failed read. */
int sg_act_store_get(sg_act_store *s, const char *name, int64_t index, float *data);

/* 1 + the highest chunk index stored for name (0 if none): consumers loop
 * over 0..n-1, and a missing index in between fails loudly in get. */
int64_t sg_act_store_chunks(const sg_act_store *s, const char *name);

/* Frees a signal's memory and deletes its spill files (a signal is dropped
 * once a stage consumed it). SG_EMISSING if there is no such signal. */
int sg_act_store_drop(sg_act_store *s, const char *name);

/* Renames a signal without copying its chunks. SG_EMISSING if from does
 * not exist, SG_EARG if to does (drop it first). */
int sg_act_store_rename(sg_act_store *s, const char *from, const char *to);

/* Counters for reports and the memory-bound tests. */
void sg_act_store_stats(const sg_act_store *s, sg_act_store_stats_t *st);

/* The private spill directory (spill_dir/slicegpt-XXXXXX), or NULL. */
const char *sg_act_store_spill_path(const sg_act_store *s);

/* Several processes (the stage filters of slicegpt-stream(5)): one
 * process puts chunks into a store opened with a budget of 0, so every
 * chunk is a spill file, and names each file to another process, which
 * reads it by path. The writer keeps ownership and drops a signal only
 * once it knows the reader is done with it. */

/* The spill file of chunk `index` of `name`, as a path relative to
 * sg_act_store_spill_path(), into buf (n bytes). SG_EMISSING if there is
 * no such chunk, SG_EARG if it is held in memory. */
int sg_act_store_chunk_file(const sg_act_store *s, const char *name, int64_t index, char *buf,
                            size_t n);

/* Reads the spill file at path, written by any store, into data (rows *
 * width floats), with the checks of sg_act_store_get (header against rows
 * and width, zstd checksum). s lends its reading machinery: any open
 * store, with or without a spill directory. */
int sg_act_store_read_file(sg_act_store *s, const char *path, int64_t rows, int64_t width,
                           float *data);

/* Writes (rows, width) floats to a new spill file at path, in the format
 * above, and fsyncs it: a file kept beyond the run (the resume snapshot of
 * slicer.c), read back with sg_act_store_read_file. An existing file at
 * path is replaced. s lends its compressor; its stats do not count it. */
int sg_act_store_write_file(sg_act_store *s, const char *path, const float *data, int64_t rows,
                            int64_t width);

/* Removes every spill file and the private directory, frees everything.
 * NULL is allowed. */
void sg_act_store_close(sg_act_store *s);

/* Installs SIGINT/SIGTERM/SIGHUP handlers that remove the spill
 * directories of every open store, then die of the signal; the program
 * calls it once, early. A signal the program ignores or handles itself is
 * left alone (its handler may call sg_cleanup_run() from cleanup.h).
 * Returns 0 or -errno. */
int sg_act_store_install_signal_cleanup(void);

#endif
