# Sauron slim U-Net toolkit.  make | make test | make asan | make bench |
# make install PREFIX=...   Everything is built under $(BUILD)/.

# ---- switches ----
BUILD   ?= build
PREFIX  ?= /usr/local
CC      ?= gcc
OPT     ?= -O2
WERROR  ?= -Werror
SANFLAGS ?=
# Debian's OpenBLAS is not used; this only matters for the PyTorch peers.
export OPENBLAS_CORETYPE ?= Haswell

WARN = -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
       -Wmissing-prototypes -Wpointer-arith -Wcast-qual -Wdouble-promotion
# The runtime is compiled with RT_CPPFLAGS: no -I. (its files include each
# other by relative path), no protobuf path, no $(BUILD)/gen, so a runtime
# file that includes anything from compressor/ fails to compile
# (check-layering proves it).  Everything else gets CPPFLAGS.
NIFTI_INC ?= /usr/include/nifti
RT_CPPFLAGS = $(EXTRA_CPPFLAGS) -isystem $(NIFTI_INC) -D_POSIX_C_SOURCE=200809L \
              -DSL_DATADIR='"$(PREFIX)/share/sauron"' -MMD -MP
CPPFLAGS = -I. -I$(BUILD)/gen $(RT_CPPFLAGS)
CFLAGS  = -std=c11 $(OPT) -g -fopenmp $(WARN) $(WERROR) $(SANFLAGS)
LDFLAGS = -fopenmp $(SANFLAGS)

NIFTI_LIBS = -lnifti2 -lznz -lz -lm
PROTOBUF_CFLAGS := $(shell pkg-config --cflags libprotobuf-c 2>/dev/null)
PROTOBUF_LIBS   := $(shell pkg-config --libs libprotobuf-c 2>/dev/null || echo -lprotobuf-c)
CMOCKA_LIBS     := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
# libpng: segment --overlay pictures (runtime/overlay.c)
PNG_LIBS        := $(shell pkg-config --libs libpng 2>/dev/null || echo -lpng)
ONNX_PROTO ?= /usr/include/onnx/onnx.proto

# ---- sources (explicit lists) ----
RT_OPS = runtime/ops/optable.c runtime/ops/conv.c \
         runtime/ops/conv_transpose.c runtime/ops/gemm.c runtime/ops/norm.c \
         runtime/ops/activation.c runtime/ops/add.c runtime/ops/softmax.c \
         runtime/ops/concat.c runtime/ops/pool.c runtime/ops/resize.c \
         runtime/ops/fused.c runtime/ops/winograd.c
RT_SRC = runtime/common.c runtime/bytes.c runtime/cliopt.c runtime/graph.c runtime/plan.c runtime/exec.c \
         runtime/sslim.c runtime/nifti_io.c runtime/volume.c \
         runtime/segment.c runtime/batch.c runtime/orient.c \
         runtime/resample.c runtime/segment_scan.c runtime/sauron_rt.c runtime/overlay.c \
         runtime/font5x7.c runtime/mirror.c $(RT_OPS)
CMP_SRC = compressor/onnx/onnx_import.c compressor/onnx/onnx_lower.c \
          compressor/onnx/onnx_lower_ops.c compressor/onnx/onnx_layout.c \
          compressor/onnx/onnx_lw.c compressor/onnx/onnx_fold.c \
          compressor/onnx/onnx_ctx.c compressor/onnx/onnx_tensor.c \
          compressor/onnx/onnx_attr.c \
          compressor/sha256.c compressor/compress_cli.c compressor/compress_opts.c $(GRAD_SRC)
