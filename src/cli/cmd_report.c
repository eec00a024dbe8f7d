/* slicegpt-stream report: what a sliced model kept, in words and plots.
 *
 * Reads a sliced model directory (config.json with its "slicegpt" section,
 * eigenvalues.json as the run wrote it) and prints a short summary: the
 * widths, and for each signal the fraction of its variance the chosen
 * width keeps, sum of the d largest eigenvalues over the sum of all (the
 * quantity PCA slicing maximises). Then gnuplot, run as a child with its
 * script on stdin, draws:
 *   PREFIX-spectrum.EXT   each signal's eigenvalue spectrum, one curve per
 *                         layer, the chosen width marked on each
 *   PREFIX-variance.EXT   the fraction of variance kept, per layer
 *   PREFIX-widths.EXT     d_in, d_mid, d_out per layer against D
 *   PREFIX-ppl-size.EXT   given --report files of run or ppl: perplexity
 *                         against the parameters stored */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "json_report.h"
#include "slicegpt.h"

static const char usage[] =
    "usage: slicegpt-stream report DIR [--format png|svg] [--out PREFIX] [REPORT.json ...]\n"
    "Summarises a sliced model directory and plots, with gnuplot (Debian: gnuplot-nox),\n"
    "the eigenvalue spectrum of each signal, the variance kept at the chosen width and\n"
    "the widths per layer; given run or ppl --report files, perplexity against the\n"
    "parameters stored.\n"
    "  DIR                 a directory written by run or the write stage\n"
    "  --format png|svg    image format (default png)\n"
    "  --out PREFIX        plots go to PREFIX-spectrum.png, ... (default DIR/report)\n"
    "  REPORT.json         files written by run --report or ppl --report\n"
    "\n"
    "examples:\n"
    "  examples/default-run.sh && slicegpt-stream report out/smollm2-135m-sliced\n"
    "  slicegpt-stream report out/s25 --out docs/s25 --format svg s20.json s25.json s30.json\n";

/* The signals, in the order the schedule meets them. */
enum { SIGNAL_EMBED, SIGNAL_ATTN, SIGNAL_OUT, N_SIGNALS };
static const char *const sig_names[N_SIGNALS] = {"embeddings", "attention_output", "block_output"};

typedef struct {
    int signal;
    int64_t layer, n, kept;  /* kept: the chosen width */
    double *eig;             /* descending, n values */
    double total, fraction;  /* sum of all; share of the kept ones */
} spectrum;

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* A program in PATH, as execvp would find it. */
static int in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        return 0;
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", *dir ? dir : ".", prog);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

static cJSON *read_json(const char *path)
{
    char *text;
    size_t n;
    int err = sg_read_file(path, (size_t)1 << 30, &text, &n);
    if (err)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    if (!j)
        sg_fail(SG_EFORMAT, "%s: not valid JSON", path);
    return j;
}

/* eigenvalues.json: [{"signal", "layer", "eigenvalues": [...]}, ...] */
static int load_spectra(const char *dir, const sg_model_config *c, spectrum **out, int *count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/eigenvalues.json", dir);
    cJSON *j = read_json(path);
    if (!j)
        return sg_fail(SG_EMISSING, "%s: cannot read it (%s)", path, sg_last_error());
    int n = cJSON_GetArraySize(j), k = 0, err = 0;
    spectrum *s = calloc(n ? n : 1, sizeof *s);
    if (!s || !cJSON_IsArray(j)) {
        cJSON_Delete(j);
        free(s);
        return s ? sg_fail(SG_EFORMAT, "%s: expected a list", path) : -ENOMEM;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        const cJSON *sig = cJSON_GetObjectItemCaseSensitive(e, "signal");
        const cJSON *lay = cJSON_GetObjectItemCaseSensitive(e, "layer");
        const cJSON *val = cJSON_GetObjectItemCaseSensitive(e, "eigenvalues");
        spectrum *t = &s[k];
        t->signal = -1;
        for (int i = 0; i < N_SIGNALS && cJSON_IsString(sig); i++)
            if (!strcmp(sig->valuestring, sig_names[i]))
                t->signal = i;
        if (t->signal < 0 || !cJSON_IsNumber(lay) || !cJSON_IsArray(val) ||
            lay->valuedouble < -1 || lay->valuedouble >= c->n_layers) {
            err = sg_fail(SG_EFORMAT, "%s: entry %d: expected a signal, its layer and eigenvalues",
                          path, k);
            break;
        }
        t->layer = (int64_t)lay->valuedouble;
        t->n = cJSON_GetArraySize(val);
        t->eig = malloc((t->n ? t->n : 1) * sizeof(double));
        if (!t->eig) {
            err = -ENOMEM;
            break;
        }
        int64_t i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, val) t->eig[i++] = cJSON_IsNumber(v) ? v->valuedouble : 0;
        qsort(t->eig, t->n, sizeof(double), cmp_desc);
        t->kept = t->signal == SIGNAL_EMBED  ? c->embed_dim
                  : t->signal == SIGNAL_ATTN ? c->d_mid[t->layer]
                                          : c->d_out[t->layer];
        double kept = 0;
        for (i = 0; i < t->n; i++) {
            double x = t->eig[i] > 0 ? t->eig[i] : 0;
            t->total += x;
            if (i < t->kept)
                kept += x;
        }
        /* a random rotation (the control) records no spectrum: all zero */
        t->fraction = t->total > 0 ? kept / t->total : -1;
        k++;
    }
    cJSON_Delete(j);
    *out = s;
    *count = k;
    if (err) {
        for (int i = 0; i <= k && i < n; i++)
            free(s[i].eig);
        free(s);
    }
    return err;
}

