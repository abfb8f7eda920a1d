/* Adam and SGD-Nesterov (PyTorch semantics), poly LR, gradient clipping,
 * per-parameter state keyed by graph value index (see optim.h). */
#include "compressor/train/optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime/common.h"

struct Optim {
    OptimOptions o;
    OptimState *st; /* sorted by value index */
    int n_st, cap_st;
};

void optim_options_default(OptimOptions *o, OptimKind kind)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->momentum = 0.99f;
    o->nesterov = 1;
    if (kind == OPTIM_ADAM) {
        o->lr = 1e-3f;
        o->weight_decay = 1e-5f;
    } else {
        o->lr = 1e-2f;
        o->weight_decay = 3e-5f;
    }
}

/* An Adam step moves each weight by about lr whatever its gradient's
 * scale, so a run's weights can travel about lr x iterations.  Starting
 * from a converged model, short runs need the full rate for the
 * regulariser to pull feature maps together at all (the phantom at 120
 * to 450 iterations pruned a fifth as much at 2e-4), while long runs at
 * the full rate leave the imported model's Dice early and the guard then
 * stops pruning (brain MRI at 5000 iterations: 21% of the FLOPs kept at
 * 1e-3, 10% at 2e-4, better Dice).  Capping the travel at that of
 * OPTIM_ADAM_FULL_RATE_ITERS full-rate steps gives both.  SGD's steps
 * scale with the gradient, so its rate stays fixed. */
float optim_default_lr(OptimKind kind, long long iters)
{
    OptimOptions o;
    optim_options_default(&o, kind);
    if (kind != OPTIM_ADAM || iters <= OPTIM_ADAM_FULL_RATE_ITERS)
        return o.lr;
    return (float)((double)o.lr * OPTIM_ADAM_FULL_RATE_ITERS / (double)iters);
}

int optim_create(const OptimOptions *o, Optim **out)
{
    *out = NULL;
    if (!(o->lr >= 0.0f) || !(o->weight_decay >= 0.0f) ||
        !(o->beta1 >= 0.0f && o->beta1 < 1.0f) ||
        !(o->beta2 >= 0.0f && o->beta2 < 1.0f) || !(o->eps >= 0.0f) ||
        !(o->momentum >= 0.0f) ||
        (o->kind != OPTIM_ADAM && o->kind != OPTIM_SGD)) {
        sl_error("optimiser: invalid options (lr %g, weight decay %g, betas "
                 "%g/%g, momentum %g); use non-negative values, betas < 1",
                 (double)o->lr, (double)o->weight_decay, (double)o->beta1,
                 (double)o->beta2, (double)o->momentum);
        return ERR_ARG;
    }
    Optim *opt = sl_calloc(1, sizeof *opt);
    if (!opt) {
        sl_error("out of memory creating the optimiser");
        return ERR_NOMEM;
    }
    opt->o = *o;
    *out = opt;
    return 0;
}

static void state_free(OptimState *s)
{
    sl_free(s->m);
    sl_free(s->v);
}

void optim_free(Optim *opt)
{
    if (!opt) return;
    for (int i = 0; i < opt->n_st; i++)
        state_free(&opt->st[i]);
    sl_free(opt->st);
    sl_free(opt);
}

const OptimOptions *optim_options(const Optim *opt)
{
    return &opt->o;
}

int optim_n_states(const Optim *opt)
{
    return opt->n_st;
}

OptimState *optim_state(Optim *opt, int i)
{
    return i >= 0 && i < opt->n_st ? &opt->st[i] : NULL;
}

