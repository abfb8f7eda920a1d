/* Executor: runs a Graph for one concrete input shape.
 *
 * exec_create infers shapes, plans one arena in which activations reuse
 * memory by liveness (a buffer is free after its last consumer ran), and
 * sizes one scratch area for the largest kernel need.  exec_run then never
 * allocates.  Outputs point into the arena and stay valid until the next
 * exec_run or exec_free.
 */
#ifndef SL_EXEC_H
#define SL_EXEC_H

#include <stddef.h>

#include "graph.h"

typedef struct Executor Executor;

/* g must outlive the executor and must not change while it exists (its
 * activation shapes are overwritten by shape inference; Conv weights run
 * through Winograd are copied, transformed, here, so later changes to
 * them are not seen).  SL_CONV_ALGO=direct|winograd|auto in the
 * environment overrides the per-layer choice (ops/winograd.h).  n_threads <=
 * 0 means all cores (omp_get_num_procs()); on a busy machine that is only
 * fast with the passive wait policy, see exec_reexec_passive_wait.
 * Returns 0 or a negative code (message printed). */
int exec_create(Graph *g, const Shape *input, int n_threads, Executor **out);
/* exec_create for a program that runs one executor on g and nothing else
 * (sauron-run): each weight that only this executor's Winograd layers
 * read is freed from g as soon as its transformed form exists
 * (g->values[w].data becomes NULL), before the activations are
 * allocated, so memory holds one form of those weights, not both.  g can
 * then run through this executor only: another exec_create on g refuses
 * it (the weight is missing), and sslim_write, sauron-inspect or training
 * must not be given it.  Outputs are those of exec_create. */
int exec_create_lean(Graph *g, const Shape *input, int n_threads,
                     Executor **out);
void exec_free(Executor *e);
/* Bytes of the transformed weights this executor holds (Winograd). */
size_t exec_weight_bytes(const Executor *e);

/* input: numel(input shape) floats.  outputs[k] receives a pointer to
 * graph output k (n_outputs entries), borrowed from the executor. */
int exec_run(Executor *e, const float *input, const float **outputs);

const Shape *exec_output_shape(const Executor *e, int k);
/* Bytes of the activation arena plus scratch (the planned peak). */
size_t exec_arena_bytes(const Executor *e);
/* Sum of all activation sizes without reuse (to show what planning saves). */
size_t exec_unplanned_bytes(const Executor *e);

/* Segmentation needs only the argmax over classes, which the logits give
 * as well as their softmax: with skip != 0, later exec_run calls leave
 * graph output 0 as the logits when it is a Softmax over axis 1 computed
 * in place (its logits read by nothing else); the output shape is
 * unchanged.  Returns 1 if runs now skip that Softmax, 0 if not (skip ==
 * 0, or the output is not such a Softmax: it then stays probabilities). */
int exec_set_skip_softmax(Executor *e, int skip);

/* Per-node wall-clock profile (sauron-run --profile).  exec_profile(e, 1)
 * zeroes the counters and times every node of later runs (two clock
 * reads per node); 0 stops.  exec_node_seconds: seconds spent in node i,
 * summed over the profiled runs.  exec_node_label: what ran for node i:
 * its op name, "Conv/direct" or "Conv/winograd" for a Conv (the
 * algorithm chosen at exec_create), "Concat/in-place" for a Concat with
 * nothing to copy (0 seconds: its inputs were written in place), "A+B"
 * when node i ran the node after it fused (that node then has label ""
 * and 0 seconds), or "" for i out of range. */
void exec_profile(Executor *e, int on);
double exec_node_seconds(const Executor *e, int i);
const char *exec_node_label(const Executor *e, int i);

/* For main(), first thing.  If OMP_WAIT_POLICY is unset, set it to
 * "passive" and re-execute the program (/proc/self/exe, same arguments);
 * returns only when the variable was already set (the user's choice is
 * kept) or the re-execution is not possible.
 *
 * Why a re-exec: libgomp's default lets idle threads spin at every
 * barrier, and it reads OMP_WAIT_POLICY once, in its load-time
 * constructor, before main(); no omp_set_* call changes the policy later.
 * Setting the variable from the executable's .preinit_array (run before
 * library constructors) does not work with glibc: the variable is gone
 * again by main(), and a test program of 1000 parallel regions with 1 ms
 * sleeps between them burnt 5.9-7.1 s of CPU with it, as with the default
 * policy (7.5-7.9 s), against 0.02 s with OMP_WAIT_POLICY=passive set by
 * the caller.  What the re-exec buys,
 * measured with /usr/bin/time on `segment -q --threads 2` of the Colin27
 * T1 scan (181 slices, models/default.sslim) at load 15-17 on 2 cores,
 * user+sys CPU seconds: with the re-exec 8.7, 11.3, 11.2 (wall 12-24 s);
 * libgomp's default policy (OMP_WAIT_POLICY set to an invalid value, so
 * no re-exec) 60.1, 52.5 (wall 239, 190 s); OMP_WAIT_POLICY=passive set
 * by the caller 8.8, 8.2.
 *
 * A fully passive wait costs small layers, though: each parallel region
 * then wakes the other thread through the kernel (on a KVM guest, tens of
 * microseconds), more than a 16-channel layer's work.  So the re-exec
 * also sets GOMP_SPINCOUNT to EXEC_SPIN_COUNT (unless it is set): spin
 * that long, then sleep.  slim2d (tools/make_bench_models.py), sauron-run
 * --repeat 300 --threads 2, quiet 2-core AMD EPYC: 3.2-5.0 ms passive,
 * 2.8 ms at 100 spins, 2.3 at 300, 1.6-2.2 at 1000, 1.6 at 10000 (and 2.2
 * fully active).  Loaded by 6 busy processes: segment of Colin27 2.0 s CPU
 * at 0 and 1000 spins, 2.1 at 10000, 2.5 at libgomp's default 300000;
 * slim2d 11 ms at 0 spins, 15 at 1000. */
#define EXEC_SPIN_COUNT "1000"
void exec_reexec_passive_wait(char **argv);

#endif