/* One point of a run or ppl report: parameters stored, perplexity, label. */
typedef struct {
    double params, ppl;
    char label[96];
} ppl_point;

static double num(const cJSON *o, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    x = b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
    return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

/* run: the dense model and the sliced one; ppl: the model scored. */
static int load_points(char **files, int n, ppl_point **out, int *count)
{
    ppl_point *p = calloc(2 * n + 1, sizeof *p);
    int k = 0;
    if (!p)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        cJSON *j = read_json(files[i]);
        const cJSON *cmd = j ? cJSON_GetObjectItemCaseSensitive(j, "command") : NULL;
        const cJSON *schema = j ? cJSON_GetObjectItemCaseSensitive(j, "schema") : NULL;
        if (!j || !cJSON_IsString(schema) || strcmp(schema->valuestring, SG_REPORT_SCHEMA) ||
            !cJSON_IsString(cmd)) {
            int err = j ? sg_fail(SG_EFORMAT, "%s: not a slicegpt-stream report", files[i])
                        : sg_fail(SG_EMISSING, "%s: cannot read it (%s)", files[i],
                                  sg_last_error());
            cJSON_Delete(j);
            free(p);
            return err;
        }
        const char *base = strrchr(files[i], '/') ? strrchr(files[i], '/') + 1 : files[i];
        if (!strcmp(cmd->valuestring, "run") && num(j, "perplexity", "sliced") > 0) {
            p[k].params = num(j, "parameters", "dense");
            p[k].ppl = num(j, "perplexity", "dense");
            snprintf(p[k++].label, sizeof p->label, "dense");
            p[k].params = num(j, "parameters", "stored");
            p[k].ppl = num(j, "perplexity", "sliced");
            snprintf(p[k++].label, sizeof p->label, "sparsity %.2f", num(j, "options", "sparsity"));
        } else if (!strcmp(cmd->valuestring, "ppl") && num(j, "perplexity", "perplexity") > 0) {
            p[k].params = num(j, "model", "parameters");
            p[k].ppl = num(j, "perplexity", "perplexity");
            snprintf(p[k++].label, sizeof p->label, "%s", base);
        } else {
            fprintf(stderr, "slicegpt-stream: notice: %s: no perplexity in it; left out\n",
                    files[i]);
        }
        cJSON_Delete(j);
    }
    *out = p;
    *count = k;
    return 0;
}

