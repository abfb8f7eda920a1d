/* libFuzzer driver for one target, chosen at build time with
 * -DFUZZ_ENTRY=fuzz_<name> (see the Makefile's fuzz rules). */
#include "runtime/common.h"
#include "tests/fuzz/fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Refusals are the expected outcome: millions of error lines would
     * only slow the run down. */
    sl_error_quiet(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* -1 is the harness failing (no temporary folder): stop at once
     * rather than report millions of false passes. */
    if (FUZZ_ENTRY(data, size))
        sl_check_failed("harness", __FILE__, __LINE__);
    return 0;
}
