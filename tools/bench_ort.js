// ONNX Runtime peer for the benchmark (tools/bench.sh).
//
//   node tools/bench_ort.js model.onnx input.bin 1,1,256,256 \
//        [--runs N] [--warmup W] [--threads 2] [--out out.bin] [--compare ours.bin]
//
// Runs the model N times (after W untimed warm-up runs, default 0: the
// first run is timed like sauron-run's) with `threads` intra-op threads
// (one inter-op thread, sequential execution, all graph optimisations),
// and prints machine-readable lines:
//   ort_ms <median latency ms>
//   ort_peak_mb <peak RSS of this process, MB (VmHWM)>
//   ort_base_mb <RSS before the session was created, MB: node itself>
//   max_abs_diff <d> scale <s>   (with --compare: vs our raw float32 output)
// --out writes ORT's first output as raw little-endian float32.
//
//   node tools/bench_ort.js --fixtures tests/fixtures/torch
// checks instead that ONNX Runtime reproduces every committed PyTorch
// fixture output (<name>.onnx, .in.f32, .out*.f32) within 1e-4 of the
// output scale, so the PyTorch references the tests use also stand for ORT;
// prints one line per output and exits 1 on a mismatch.
// onnxruntime-node is resolved from $ORT_NODE_PATH (tools/bench.sh installs
// it there) or the usual module paths.
'use strict';

const fs = require('fs');
const path = require('path');

function die(msg) {
    process.stderr.write('error: bench_ort: ' + msg + '\n');
    process.exit(1);
}

function loadOrt() {
    const ort = require('./ort_load.js')();
    if (!ort)
        die('onnxruntime-node not found; run tools/bench.sh, which installs it');
    return ort;
}

function vmKb(field) {
    const m = fs.readFileSync('/proc/self/status', 'utf8')
        .match(new RegExp('^' + field + ':\\s+(\\d+) kB', 'm'));
    return m ? Number(m[1]) : NaN;
}

function readFloats(file) {
    const b = fs.readFileSync(file);
    if (b.length % 4 !== 0) die(file + ': size is not a multiple of 4 bytes');
    const f = new Float32Array(b.length / 4);
    for (let i = 0; i < f.length; i++) f[i] = b.readFloatLE(4 * i);
    return f;
}

function readTensor(file) {
    const b = fs.readFileSync(file);
    if (b.length < 16 || b.toString('latin1', 0, 8) !== 'SLTENSOR')
        die(file + ': not an SLTENSOR file');
    const nd = b.readUInt32LE(12);
    const dims = [];
    for (let i = 0; i < nd; i++) dims.push(Number(b.readBigInt64LE(16 + 8 * i)));
    const off = 16 + 8 * nd;
    const f = new Float32Array((b.length - off) / 4);
    for (let i = 0; i < f.length; i++) f[i] = b.readFloatLE(off + 4 * i);
    return { dims, f };
}

async function checkFixtures(dir) {
    const ort = loadOrt();
    const names = fs.readdirSync(dir).filter((n) => n.endsWith('.onnx')).sort();
    let bad = 0;
    for (const file of names) {
        const name = file.slice(0, -5);
        const sess = await ort.InferenceSession.create(path.join(dir, file));
        const x = readTensor(path.join(dir, name + '.in.f32'));
        const feeds = {};
        feeds[sess.inputNames[0]] = new ort.Tensor('float32', x.f, x.dims);
        const out = await sess.run(feeds);
        sess.outputNames.forEach((on, k) => {
            const ref = readTensor(path.join(dir, name + (k ? '.out' + k : '.out') + '.f32'));
            const y = out[on].data;
            let d = y.length === ref.f.length ? 0 : Infinity, s = 0;
            for (let i = 0; i < y.length && d !== Infinity; i++) {
                d = Math.max(d, Math.abs(y[i] - ref.f[i]));
                s = Math.max(s, Math.abs(ref.f[i]));
            }
            const ok = d <= 1e-4 * s;
            if (!ok) bad++;
            console.log(name + ' ' + on + ' max_abs_diff ' + d.toExponential(2) +
                        (ok ? ' ok' : ' MISMATCH'));
        });
    }
    if (bad) die(bad + ' fixture output(s) differ between ONNX Runtime and PyTorch');
}

async function main() {
    const a = process.argv.slice(2);
    if (a[0] === '--fixtures') return checkFixtures(a[1] || 'tests/fixtures/torch');
    const pos = [];
    const opt = { runs: 10, warmup: 0, threads: 2, out: null, compare: null };
    for (let i = 0; i < a.length; i++) {
        if (a[i] === '--runs') opt.runs = Number(a[++i]);
        else if (a[i] === '--warmup') opt.warmup = Number(a[++i]);
        else if (a[i] === '--threads') opt.threads = Number(a[++i]);
        else if (a[i] === '--out') opt.out = a[++i];
        else if (a[i] === '--compare') opt.compare = a[++i];
        else pos.push(a[i]);
    }
    if (pos.length !== 3 || !(opt.runs >= 1))
        die('usage: bench_ort.js model.onnx input.bin N,C,... [--runs N] ' +
            '[--threads T] [--out f] [--compare f]');
    const [model, inFile, shapeStr] = pos;
    const dims = shapeStr.split(',').map(Number);
    const x = readFloats(inFile);
    if (dims.reduce((p, d) => p * d, 1) !== x.length)
        die(inFile + ': ' + x.length + ' floats do not match shape ' + shapeStr);

    const ort = loadOrt();
    const baseKb = vmKb('VmRSS');
    const sess = await ort.InferenceSession.create(path.resolve(model), {
        intraOpNumThreads: opt.threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
    });
    const feeds = {};
    feeds[sess.inputNames[0]] = new ort.Tensor('float32', x, dims);
    let out = null;
    for (let r = 0; r < opt.warmup; r++) out = await sess.run(feeds);
    const times = [];
    for (let r = 0; r < opt.runs; r++) {
        const t0 = process.hrtime.bigint();
        out = await sess.run(feeds);
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((p, q) => p - q);
    const n = times.length;
    const median = n % 2 ? times[(n - 1) / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
    const y = out[sess.outputNames[0]].data;
    console.log('ort_ms ' + median.toFixed(2));
    console.log('ort_peak_mb ' + (vmKb('VmHWM') / 1024).toFixed(1));
    console.log('ort_base_mb ' + (baseKb / 1024).toFixed(1));
    if (opt.out) {
        const b = Buffer.alloc(4 * y.length);
        for (let i = 0; i < y.length; i++) b.writeFloatLE(y[i], 4 * i);
        fs.writeFileSync(opt.out, b);
    }
    if (opt.compare) {
        const o = readFloats(opt.compare);
        if (o.length !== y.length)
            die(opt.compare + ': ' + o.length + ' floats, ORT gave ' + y.length);
        let d = 0, s = 0;
        for (let i = 0; i < y.length; i++) {
            d = Math.max(d, Math.abs(o[i] - y[i]));
            s = Math.max(s, Math.abs(y[i]));
        }
        console.log('max_abs_diff ' + d.toExponential(3) + ' scale ' + s.toExponential(3));
    }
}

main().catch((e) => die(String(e && e.message ? e.message : e).split('\n')[0]));
