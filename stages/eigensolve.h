/* Stage "eigensolve": the principal directions of a covariance.
 *
 * SliceGPT takes Q = eigenvectors of H + δI with δ = 1% of mean(diag H)
 * (damping, so a rank-deficient H still has a well-defined basis), sorted
 * by eigenvalue, largest first, in float64 (the backend's eigh: dsyevd on
 * the CPU, cuSOLVER or the mixed solver refined to float64 on a GPU):
 * float32 eigenvectors cost real perplexity on large models. */
#ifndef SG_STAGE_EIGENSOLVE_H
#define SG_STAGE_EIGENSOLVE_H

#include <stdint.h>

#include "backend.h"
#include "rotate_slice.h"

/* PCA per signal (the published method); a random orthogonal control; or
 * UNIFORM: one PCA basis for the whole network (slicer.h), whose axes
 * sg_slice_axes computes like PCA's. */
typedef enum { SG_ROTATION_PCA, SG_ROTATION_RANDOM, SG_ROTATION_UNIFORM } sg_rotation_kind;

/* The principal axes of a finished covariance h (D, D, backend memory),
 * overwritten: PCA (damped, descending, by the backend's eigensolver in
 * the given mode), or the random control seeded by seed and layer
 * (eigenvalues then 0). q gets both copies, eig (host) the spectrum. */
int sg_slice_axes(sg_backend *be, double *h, int64_t D, int64_t layer, sg_rotation_kind kind,
                  uint64_t seed, double damp_frac, sg_eigh_mode mode, sg_rotation *q,
                  double *eig);

/* Eigenvalues per signal, written as eigenvalues.json beside the model. */
typedef struct sg_spectra sg_spectra;
sg_spectra *sg_spectra_new(void);
int sg_spectra_add(sg_spectra *s, const char *signal, int64_t layer, const double *eig,
                   int64_t n);
int sg_spectra_write(const sg_spectra *s, const char *out_dir);
void sg_spectra_free(sg_spectra *s);
/* The spectra so far as JSON (malloc'd; NULL: out of memory), and back:
 * what a resumed run continues from (resume.h). */
char *sg_spectra_json(const sg_spectra *s);
int sg_spectra_from_json(sg_spectra *s, const char *json);

#endif
