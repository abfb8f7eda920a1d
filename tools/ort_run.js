// Run an ONNX model with ONNX Runtime on one SLTENSOR input (test peer).
//
//   node tools/ort_run.js model.onnx input.sltensor out0.sltensor [out1 ...]
//
// Runs once with one intra-op and one inter-op thread (sequential
// execution), and writes graph output k (in the model's output order) to
// the k-th output path as an SLTENSOR file: "SLTENSOR", u32 version 1,
// u32 ndim, ndim x i64 dims, then float32 data, all little-endian (the
// format of tests/testutil.h load_tensor).  Outputs without a path are
// not written.  Exit 1 with one "error: ort_run: ..." line on failure.
// onnxruntime-node is resolved from the directories in $ORT_NODE_PATH
// (colon-separated; tools/deps.sh test installs it into build/node), then
// the usual module paths.
'use strict';

const fs = require('fs');

function die(msg) {
    process.stderr.write('error: ort_run: ' + msg + '\n');
    process.exit(1);
}

function loadOrt() {
    const ort = require('./ort_load.js')();
    if (!ort)
        die('onnxruntime-node not found (searched ORT_NODE_PATH and the current ' +
        'folder); run "sh tools/deps.sh test"');
    return ort;
}

function readTensor(file) {
    let b;
    try {
        b = fs.readFileSync(file);
    } catch (e) {
        die('cannot read ' + file + ': ' + e.message);
    }
    if (b.length < 16 || b.toString('latin1', 0, 8) !== 'SLTENSOR' ||
        b.readUInt32LE(8) !== 1)
        die(file + ': not an SLTENSOR v1 file');
    const nd = b.readUInt32LE(12);
    if (nd < 1 || nd > 8 || b.length < 16 + 8 * nd) die(file + ': bad rank');
    const dims = [];
    let numel = 1;
    for (let i = 0; i < nd; i++) {
        const d = Number(b.readBigInt64LE(16 + 8 * i));
        if (!(d >= 1 && d <= 1 << 20)) die(file + ': bad dim ' + d);
        dims.push(d);
        numel *= d;
    }
    const off = 16 + 8 * nd;
    if (b.length !== off + 4 * numel) die(file + ': size does not match dims');
    const f = new Float32Array(numel);
    for (let i = 0; i < numel; i++) f[i] = b.readFloatLE(off + 4 * i);
    return { dims, f };
}

function writeTensor(file, dims, data) {
    const off = 16 + 8 * dims.length;
    const b = Buffer.alloc(off + 4 * data.length);
    b.write('SLTENSOR', 0, 'latin1');
    b.writeUInt32LE(1, 8);
    b.writeUInt32LE(dims.length, 12);
    dims.forEach((d, i) => b.writeBigInt64LE(BigInt(d), 16 + 8 * i));
    for (let i = 0; i < data.length; i++) b.writeFloatLE(data[i], off + 4 * i);
    try {
        fs.writeFileSync(file, b);
    } catch (e) {
        die('cannot write ' + file + ': ' + e.message);
    }
}

async function main() {
    const args = process.argv.slice(2);
    if (args.length < 3 || args[0] === '--help')
        die('usage: node tools/ort_run.js model.onnx input.sltensor ' +
            'out0.sltensor [out1.sltensor ...]');
    const ort = loadOrt();
    const x = readTensor(args[1]);
    let sess;
    try {
        sess = await ort.InferenceSession.create(args[0], {
            intraOpNumThreads: 1,
            interOpNumThreads: 1,
            executionMode: 'sequential',
        });
    } catch (e) {
        die('ONNX Runtime cannot load ' + args[0] + ': ' + e.message);
    }
    const feeds = {};
    feeds[sess.inputNames[0]] = new ort.Tensor('float32', x.f, x.dims);
    let res;
    try {
        res = await sess.run(feeds);
    } catch (e) {
        die('ONNX Runtime failed running ' + args[0] + ': ' + e.message);
    }
    const outs = args.slice(2);
    for (let k = 0; k < outs.length && k < sess.outputNames.length; k++) {
        const t = res[sess.outputNames[k]];
        writeTensor(outs[k], t.dims, t.data);
    }
}

main().catch((e) => die(String(e && e.message ? e.message : e)));
