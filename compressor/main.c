/* sauron-compress: everything lives in compress_cli.c so it can be tested. */
#include "compressor/compress_cli.h"

int main(int argc, char **argv)
{
    return compress_main(argc, argv);
}
