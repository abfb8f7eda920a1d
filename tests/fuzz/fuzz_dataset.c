/* Fuzz target: dataset.json through dataset_open (see fuzz_targets.h). */
#include <stdio.h>
#include <sys/stat.h>

#include "compressor/data/dataset.h"
#include "runtime/common.h"
#include "tests/fuzz/fuzz_targets.h"

/* One case "c" with modalities 0 and 1 in both endings, so a dataset.json
 * that passes its own checks goes on through case discovery. */
static const char *const case_files[] = {
    "imagesTr/c_0000.nii.gz", "imagesTr/c_0001.nii.gz", "labelsTr/c.nii.gz",
    "imagesTr/c_0000.nii",    "imagesTr/c_0001.nii",    "labelsTr/c.nii",
};

int fuzz_dataset(const uint8_t *data, size_t size)
{
    char dir[4096], sub[4096 + 32];
    if (fuzz_mkdtemp(dir, sizeof dir)) return -1;
    int rc = -1;
    snprintf(sub, sizeof sub, "%s/imagesTr", dir);
    if (mkdir(sub, 0700)) goto out;
    snprintf(sub, sizeof sub, "%s/labelsTr", dir);
    if (mkdir(sub, 0700)) goto out;
    for (size_t i = 0; i < sizeof case_files / sizeof *case_files; i++)
        if (fuzz_write(dir, case_files[i], "", 0, 0)) goto out;
    if (fuzz_write(dir, "dataset.json", data, size, 0)) goto out;
    Dataset ds;
    sl_error_reset();
    if (dataset_open(&ds, dir) == 0) dataset_free(&ds);
    rc = 0;
out:
    fuzz_rmtree(dir);
    return rc;
}
