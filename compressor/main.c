/* sauron-compress: everything lives in compress_cli.c so it can be tested. */
#include "compressor/compress_cli.h"
#include "runtime/exec.h"

int main(int argc, char **argv)
{
    /* Training runs thousands of OpenMP barriers per epoch: on a busy
     * machine spinning idle threads cost more than the work (see
     * exec.h; phantom run at load 7 on 2 cores: 10-41 ms per step
     * active, 6 ms passive). */
    exec_reexec_passive_wait(argv);
    return compress_main(argc, argv);
}