/* The gnuplot script: data as inline datablocks, then one plot per file. */
static void script(FILE *g, const char *dir, const sg_model_config *c, const spectrum *s, int ns,
                   const ppl_point *pts, int np, const char *fmt, const char *prefix)
{
    if (!strcmp(fmt, "svg"))
        fprintf(g, "set terminal svg size 960,600 noenhanced font 'sans,12' background '#ffffff'\n");
    else
        fprintf(g, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
                   "  set terminal pngcairo size 960,600 noenhanced font 'sans,10'\n"
                   "} else {\n"
                   "  set terminal png size 960,600 noenhanced\n"
                   "}\n");
    fprintf(g, "set grid\nset key outside right\n");
    /* a signal kept in the original basis (embeddings kept: the embeddings
     * and the last block's output) has no spectrum: its panel says so */
    int has[N_SIGNALS] = {0};
    for (int i = 0; i < ns; i++)
        if (s[i].total > 0)
            has[s[i].signal] = 1;
    /* the spectra: per signal, one block (index) per layer, the share of
     * the total variance of each component; long spectra are thinned on
     * a log scale (every component up to 256, then about 1000 more) */
    for (int sig = 0; sig < N_SIGNALS; sig++) {
        fprintf(g, "$spec%d << EOD\n", sig);
        for (int i = 0; i < ns; i++) {
            if (s[i].signal != sig || s[i].total <= 0)
                continue;
            int64_t step = s[i].n > 1256 ? (s[i].n - 256) / 1000 : 1;
            for (int64_t k = 0; k < s[i].n; k++)
                if (s[i].eig[k] > 0 && (k < 256 || (k - 256) % step == 0 || k + 1 == s[i].kept))
                    fprintf(g, "%lld %.6e %lld\n", (long long)k + 1, s[i].eig[k] / s[i].total,
                            (long long)s[i].layer);
            fprintf(g, "\n\n");
        }
        fprintf(g, "EOD\n$cut%d << EOD\n", sig);
        for (int i = 0; i < ns; i++)
            if (s[i].signal == sig && s[i].total > 0 && s[i].kept >= 1 && s[i].kept <= s[i].n &&
                s[i].eig[s[i].kept - 1] > 0)
                fprintf(g, "%lld %.6e %lld\n", (long long)s[i].kept,
                        s[i].eig[s[i].kept - 1] / s[i].total, (long long)s[i].layer);
        fprintf(g, "EOD\n$kept%d << EOD\n", sig);
        for (int i = 0; i < ns; i++)
            if (s[i].signal == sig && s[i].fraction >= 0)
                fprintf(g, "%lld %.6f\n", (long long)s[i].layer, 100 * s[i].fraction);
        fprintf(g, "EOD\n");
    }
    fprintf(g, "$widths << EOD\n");
    for (int64_t l = 0; l < c->n_layers; l++)
        fprintf(g, "%lld %lld %lld %lld\n", (long long)l, (long long)c->d_in[l],
                (long long)c->d_mid[l], (long long)c->d_out[l]);
    fprintf(g, "EOD\n");

    fprintf(g, "set output '%s-spectrum.%s'\n", prefix, fmt);
    fprintf(g, "set multiplot layout 1,3 title 'eigenvalue spectra of %s (share of variance per "
               "component; colour: layer; dot: the last component kept)'\n", dir);
    fprintf(g, "set logscale y\nset xlabel 'component'\n"
               "set cbrange [-1:%lld]\nset palette rgb 33,13,10\nunset colorbox\nunset key\n",
            (long long)c->n_layers - 1);
    fprintf(g, "set format y '%%.0e'\n");
    for (int sig = 0; sig < N_SIGNALS; sig++) {
        fprintf(g, "set title '%s'\n", sig_names[sig]);
        if (sig == N_SIGNALS - 1)
            fprintf(g, "set colorbox\nset cblabel 'layer'\n");
        if (has[sig])
            fprintf(g, "plot $spec%d using 1:2:3 with lines lc palette, "
                       "$cut%d using 1:2:3 with points pt 7 ps 0.6 lc palette\n", sig, sig);
        else
            fprintf(g, "set label 1 'kept: original basis' at graph 0.5,0.5 "
                       "center\nplot [0:1] [1e-3:1] NaN notitle\nunset label 1\n");
    }
    fprintf(g, "unset multiplot\nunset logscale y\nset format y '%%g'\nunset colorbox\n"
               "set key outside right\nunset title\n");

    fprintf(g, "set output '%s-variance.%s'\n", prefix, fmt);
    fprintf(g, "set title 'variance kept at the chosen width, per layer (%s)'\n", dir);
    fprintf(g, "set xlabel 'layer (-1: embeddings)'\nset ylabel 'variance kept (%%)'\n"
               "set xrange [-1.5:%lld.5]\nset yrange [*:100]\n", (long long)c->n_layers - 1);
    static const char *const kept_style[N_SIGNALS] = {
        "using 1:2 with points pt 9 ps 1.5 title 'embeddings'",
        "using 1:2 with linespoints pt 7 title 'attention output'",
        "using 1:2 with linespoints pt 5 title 'block output'"};
    const char *sep = "plot ";
    for (int sig = 0; sig < N_SIGNALS; sig++)
        if (has[sig]) {
            fprintf(g, "%s$kept%d %s", sep, sig, kept_style[sig]);
            sep = ", ";
        }
    fprintf(g, "%s\n", has[0] || has[1] || has[2] ? "" : "plot NaN notitle");

    fprintf(g, "set output '%s-widths.%s'\n", prefix, fmt);
    fprintf(g, "set title 'widths per layer (%s, D = %lld)'\n", dir, (long long)c->dim);
    fprintf(g, "set xlabel 'layer'\nset ylabel 'width'\nset xrange [-0.5:%lld.5]\n"
               "set yrange [0:%lld]\n", (long long)c->n_layers - 1, (long long)(c->dim * 1.1));
    fprintf(g, "plot $widths using 1:2 with steps lw 2 title 'd_in', "
               "$widths using 1:3 with points pt 7 title 'd_mid', "
               "$widths using 1:4 with points pt 5 title 'd_out', "
               "%lld with lines dt 2 lc black title 'D'\n", (long long)c->dim);

    if (np) {
        fprintf(g, "$ppl << EOD\n");
        for (int i = 0; i < np; i++)
            fprintf(g, "%.6f %.6f \"%s\"\n", pts[i].params / 1e6, pts[i].ppl, pts[i].label);
        fprintf(g, "EOD\n");
        fprintf(g, "set output '%s-ppl-size.%s'\n", prefix, fmt);
        fprintf(g, "set title 'perplexity against parameters stored'\n"
                   "set xlabel 'parameters stored (millions)'\nset ylabel 'perplexity'\n"
                   "set autoscale\nset offsets graph 0.1, graph 0.1, graph 0.1, graph 0.1\n"
                   "unset key\n");
        fprintf(g, "plot $ppl using 1:2 with points pt 7 ps 1.5, "
                   "$ppl using 1:2:3 with labels offset 1,1 left\n");
    }
    fprintf(g, "set output\n");
}