GRAD_SRC = compressor/grad/conv_grad.c compressor/grad/conv_transpose_grad.c compressor/grad/norm_grad.c compressor/grad/activation_grad.c compressor/grad/softmax_grad.c compressor/grad/concat_grad.c compressor/grad/pool_grad.c compressor/grad/resize_grad.c
CMP_SRC += compressor/train/slice.c compressor/train/backward_table.c compressor/train/train_exec.c compressor/train/loss.c compressor/train/optim.c
CMP_SRC += compressor/sauron/groups.c compressor/sauron/surgery.c compressor/sauron/cost.c
CMP_SRC += compressor/sauron/distance.c compressor/sauron/threshold.c
CMP_SRC += compressor/sauron/pruner.c compressor/sauron/report.c compressor/sauron/sauron_hooks.c
CMP_SRC += compressor/onnx/onnx_export.c compressor/onnx/onnx_meta.c
CMP_SRC += compressor/data/json.c compressor/data/dataset.c compressor/data/split.c compressor/data/sampler.c compressor/data/augment.c compressor/data/prefetch.c
CMP_SRC += compressor/train/checkpoint.c compressor/train/trainer.c compressor/train/trainer_eval.c compressor/train/trainer_report.c compressor/train/trainer_decision.c compressor/train/decision.c compressor/train/loss_soft.c compressor/train/distill.c
GEN_SRC = $(BUILD)/gen/onnx.pb-c.c

BINS = segment sauron-compress sauron-inspect sauron-run sauron-eval
TESTS = test_common test_graph test_ops test_conv test_exec test_sslim \
        test_onnx test_torch test_nifti test_segment_volume test_segment_lib \
        test_segment_cli test_cli test_grad test_eval
TESTS += test_sauron_distance test_sauron_threshold
TESTS += test_data test_sampler
TESTS += test_train test_loss_optim test_loss_soft test_decision
TESTS += test_trainer test_train_cli
TESTS += test_surgery
TESTS += test_pruner test_cost test_sauron_cli
TESTS += test_onnx_export
TESTS += test_fused
TESTS += test_convert
TESTS += test_peer
TESTS += test_codec test_bytes
TESTS += test_onnx_malformed
TESTS += test_fuzz_replay
TESTS += test_batch
TESTS += test_cliopt
TESTS += test_inputs_untouched
TESTS += test_storage
TESTS += test_orient
TESTS += test_embed
TESTS += test_overlay
TESTS += test_tta
TESTS += test_winograd
# kill -9 and --resume at 3 moments (check-long's test_kill_resume: 20)
TESTS += test_kill_resume_quick

# Fuzz targets (tests/fuzz/): entry functions shared by the libFuzzer
# programs (make fuzz) and test_fuzz_replay (make test).
FUZZ_TARGETS = sslim nifti onnx dataset
FUZZ_SRC = tests/fuzz/fuzz_util.c $(FUZZ_TARGETS:%=tests/fuzz/fuzz_%.c)
FUZZ_OBJ = $(FUZZ_SRC:%.c=$(BUILD)/obj/%.o)
# Tests that need only the runtime library (linked without the
# compressor's; make check-long also runs them on aarch64 under qemu).
RT_TESTS = test_common test_graph test_ops test_conv test_winograd test_fused test_sslim \
           test_nifti test_bytes

RT_OBJ  = $(RT_SRC:%.c=$(BUILD)/obj/%.o)
CMP_OBJ = $(CMP_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/onnx.pb-c.o
RT_LIB  = $(BUILD)/lib/libsauron_rt.a
# The embeddable runtime (runtime/sauron_rt.h): the same sources compiled a
# second time with -fPIC into their own folder, so the programs' objects
# stay non-PIC; the public header alone is copied to $(BUILD)/include.
RT_PIC_OBJ = $(RT_SRC:%.c=$(BUILD)/obj-pic/%.o)
RT_SO   = $(BUILD)/lib/libsauron_rt.so
RT_PC   = $(BUILD)/lib/pkgconfig/sauron-rt.pc
RT_HDR  = $(BUILD)/include/sauron_rt.h
CMP_LIB = $(BUILD)/lib/libsauron_cmp.a
BIN_PATHS  = $(BINS:%=$(BUILD)/bin/%)
MAN_PATHS  = $(BINS:%=$(BUILD)/man/%.1)
TEST_PATHS = $(TESTS:%=$(BUILD)/tests/%)

.SECONDARY:
.PHONY: all deps demo test test-run asan bench bench-quick bench-conv check-long install \
        geom-check \
        clean fixtures format fuzz fuzz-bins check-layering check-arm64
all: $(BIN_PATHS) $(MAN_PATHS) $(RT_SO) $(RT_PC) $(RT_HDR)

deps:
	@sh tools/deps.sh build

# ---- generated protobuf-c code (compressor only) ----
$(BUILD)/gen/onnx.pb-c.c $(BUILD)/gen/onnx.pb-c.h: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)