/* Index of the first state with value >= v (binary search). */
static int lower_bound(const Optim *opt, int v)
{
    int lo = 0, hi = opt->n_st;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (opt->st[mid].value < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

OptimState *optim_find(Optim *opt, int value)
{
    int i = lower_bound(opt, value);
    return i < opt->n_st && opt->st[i].value == value ? &opt->st[i] : NULL;
}

/* New zeroed state for parameter p, inserted in value order. */
static OptimState *state_add(Optim *opt, const TrainParam *p)
{
    OptimState s;
    memset(&s, 0, sizeof s);
    s.value = p->value;
    s.shape = p->shape;
    s.numel = p->numel;
    size_t n = (size_t)(p->numel ? p->numel : 1);
    s.m = sl_calloc(n, sizeof(float));
    if (opt->o.kind == OPTIM_ADAM) s.v = sl_calloc(n, sizeof(float));
    if (!s.m || (opt->o.kind == OPTIM_ADAM && !s.v)) goto oom;
    if (opt->n_st == opt->cap_st) {
        int cap = opt->cap_st ? 2 * opt->cap_st : 32;
        OptimState *ns = sl_realloc(opt->st, (size_t)cap * sizeof *ns);
        if (!ns) goto oom;
        opt->st = ns;
        opt->cap_st = cap;
    }
    int i = lower_bound(opt, p->value);
    memmove(&opt->st[i + 1], &opt->st[i],
            (size_t)(opt->n_st - i) * sizeof *opt->st);
    opt->st[i] = s;
    opt->n_st++;
    return &opt->st[i];
oom:
    state_free(&s);
    sl_error("optimiser: out of memory for the state of value %d "
             "(%lld floats)",
             p->value, (long long)p->numel);
    return NULL;
}

/* w, g, m, v [n] */
static void adam_update(float *restrict w, const float *restrict g,
                        float *restrict m, float *restrict v, int64_t n,
                        const OptimOptions *o, float lr, int64_t step)
{
    const float b1 = o->beta1, b2 = o->beta2, wd = o->weight_decay;
    const float c1 = 1.0f - b1, c2 = 1.0f - b2, eps = o->eps;
    /* PyTorch computes the bias corrections in double (Python floats) */
    const double bc1 = 1.0 - pow((double)b1, (double)step);
    const double bc2 = 1.0 - pow((double)b2, (double)step);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        m[i] = m[i] * b1 + c1 * gi;
        v[i] = v[i] * b2 + c2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

/* w, g, buf [n] */
static void sgd_update(float *restrict w, const float *restrict g,
                       float *restrict buf, int64_t n, const OptimOptions *o,
                       float lr, int first)
{
    const float wd = o->weight_decay, mu = o->momentum;
    const int nesterov = o->nesterov;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        if (mu != 0.0f) {
            buf[i] = first ? gi : buf[i] * mu + gi;
            gi = nesterov ? gi + mu * buf[i] : buf[i];
        }
        w[i] -= lr * gi;
    }
}

int optim_step(Optim *opt, const TrainParam *p, int n, float lr)
{
    for (int i = 0; i < n; i++) {
        OptimState *s = optim_find(opt, p[i].value);
        if (!s && !(s = state_add(opt, &p[i]))) return ERR_NOMEM;
        if (s->numel != p[i].numel || !shape_equal(&s->shape, &p[i].shape)) {
            char a[96], b[96];
            sl_error("optimiser: state of value %d has shape %s but the "
                     "parameter is %s; slice the state with the surgery's "
                     "TensorSlice list (optim_slice_all)",
                     p[i].value, shape_str(&s->shape, a, sizeof a),
                     shape_str(&p[i].shape, b, sizeof b));
            return ERR_SHAPE;
        }
        s->step++;
        if (opt->o.kind == OPTIM_ADAM)
            adam_update(p[i].data, p[i].grad, s->m, s->v, s->numel, &opt->o,
                        lr, s->step);
        else
            sgd_update(p[i].data, p[i].grad, s->m, s->numel, &opt->o, lr,
                       s->step == 1);
    }
    return 0;
}

int optim_slice(Optim *opt, const TensorSlice *ts)
{
    OptimState *s = optim_find(opt, ts->value);
    if (!s) return 0;
    char what[64];
    snprintf(what, sizeof what, "optimiser state of value %d", ts->value);
    int rc = tensor_slice_check(&s->shape, ts, what);
    if (rc) return rc;
    Shape sh = s->shape;
    tensor_slice_apply(&s->m, &sh, ts);
    if (s->v) {
        sh = s->shape;
        tensor_slice_apply(&s->v, &sh, ts);
    }
    s->shape = sh;
    s->numel = shape_numel(&sh);
    return 0;
}

int optim_slice_all(Optim *opt, const TensorSlice *ts, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = optim_slice(opt, &ts[i]);
        if (rc) return rc;
    }
    return 0;
}

void optim_remap(Optim *opt, const int *new_index, int n_old)
{
    int w = 0;
    for (int i = 0; i < opt->n_st; i++) {
        OptimState s = opt->st[i];
        int ni = s.value >= 0 && s.value < n_old ? new_index[s.value] : -1;
        if (ni < 0) {
            state_free(&s);
            continue;
        }
        s.value = ni;
        opt->st[w++] = s;
    }
    opt->n_st = w;
    /* keep the value order (surgery renumbering is usually monotonic) */
    for (int i = 1; i < opt->n_st; i++) {
        OptimState s = opt->st[i];
        int j = i;
        while (j > 0 && opt->st[j - 1].value > s.value) {
            opt->st[j] = opt->st[j - 1];
            j--;
        }
        opt->st[j] = s;
    }
}

float optim_poly_lr(float base, int epoch, int epochs)
{
    if (epochs <= 0 || epoch >= epochs) return 0.0f;
    if (epoch <= 0) return base;
    return (float)((double)base *
                   pow(1.0 - (double)epoch / (double)epochs, 0.9));
}

double optim_clip_grad_norm(TrainParam *p, int n, double max_norm)
{
    double sq = 0.0;
    for (int i = 0; i < n; i++) {
        const float *g = p[i].grad;
        for (int64_t j = 0; j < p[i].numel; j++)
            sq += (double)g[j] * (double)g[j];
    }
    double norm = sqrt(sq);
    if (max_norm > 0.0 && norm > max_norm) {
        float coef = (float)(max_norm / (norm + 1e-6));
        for (int i = 0; i < n; i++) {
            float *g = p[i].grad;
            const int64_t count = p[i].numel;
#pragma omp parallel for schedule(static)
            for (int64_t j = 0; j < count; j++)
                g[j] *= coef;
        }
    }
    return norm;
}
