/* Stage "schedule": per-signal widths from the spectra (schedule.h). */
#include "schedule.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <math.h>

#include "cpu_kernels.h"
#include "sg_error.h"

int sg_schedule_probe_init(sg_schedule_probe *p, int64_t D)
{
    int64_t max_rows = SG_COV_CHUNK; /* normalised a piece at a time */
    memset(p, 0, sizeof *p);
    p->D = D;
    p->max_rows = max_rows;
    p->hn = calloc(D * D, sizeof(double));
    p->chunk = malloc(SG_COV_CHUNK * D * sizeof(double));
    p->xn = malloc(max_rows * D * sizeof(float));
    p->m = malloc(D * D * sizeof(double));
    if (!p->hn || !p->chunk || !p->xn || !p->m) {
        sg_schedule_probe_free(p);
        return sg_fail(-ENOMEM, "out of memory for the schedule's probe (D = %lld)", (long long)D);
    }
    return 0;
}

void sg_schedule_probe_free(sg_schedule_probe *p)
{
    free(p->hn);
    free(p->chunk);
    free(p->xn);
    free(p->m);
    memset(p, 0, sizeof *p);
}

int64_t sg_schedule_probe_bytes(int64_t D)
{
    return (2 * D * D + SG_COV_CHUNK * D) * (int64_t)sizeof(double) +
           SG_COV_CHUNK * D * (int64_t)sizeof(float);
}

void sg_schedule_probe_begin(sg_schedule_probe *p)
{
    memset(p->hn, 0, p->D * p->D * sizeof(double));
}

void sg_schedule_probe_add(sg_schedule_probe *p, const float *x, int64_t rows)
{
    int64_t D = p->D;
    for (int64_t start = 0; start < rows; start += p->max_rows) {
        int64_t n = rows - start < p->max_rows ? rows - start : p->max_rows;
        for (int64_t t = 0; t < n; t++) {
            const float *row = x + (start + t) * D;
            double ss = 0;
            for (int64_t j = 0; j < D; j++)
                ss += (double)row[j] * row[j];
            float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
            for (int64_t j = 0; j < D; j++)
                p->xn[t * D + j] = row[j] * inv;
        }
        sg_cov_accumulate_upper(p->hn, p->chunk, D, p->xn, n);
    }
}

void sg_schedule_probe_energy(sg_schedule_probe *p, const double *q, double *e)
{
    int64_t D = p->D;
    sg_cov_mirror_upper(p->hn, D);
    /* m = Hn·Q; e_i = Σ_a Q[a][i] m[a][i] */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)D, (int)D, (int)D, 1.0, p->hn,
                (int)D, q, (int)D, 0.0, p->m, (int)D);
    for (int64_t i = 0; i < D; i++)
        e[i] = 0;
    for (int64_t a = 0; a < D; a++)
        for (int64_t i = 0; i < D; i++)
            e[i] += q[a * D + i] * p->m[a * D + i];
}

int sg_schedule_spectra_init(sg_schedule_spectra *s, int64_t D, int64_t L)
{
    memset(s, 0, sizeof *s);
    s->D = D;
    s->n_layers = L;
    s->embeddings = calloc(D, sizeof(double));
    s->mid = calloc(L * D, sizeof(double));
    s->out = calloc(L * D, sizeof(double));
    s->have = calloc(2 * L + 1, 1);
    if (!s->embeddings || !s->mid || !s->out || !s->have) {
        sg_schedule_spectra_free(s);
        return sg_fail(-ENOMEM, "out of memory for the spectra of %lld layers", (long long)L);
    }
    return 0;
}

void sg_schedule_spectra_free(sg_schedule_spectra *s)
{
    free(s->embeddings);
    free(s->mid);
    free(s->out);
    free(s->have);
    memset(s, 0, sizeof *s);
}

int64_t sg_schedule_spectra_bytes(int64_t D, int64_t L)
{
    return (2 * L + 1) * D * (int64_t)sizeof(double) + 2 * L + 1;
}

void sg_schedule_spectra_put(sg_schedule_spectra *s, const char *signal, int64_t layer,
                             const double *eig)
{
    double *dst = NULL;
    int64_t slot = -1;
    if (!strcmp(signal, "embeddings"))
        dst = s->embeddings, slot = 0;
    else if (layer >= 0 && layer < s->n_layers && !strcmp(signal, "attention_output"))
        dst = s->mid + layer * s->D, slot = 1 + 2 * layer;
    else if (layer >= 0 && layer < s->n_layers && !strcmp(signal, "block_output"))
        dst = s->out + layer * s->D, slot = 2 + 2 * layer;
    if (!dst)
        return;
    memcpy(dst, eig, s->D * sizeof(double));
    s->have[slot] = 1;
}

/* One signal the schedule sizes: where its width lives in the config
 * (every place that width appears) and its spectrum, normalised. */
typedef struct {
    int64_t *w[3];      /* the width, and where else it must be copied */
    double *share;      /* (D): λ_i / Σλ, descending */
    int64_t width;
} signal_t;

static void set_width(signal_t *s, int64_t width)
{
    s->width = width;
    for (int i = 0; i < 3 && s->w[i]; i++)
        *s->w[i] = width;
}

