/* test_kill_resume in make test: the first 3 of its 20 kill moments
 * (about 4 pruning runs' time), so a change that breaks resuming or makes
 * a checkpoint depend on the clock fails in the normal suite. */
#define KILLS 3
#include "tests/test_kill_resume.c"