$(BUILD)/obj/gen/onnx.pb-c.o: $(BUILD)/gen/onnx.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) -g $(SANFLAGS) $(PROTOBUF_CFLAGS) -I$(BUILD)/gen -c $< -o $@

$(CMP_OBJ): | $(BUILD)/gen/onnx.pb-c.h
# Tests that build ONNX models with protobuf-c need the generated header.
$(BUILD)/obj/tests/test_onnx_malformed.o: | $(BUILD)/gen/onnx.pb-c.h

# ---- objects and libraries ----
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PROTOBUF_CFLAGS) $(CFLAGS) -c $< -o $@

# (the shorter stem wins: runtime/ sources take this rule)
$(BUILD)/obj/runtime/%.o: runtime/%.c
	@mkdir -p $(dir $@)
	$(CC) $(RT_CPPFLAGS) $(CFLAGS) -c $< -o $@

# A probe that includes a compressor header and the generated protobuf
# header, compiled with the runtime's flags: it must fail.
check-layering:
	@mkdir -p $(BUILD)/probe/runtime
	@printf '#include "compressor/train/optim.h"\n#include "onnx.pb-c.h"\n' \
	    > $(BUILD)/probe/runtime/probe.c
	@if $(CC) $(RT_CPPFLAGS) $(CFLAGS) -fsyntax-only \
	    $(BUILD)/probe/runtime/probe.c 2>/dev/null; then \
	    echo "layering: runtime objects can include compressor/ headers"; \
	    exit 1; fi
	@echo "layering: runtime objects cannot include compressor/ headers"

$(RT_LIB): $(RT_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/obj-pic/runtime/%.o: runtime/%.c
	@mkdir -p $(dir $@)
	$(CC) $(RT_CPPFLAGS) $(CFLAGS) -fPIC -c $< -o $@

# Only the srt_ symbols are exported (runtime/sauron_rt.map).
$(RT_SO).0: $(RT_PIC_OBJ) runtime/sauron_rt.map
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libsauron_rt.so.0 \
	    -Wl,--version-script,runtime/sauron_rt.map $(LDFLAGS) \
	    $(RT_PIC_OBJ) $(NIFTI_LIBS) $(PNG_LIBS) -o $@
$(RT_SO): $(RT_SO).0
	ln -sf libsauron_rt.so.0 $@

$(RT_HDR): runtime/sauron_rt.h
	@mkdir -p $(dir $@)
	cp $< $@

$(RT_PC): runtime/sauron-rt.pc.in
	@mkdir -p $(dir $@)
	sed 's|@PREFIX@|$(PREFIX)|' $< >$@.tmp && mv $@.tmp $@

# The embedding example sees only $(BUILD)/include (the public header) and
# links the shared library (rpath: the build tree).
$(BUILD)/bin/embed-example: tools/embed_example.c $(RT_HDR) $(RT_SO)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) -g $(WARN) $(WERROR) $(SANFLAGS) \
	    -I$(BUILD)/include $< -L$(BUILD)/lib -lsauron_rt \
	    -Wl,-rpath,$(abspath $(BUILD)/lib) $(SANFLAGS) -o $@
$(BUILD)/tests/test_embed: | $(BUILD)/bin/embed-example $(RT_PC)