/* Fraction of the variance that cutting s from its width to `to` discards. */
static double discarded(const signal_t *s, int64_t to)
{
    double v = 0;
    for (int64_t i = to; i < s->width; i++)
        v += s->share[i];
    return v;
}

/* --method fill: from the reference's widths, while the budget allows,
 * the signal whose next r components keep the most energy per stored
 * parameter added is widened by r. No signal is narrower than in the
 * reference. */
static void fill(signal_t *sig, int n, int64_t D, int64_t r, double budget, sg_model_config *c)
{
    double params = (double)sg_model_param_count(c);
    for (;;) {
        int best = -1;
        double best_gain = 0, best_params = 0;
        for (int i = 0; i < n; i++) {
            int64_t from = sig[i].width, to = (from / r + 1) * r;
            if (to > D)
                to = D;
            if (to <= from)
                continue;
            set_width(&sig[i], to);
            double after = (double)sg_model_param_count(c);
            set_width(&sig[i], from);
            if (after > budget || after <= params)
                continue;
            double kept = 0;
            for (int64_t j = from; j < to; j++)
                kept += sig[i].share[j];
            double gain = kept / (after - params);
            if (best < 0 || gain > best_gain)
                best = i, best_gain = gain, best_params = after;
        }
        if (best < 0)
            return;
        int64_t to = (sig[best].width / r + 1) * r;
        set_width(&sig[best], to > D ? D : to);
        params = best_params;
    }
}

int sg_schedule_widths(const sg_model_config *orig, const sg_model_config *ref,
                       const sg_plan_options *o, const sg_schedule_spectra *sp,
                       sg_model_config *c)
{
    int64_t D = sp->D, L = ref->n_layers, r = o->round_interval;
    int64_t min_width = r; /* sg_sliced_dim's floor */
    *c = *ref;
    double budget = (double)sg_model_param_count(ref);
    if (o->method == SG_METHOD_FILL && o->target_size > 0)
        budget = o->target_size * (double)sg_model_param_count(orig);
    signal_t sig[2 * SG_MAX_LAYERS + 1];
    double *shares = malloc((2 * L + 1) * D * sizeof(double));
    if (!shares)
        return sg_fail(-ENOMEM, "out of memory for the schedule");
    int n = 0, err = 0;
    /* which signals the reference cuts: a width below D */
    for (int64_t k = -1; k < 2 * L && !err; k++) {
        signal_t s = {{0}, shares + n * D, 0};
        const double *eig;
        int64_t slot;
        if (k < 0) { /* the embeddings feed block 0 */
            if (ref->embed_dim >= D)
                continue;
            s.w[0] = &c->embed_dim, s.w[1] = &c->d_in[0];
            eig = sp->embeddings, slot = 0;
        } else if (k % 2 == 0) { /* block l's residual after attention */
            int64_t l = k / 2;
            if (ref->parallel_block || ref->d_mid[l] >= D)
                continue;
            s.w[0] = &c->d_mid[l];
            eig = sp->mid + l * D, slot = 1 + k;
        } else { /* block l's output, the next block's input */
            int64_t l = k / 2;
            if (ref->d_out[l] >= D)
                continue;
            s.w[0] = &c->d_out[l];
            s.w[1] = l + 1 < L ? &c->d_in[l + 1] : &c->head_in_dim;
            if (ref->parallel_block)
                s.w[2] = &c->d_mid[l];
            eig = sp->out + l * D, slot = 1 + k;
        }
        if (!sp->have[slot]) {
            err = sg_fail(SG_EARG, "schedule: no spectrum for signal %lld (%s)", (long long)k,
                          k < 0 ? "embeddings" : k % 2 ? "block_output" : "attention_output");
            break;
        }
        double total = 0;
        for (int64_t i = 0; i < D; i++)
            total += eig[i] > 0 ? eig[i] : 0;
        for (int64_t i = 0; i < D; i++)
            s.share[i] = total > 0 && eig[i] > 0 ? eig[i] / total : 0;
        set_width(&s, o->method == SG_METHOD_FILL ? *s.w[0] : D);
        sig[n++] = s;
    }
    if (!err && o->method == SG_METHOD_FILL) {
        fill(sig, n, D, r, budget, c);
        free(shares);
        return 0;
    }
    /* greedy: the cheapest cut of r components per parameter saved */
    double params = (double)sg_model_param_count(c);
    while (!err && params > budget) {
        int best = -1;
        double best_cost = 0, best_params = 0;
        for (int i = 0; i < n; i++) {
            int64_t from = sig[i].width, to = (from - 1) / r * r; /* onto the grid */
            if (to < min_width)
                continue;
            set_width(&sig[i], to);
            double after = (double)sg_model_param_count(c);
            set_width(&sig[i], from);
            double saved = params - after;
            if (saved <= 0)
                continue;
            double cost = discarded(&sig[i], to) / saved;
            if (best < 0 || cost < best_cost)
                best = i, best_cost = cost, best_params = after;
        }
        if (best < 0) {
            err = sg_fail(SG_EARG, "schedule: every signal at the smallest width and still "
                                   "above the budget of %.0f parameters", budget);
            break;
        }
        set_width(&sig[best], (sig[best].width - 1) / r * r);
        params = best_params;
    }
    free(shares);
    return err;
}