/* gnuplot with the script on its stdin; 0 when it exits 0. */
static int run_gnuplot(const char *dir, const sg_model_config *c, const spectrum *s, int ns,
                       const ppl_point *pts, int np, const char *fmt, const char *prefix)
{
    /* a file gnuplot cannot open is an error here, in one line: gnuplot
     * itself would go on and draw that plot on its stdout */
    const char *names[] = {"spectrum", "variance", "widths", "ppl-size"};
    for (int i = 0; i < (np ? 4 : 3); i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s-%s.%s", prefix, names[i], fmt);
        FILE *f = fopen(path, "wb");
        if (!f)
            return sg_fail(-errno, "%s: cannot write: %s", path, strerror(errno));
        fclose(f);
    }
    int fd[2];
    if (pipe(fd) != 0)
        return sg_fail(-errno, "gnuplot: cannot make a pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fd[0]);
        close(fd[1]);
        return sg_fail(-e, "gnuplot: cannot fork: %s", strerror(e));
    }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(fd[0], STDIN_FILENO);
        if (null >= 0)
            dup2(null, STDOUT_FILENO); /* never an image on our stdout */
        close(fd[0]);
        close(fd[1]);
        execlp("gnuplot", "gnuplot", (char *)NULL);
        _exit(127);
    }
    close(fd[0]);
    /* gnuplot may stop reading early (a script error): a write then fails
     * with EPIPE instead of killing us */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    FILE *g = fdopen(fd[1], "w");
    if (g) {
        script(g, dir, c, s, ns, pts, np, fmt, prefix);
        fclose(g);
    } else {
        close(fd[1]);
    }
    signal(SIGPIPE, old);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return sg_fail(SG_EARG, "gnuplot failed (%s %d); its messages are above",
                       WIFEXITED(status) ? "exit status" : "signal",
                       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return 0;
}