$(CMP_LIB): $(CMP_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The runtime binary links the runtime only: the dependency arrow
# compressor -> runtime is enforced here.
$(BUILD)/bin/segment: $(BUILD)/obj/runtime/segment_main.o $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(NIFTI_LIBS) $(PNG_LIBS) -o $@

$(BUILD)/bin/sauron-run: $(BUILD)/obj/tools/sauron_run.o $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(NIFTI_LIBS) -o $@

# Kernel benchmark (not in BINS): build-dir/bin/bench-kernels
$(BUILD)/bin/bench-kernels: $(BUILD)/obj/tools/bench_kernels.o $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(NIFTI_LIBS) -o $@

# Training-step benchmark (not in BINS): build-dir/bin/bench-train
$(BUILD)/bin/bench-train: $(BUILD)/obj/tools/bench_train.o $(CMP_LIB) $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PROTOBUF_LIBS) $(NIFTI_LIBS) -o $@

$(BUILD)/bin/sauron-eval: $(BUILD)/obj/tools/sauron_eval.o $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(NIFTI_LIBS) -o $@

$(BUILD)/bin/sauron-compress: $(BUILD)/obj/compressor/main.o $(CMP_LIB) $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PROTOBUF_LIBS) $(NIFTI_LIBS) -o $@

$(BUILD)/bin/sauron-inspect: $(BUILD)/obj/tools/sauron_inspect.o $(CMP_LIB) $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PROTOBUF_LIBS) $(NIFTI_LIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/obj/tests/testutil.o $(CMP_LIB) $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PROTOBUF_LIBS) $(NIFTI_LIBS) $(PNG_LIBS) $(CMOCKA_LIBS) -o $@
$(RT_TESTS:%=$(BUILD)/tests/%): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o \
        $(BUILD)/obj/tests/testutil.o $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(NIFTI_LIBS) $(PNG_LIBS) $(CMOCKA_LIBS) -o $@
$(BUILD)/tests/test_peer $(BUILD)/tests/test_torch_segment: $(BUILD)/obj/tests/peercheck.o
$(BUILD)/tests/test_segment_lib $(BUILD)/tests/test_segment_cli $(BUILD)/tests/test_tta $(BUILD)/tests/test_trainer: $(BUILD)/obj/tests/segmodel.o
$(BUILD)/tests/test_batch $(BUILD)/tests/test_soak $(BUILD)/tests/test_dicom $(BUILD)/tests/test_storage $(BUILD)/tests/test_overlay $(BUILD)/tests/test_tta: $(BUILD)/obj/tests/batchcheck.o
# (its own rule: the fuzz objects must come before the libraries)
$(BUILD)/tests/test_fuzz_replay: $(BUILD)/obj/tests/test_fuzz_replay.o \
        $(BUILD)/obj/tests/testutil.o $(FUZZ_OBJ) $(CMP_LIB) $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PROTOBUF_LIBS) $(NIFTI_LIBS) $(PNG_LIBS) $(CMOCKA_LIBS) -o $@

# Each program prints its man page from its option table (hidden --man),
# the same table its --help and its parser use.
$(BUILD)/man/%.1: $(BUILD)/bin/%
	@mkdir -p $(dir $@)
	$< --man >$@.tmp && mv $@.tmp $@

# ---- the README's run command: segment the real Colin27 T1 scan ----
DEMO_SCAN ?= /usr/share/mricron/templates/ch2.nii.gz
demo:
	@sh tools/deps.sh test
	@$(MAKE) --no-print-directory all
	@mkdir -p $(BUILD)/demo
	cp $(DEMO_SCAN) $(BUILD)/demo/scan.nii.gz
	$(BUILD)/bin/segment --force $(BUILD)/demo/scan.nii.gz
	@echo "label map: $(BUILD)/demo/scan_seg.nii.gz"

# ---- tests ----
# test-run builds and runs everything in $(BUILD); test also installs deps.
test:
	@sh tools/deps.sh test
	@$(MAKE) --no-print-directory test-run

test-run: $(BIN_PATHS) $(TEST_PATHS) check-layering
	@BUILD=$(BUILD) sh tests/run_all.sh $(TESTS)

asan:
	@sh tools/deps.sh test
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	    SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    test-run

