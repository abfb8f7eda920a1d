/* bench-train: time one training step (forward, CE + Dice loss, backward,
 * Adam) of an ONNX U-Net on random data and labels, as the trainer runs it.
 * Not part of `make test`; tools/bench.sh runs it beside the PyTorch peer
 * (tools/bench_train_torch.py).
 *
 * usage: bench-train MODEL.onnx --shape B,C,D1[,D2[,D3]] [--steps N]
 *                    [--warmup W] [--threads T] [--seed S]
 *
 * Prints, one "key value" per line (parsed by bench.sh):
 *   step_ms     median wall time of the N timed steps
 *   step_cpu_ms median process CPU time per step (all threads; on a busy,
 *               shared machine this moves less than the wall time)
 *   min_ms      fastest step
 *   loss_first / loss_last   loss of the first and last step
 *   exec_mb     activations, gradients, saved state and scratch
 *   peak_mb     peak resident set of the process (getrusage)
 *   omp_wait_policy  OMP_WAIT_POLICY in effect (passive unless the user
 *               set it: exec_reexec_passive_wait)
 * Data: input ~ N(0,1)-ish (sum of uniforms), labels uniform over the
 * model's output channels, both from a seeded xorshift, the same batch
 * for every step (data loading is not part of the step).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "compressor/onnx/onnx_import.h"
#include "compressor/train/loss.h"
#include "compressor/train/optim.h"
#include "compressor/train/train_exec.h"
#include "runtime/common.h"
#include "runtime/exec.h"

#define MAX_STEPS 1000

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float rng_unit(uint64_t *s)
{
    return (float)(rng_next(s) >> 40) * (1.0f / 16777216.0f);
}

static int parse_shape(const char *s, Shape *out)
{
    memset(out, 0, sizeof *out);
    while (*s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 1 || out->ndim >= SL_MAX_DIMS) return ERR_ARG;
        out->d[out->ndim++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return ERR_ARG;
    }
    return out->ndim >= 3 && out->ndim <= 5 ? 0 : ERR_ARG;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench-train MODEL.onnx --shape B,C,D1[,D2[,D3]] "
               "[--steps N] [--warmup W] [--threads T] [--seed S]\n");
}

/* One step as the trainer runs it; *loss receives the total loss. */
static int train_step(TrainExec *t, Optim *opt, const float *x,
                      const uint8_t *lab, const LossOptions *lo, double *loss)
{
    LossValue lv;
    int rc;
    train_zero_grads(t);
    if ((rc = train_forward(t, x))) return rc;
    if ((rc = train_loss_outputs(t, &lv, lab, NULL, lo))) return rc;
    if ((rc = train_backward(t))) return rc;
    if ((rc = optim_step(opt, train_params(t), train_n_params(t), 1e-3f)))
        return rc;
    *loss = lv.total;
    return 0;
}

int main(int argc, char **argv)
{
    /* OMP_WAIT_POLICY=passive unless set, as the other programs do
     * (bench.sh gives the PyTorch peer the same) */
    exec_reexec_passive_wait(argv);
    const char *model = NULL, *shape_arg = NULL;
    int steps = 5, warmup = 1, threads = 0;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--shape") && v)
            shape_arg = argv[++i];
        else if (!strcmp(a, "--steps") && v)
            steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && v)
            warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && v)
            seed = strtoull(argv[++i], NULL, 10);
        else if (a[0] != '-' && !model)
            model = a;
        else {
            usage(stderr);
            return 2;
        }
    }
    Shape xs;
    if (!model || !shape_arg || parse_shape(shape_arg, &xs) || steps < 1 ||
        steps > MAX_STEPS || warmup < 0) {
        usage(stderr);
        fprintf(stderr,
                "error: bench-train: need a model, --shape with 3 to "
                "5 dims >= 1, and 1 <= --steps <= %d\n",
                MAX_STEPS);
        return 2;
    }
    if (threads > 0) omp_set_num_threads(threads);

    Graph g;
    graph_init(&g);
    TrainExec *t = NULL;
    Optim *opt = NULL;
    float *x = NULL;
    uint8_t *lab = NULL;
    int status = 1;
    OnnxImportOptions io = {NULL, &xs, 0};
    if (onnx_import(model, &io, &g)) goto fail;
    if (train_exec_create(&g, &xs, threads, &t)) goto fail;
    OptimOptions oo;
    optim_options_default(&oo, OPTIM_ADAM);
    if (optim_create(&oo, &opt)) goto fail;

    /* Labels at the input's spatial size, one per voxel and sample. */
    const Shape *ys = train_shape(t, g.outputs[0]);
    int classes = (int)ys->d[1];
    int64_t nx = shape_numel(&xs), nl = xs.d[0];
    for (int i = 2; i < xs.ndim; i++)
        nl *= xs.d[i];
    x = sl_alloc((size_t)nx * sizeof *x);
    lab = sl_alloc((size_t)nl);
    if (!x || !lab) {
        sl_error("bench-train: out of memory for the batch");
        goto fail;
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < nx; i++)
        x[i] = 2.0f * (rng_unit(&s) + rng_unit(&s) + rng_unit(&s) - 1.5f);
    for (int64_t i = 0; i < nl; i++)
        lab[i] = (uint8_t)(rng_next(&s) % (uint64_t)classes);
    LossOptions lo;
    loss_options_default(&lo, xs.ndim - 2);

    double wall[MAX_STEPS], cpu[MAX_STEPS], loss = 0, loss_first = 0;
    for (int i = 0; i < warmup; i++)
        if (train_step(t, opt, x, lab, &lo, &loss)) goto fail;
    for (int i = 0; i < steps; i++) {
        double w0 = now_s(CLOCK_MONOTONIC);
        double c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        if (train_step(t, opt, x, lab, &lo, &loss)) goto fail;
        cpu[i] = 1e3 * (now_s(CLOCK_PROCESS_CPUTIME_ID) - c0);
        wall[i] = 1e3 * (now_s(CLOCK_MONOTONIC) - w0);
        if (i == 0) loss_first = loss;
        fprintf(stderr,
                "bench-train: step %d: %.1f ms (cpu %.1f ms), "
                "loss %.5f\n",
                i + 1, wall[i], cpu[i], loss);
    }
    double best = wall[0];
    for (int i = 1; i < steps; i++)
        best = wall[i] < best ? wall[i] : best;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char buf[96];
    printf("model %s\nshape %s\nthreads %d\nsteps %d\n", model,
           shape_str(&xs, buf, sizeof buf), omp_get_max_threads(), steps);
    const char *wp = getenv("OMP_WAIT_POLICY");
    printf("omp_wait_policy %s\n", wp ? wp : "default");
    printf("step_ms %.1f\nstep_cpu_ms %.1f\nmin_ms %.1f\n",
           sl_median(wall, (size_t)steps), sl_median(cpu, (size_t)steps),
           best);
    printf("loss_first %.6f\nloss_last %.6f\n", loss_first, loss);
    printf("exec_mb %.1f\npeak_mb %.1f\n",
           (double)train_bytes(t) / (1024.0 * 1024.0),
           (double)ru.ru_maxrss / 1024.0);
    status = 0;
fail:
    if (status) fprintf(stderr, "error: bench-train: %s\n", sl_error_last());
    sl_free(lab);
    sl_free(x);
    optim_free(opt);
    train_exec_free(t);
    graph_free(&g);
    return status;
}