static void summary(const char *dir, const sg_model_config *c, double sparsity,
                    const spectrum *s, int ns)
{
    int64_t lo = c->d_in[0], hi = c->d_in[0];
    for (int64_t l = 0; l < c->n_layers; l++) {
        int64_t w[3] = {c->d_in[l], c->d_mid[l], c->d_out[l]};
        for (int k = 0; k < 3; k++) {
            lo = w[k] < lo ? w[k] : lo;
            hi = w[k] > hi ? w[k] : hi;
        }
    }
    printf("%s: %s, D = %lld, %lld layers, sliced at sparsity %.2f\n", dir, sg_arch_name(c->arch),
           (long long)c->dim, (long long)c->n_layers, sparsity);
    printf("widths: embeddings %lld, blocks %lld to %lld, head reads %lld; parameters %lld "
           "stored\n", (long long)c->embed_dim, (long long)lo, (long long)hi,
           (long long)c->head_in_dim, (long long)sg_model_param_count(c));
    printf("variance kept at the chosen width:\n");
    for (int sig = 0; sig < N_SIGNALS; sig++) {
        double sum = 0, min = 2;
        int n = 0;
        int64_t at = -1;
        for (int i = 0; i < ns; i++)
            if (s[i].signal == sig && s[i].fraction >= 0) {
                sum += s[i].fraction;
                n++;
                if (s[i].fraction < min) {
                    min = s[i].fraction;
                    at = s[i].layer;
                }
            }
        if (!n && sig == 0 && c->tied_embeddings)
            printf("  %-17s all of it: kept in the original basis (embeddings kept)\n",
                   sig_names[sig]);
        else if (!n)
            printf("  %-17s no spectrum recorded (a random rotation?)\n", sig_names[sig]);
        else if (sig == SIGNAL_EMBED)
            printf("  %-17s %.2f%%\n", sig_names[sig], 100 * sum / n);
        else
            printf("  %-17s mean %.2f%%, lowest %.2f%% (layer %lld)\n", sig_names[sig],
                   100 * sum / n, 100 * min, (long long)at);
    }
}

int sg_cmd_report(int argc, char **argv)
{
    static const struct option opts[] = {{"format", required_argument, 0, 'f'},
                                         {"out", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *fmt = "png", *prefix = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'f':
            if (strcmp(optarg, "png") && strcmp(optarg, "svg")) {
                fprintf(stderr, "slicegpt-stream: --format: expected png or svg, got '%s'\n",
                        optarg);
                return SG_EXIT_USAGE;
            }
            fmt = optarg;
            break;
        case 'o': prefix = optarg; break;
        case 'h': fputs(usage, stdout); return SG_EXIT_OK;
        default: fputs(usage, stderr); return SG_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    const char *dir = argv[optind];
    /* before anything is printed: the whole answer without gnuplot is one line */
    if (!in_path("gnuplot")) {
        fprintf(stderr, "slicegpt-stream: report: gnuplot is not installed (not in PATH); "
                        "install it (Debian: apt-get install gnuplot-nox)\n");
        return SG_EXIT_FAIL;
    }
    char path[4096], pre[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(pre, sizeof pre, "%s/report", dir);
    sg_model_config c;
    int err = sg_hf_config_load(path, &c);
    if (!err && !c.sliced)
        err = sg_fail(SG_EARG, "%s: not a sliced model (no \"slicegpt\" section; the plain "
                               "models of --method nystrom and --rotation uniform have their "
                               "figures in run --report)", path);
    double sparsity = -1;
    if (!err) {
        cJSON *j = read_json(path);
        sparsity = num(cJSON_GetObjectItemCaseSensitive(j, "slicegpt"), "sparsity", NULL);
        cJSON_Delete(j);
    }
    spectrum *s = NULL;
    int ns = 0, np = 0;
    ppl_point *pts = NULL;
    err = err ? err : load_spectra(dir, &c, &s, &ns);
    err = err ? err : load_points(argv + optind + 1, argc - optind - 1, &pts, &np);
    if (!err) {
        summary(dir, &c, sparsity, s, ns);
        err = run_gnuplot(dir, &c, s, ns, pts, np, fmt, prefix ? prefix : pre);
    }
    if (!err) {
        const char *p = prefix ? prefix : pre;
        printf("plots: %s-spectrum.%s %s-variance.%s %s-widths.%s", p, fmt, p, fmt, p, fmt);
        if (np)
            printf(" %s-ppl-size.%s", p, fmt);
        printf("\n");
    }
    for (int i = 0; i < ns; i++)
        free(s[i].eig);
    free(s);
    free(pts);
    return err ? sg_cli_report(err) : SG_EXIT_OK;
}