# ---- fuzzing (long; not part of test) ----
# make fuzz SECONDS=N [CPU=M]: builds each target with clang's libFuzzer, ASan and
# UBSan in $(FUZZ_BUILD), then runs each for N seconds (nice 19) on its
# committed corpus plus what earlier runs found (docs/FUZZING.md).
# clang rejects the GCC target pragmas of runtime/ops/vecmath.h, so the
# whole fuzz build is compiled for AVX2 (the machines here have it); its
# warnings differ from gcc's and are not errors there.
FUZZ_BUILD ?= build-fuzz
SECONDS ?= 60
# CPU=N: rerun each target (SECONDS of wall time a run) until it has used
# N CPU seconds (docs/FUZZING.md)
CPU ?= 0
# FUZZ_RUN=T: run only these targets (all are built: fuzz_util.c names them all)
FUZZ_RUN ?= $(FUZZ_TARGETS)
FUZZ_SAN = -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=all
fuzz:
	@sh tools/deps.sh fuzz
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang \
	    OPT="-O1 -mavx2 -mfma" WERROR= \
	    SANFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" fuzz-bins
	@BUILD=$(FUZZ_BUILD) SECONDS=$(SECONDS) CPU=$(CPU) sh tests/fuzz/run.sh \
	    $(FUZZ_RUN)

fuzz-bins: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/libfuzzer_main.c tests/fuzz/fuzz_targets.h \
                      $(FUZZ_OBJ) $(CMP_LIB) $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(CPPFLAGS)) $(CFLAGS) -fsanitize=fuzzer \
	    -DFUZZ_ENTRY=fuzz_$* $(filter %.c %.o %.a,$^) \
	    $(PROTOBUF_LIBS) $(NIFTI_LIBS) -o $@

# ---- benchmarks (long; not part of test) ----
# bench: synthetic models (tools/bench.sh), then the real-data benchmark
# (tools/bench_real.sh: trains the baselines and runs Sauron when its cache
# in $(BUILD)/real is empty: hours); bench-quick trains nothing (< 15 min).
bench: all
	@BUILD=$(BUILD) sh tools/deps.sh bench
	@BUILD=$(BUILD) sh tools/bench.sh; s=$$?; BUILD=$(BUILD) sh tools/bench_real.sh || exit $$?; \
	    /usr/bin/python3 tools/geom_check.py --segment $(BUILD)/bin/segment --work $(BUILD)/geom || exit $$?; exit $$s

# The same head stored six ways (tools/geom_check.py): brain Dice of the
# default model on each, CPU time and peak memory of segment (~10 min).
geom-check: all
	@BUILD=$(BUILD) sh tools/deps.sh bench
	/usr/bin/python3 tools/geom_check.py --segment $(BUILD)/bin/segment --work $(BUILD)/geom

# Each convolution algorithm timed on 2D layers, and the cost model's pick
# (tools/bench_conv.c; about a minute on one core).
bench-conv: $(BUILD)/bench/bench_conv
	$(BUILD)/bench/bench_conv

$(BUILD)/bench/bench_conv: tools/bench_conv.c $(RT_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(RT_CPPFLAGS)) -I. $(CFLAGS) $< $(RT_LIB) \
	    $(NIFTI_LIBS) -lpng16 $(LDFLAGS) -o $@

bench-quick: all
	@BUILD=$(BUILD) sh tools/deps.sh bench
	@BUILD=$(BUILD) QUICK=1 sh tools/bench.sh; s=$$?; BUILD=$(BUILD) QUICK=1 sh tools/bench_real.sh || exit $$?; exit $$s

# check-long: tests of the benchmark scripts (torch_segment.py, plot_run.py,
# bench_real.sh on a tiny phantom); they need the bench deps, so not in test.
# test_soak: one segment process over 500 scans (RSS, descriptors; under
# nice -n 19); test_kill_resume: kill -9 at 20 seeded moments of a pruning
# run, each resumed, byte-identical to the uninterrupted run; test_dicom:
# NIfTI -> DICOM (pydicom) -> dcm2niix -> segment.
LONG_TESTS = test_torch_segment test_bench_real test_soak test_dicom test_kill_resume
check-long:
	@BUILD=$(BUILD) sh tools/deps.sh check-long
	@$(MAKE) --no-print-directory $(BIN_PATHS) $(LONG_TESTS:%=$(BUILD)/tests/%)
	@BUILD=$(BUILD) sh tests/run_all.sh $(LONG_TESTS)
	@$(MAKE) --no-print-directory check-arm64

# The runtime and RT_TESTS cross-compiled with Debian's gcc-aarch64-linux-gnu
# (objects in $(BUILD)/arm64) against the arm64 libnifti2, zlib and cmocka
# unpacked by tools/arm64_sysroot.sh, then run under qemu-user.  Off x86
# the kernels take their portable paths (runtime/ops/isa.h).
ARM64_CC ?= aarch64-linux-gnu-gcc
ARM64_SYSROOT = $(abspath $(BUILD))/arm64-sysroot
# (zlib1g puts libz.so.1 in /lib, the others in /usr/lib)
ARM64_LIBDIR = $(ARM64_SYSROOT)/usr/lib/aarch64-linux-gnu:$(ARM64_SYSROOT)/lib/aarch64-linux-gnu
check-arm64:
	@sh tools/arm64_sysroot.sh $(ARM64_SYSROOT)
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/arm64 CC=$(ARM64_CC) \
	    PROTOBUF_CFLAGS= NIFTI_INC=$(ARM64_SYSROOT)/usr/include/nifti \
	    CMOCKA_LIBS=-lcmocka \
	    LDFLAGS="-fopenmp -L$(ARM64_SYSROOT)/usr/lib/aarch64-linux-gnu \
	    -Wl,-rpath-link,$(ARM64_LIBDIR)" \
	    EXTRA_CPPFLAGS="-isystem $(ARM64_SYSROOT)/usr/include" \
	    $(BUILD)/arm64/lib/libsauron_rt.a $(RT_TESTS:%=$(BUILD)/arm64/tests/%)
	@BUILD=$(BUILD)/arm64 SL_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu \
	    -E LD_LIBRARY_PATH=$(ARM64_LIBDIR)" sh tests/run_all.sh $(RT_TESTS)

# Fixtures are committed; this regenerates them (needs python3-torch).
fixtures:
	@sh tools/deps.sh bench
	/usr/bin/python3 tools/make_fixtures.py tests/fixtures
	/usr/bin/python3 tools/make_grad_fixtures.py tests/fixtures
	/usr/bin/python3 tools/make_sauron_fixtures.py tests/fixtures/sauron
	/usr/bin/python3 tools/make_onnx_fixtures.py tests/fixtures/onnx

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/sauron/models
	install -m 755 $(BIN_PATHS) $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(MAN_PATHS) $(DESTDIR)$(PREFIX)/share/man/man1/
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(RT_HDR) $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(RT_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(RT_SO).0 $(DESTDIR)$(PREFIX)/lib/libsauron_rt.so.0
	ln -sf libsauron_rt.so.0 $(DESTDIR)$(PREFIX)/lib/libsauron_rt.so
	# (written here: the build tree's copy may carry another PREFIX)
	sed 's|@PREFIX@|$(PREFIX)|' runtime/sauron-rt.pc.in \
	    >$(DESTDIR)$(PREFIX)/lib/pkgconfig/sauron-rt.pc
	if ls models/*.sslim >/dev/null 2>&1; then \
	    install -m 644 models/*.sslim models/*.md $(DESTDIR)$(PREFIX)/share/sauron/models/; fi

# Every folder holding C sources (git ls-files '*.c' '*.h').
FORMAT_SRC = $(wildcard runtime/*.[ch] runtime/ops/*.[ch] compressor/*.[ch] \
             compressor/*/*.[ch] tools/*.[ch] tests/*.[ch] tests/*/*.[ch])
format:
	clang-format -i $(FORMAT_SRC)

clean:
	rm -rf $(BUILD) build-asan $(FUZZ_BUILD)

-include $(wildcard $(BUILD)/obj/*/*.d $(BUILD)/obj/*/*/*.d $(BUILD)/obj-pic/*/*.d $(BUILD)/obj-pic/*/*/*.d)
