// Segment a whole NIfTI volume with a 2D U-Net ONNX model in ONNX Runtime,
// the way our `segment` does (bench peer: same scan, same model, same
// label map).
//
//   node tools/ort_segment.js MODEL.onnx scan.nii.gz out_labels.nii.gz
//        [--threads N] [--batch B] [--repeat R] [--force] [--check OURS.nii.gz]
//
// Pipeline (runtime/segment.c, volume.c, nifti_io.c): voxels to float32
// with scl_slope/scl_inter applied as libnifti + nifti_io.c do; the model's
// sauron.* metadata_props (compressor/onnx/onnx_meta.c) or, without them,
// segment's defaults (z-score, nnunet order, slicing axis 2); z-score over
// all voxels in double (population sd, floor 1e-8); slices padded at the
// high end with zeros (after normalisation) to the smallest size the
// network accepts; batches of B slices, a short last batch zero-filled;
// argmax over classes, first class wins ties, NaN scores skipped; a uint8
// (int16 above 255 classes) label NIfTI with the scan's geometry written
// to a temporary file and renamed.
//
// Differences from segment: ONNX Runtime computes the model's final
// Softmax (segment skips it and takes the argmax of the logits), so voxels
// whose class probabilities round to the same float32 can tie here and not
// there.  Sizes are probed by running the network on small inputs (segment
// uses shape inference).
//
// stdout: "volume_ms <median> runs <R> load_ms <median> peak_rss_mb <MB>
// base_rss_mb <MB>" where volume_ms is the whole pipeline (read, session
// creation, normalise, all slices, argmax, write), load_ms its session
// creation part, base_rss_mb the RSS before the first model load and
// peak_rss_mb VmHWM at the end; with --check also "agree <fraction>
// differ <n> of <voxels>" against a label map of the same scan.  ONNX
// Runtime keeps its own thread pool settings (it does not use OpenMP).
// Exit 1 with one "error: ort_segment: ..." line on failure.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const TOOL = 'ort_segment';
const DEFAULT_THREADS = 2;
const DEFAULT_BATCH = 4; // SEG_DEFAULT_BATCH in runtime/segment.c
const MAX_PROBE = 2048; // SEG_MAX_PROBE
const PROBE_SPAN = 1024; // graph_valid_size tries want .. want + 1024

class ToolError extends Error {}
function fail(msg) {
    throw new ToolError(msg);
}

function loadOrt() {
    const ort = require('./ort_load.js')();
    if (!ort)
        fail('onnxruntime-node not found (searched ORT_NODE_PATH and the ' +
        'current folder); run "sh tools/deps.sh test"');
    return ort;
}

function parseArgs(argv) {
    const a = { threads: DEFAULT_THREADS, batch: DEFAULT_BATCH, repeat: 1,
        force: false, check: null, pos: [] };
    const intOpt = (name, v) => {
        if (v === undefined || !/^[0-9]+$/.test(v) || +v < 1 || +v > 4096)
            fail(name + ' needs an integer 1..4096, got ' + v);
        return +v;
    };
    for (let i = 0; i < argv.length; i++) {
        const s = argv[i];
        if (s === '--threads') a.threads = intOpt(s, argv[++i]);
        else if (s === '--batch') a.batch = intOpt(s, argv[++i]);
        else if (s === '--repeat') a.repeat = intOpt(s, argv[++i]);
        else if (s === '--force') a.force = true;
        else if (s === '--check') {
            a.check = argv[++i];
            if (!a.check) fail('--check needs a label map');
        } else if (s.startsWith('--')) fail('unknown option ' + s);
        else a.pos.push(s);
    }
    if (a.pos.length !== 3)
        fail('usage: node tools/ort_segment.js MODEL.onnx scan.nii.gz ' +
            'out_labels.nii.gz [--threads N] [--batch B] [--repeat R] ' +
            '[--force] [--check OURS.nii.gz]');
    return a;
}

// ---- NIfTI ----

// [name, offset, type, count]; types: i8/u8 chars, i16, i32, i64, f32, f64
const N1_FIELDS = [
    ['sizeof_hdr', 0, 'i32', 1], ['data_type', 4, 'u8', 10],
    ['db_name', 14, 'u8', 18], ['extents', 32, 'i32', 1],
    ['session_error', 36, 'i16', 1], ['regular', 38, 'u8', 1],
    ['dim_info', 39, 'u8', 1], ['dim', 40, 'i16', 8],
    ['intent_p1', 56, 'f32', 1], ['intent_p2', 60, 'f32', 1],
    ['intent_p3', 64, 'f32', 1], ['intent_code', 68, 'i16', 1],
    ['datatype', 70, 'i16', 1], ['bitpix', 72, 'i16', 1],
    ['slice_start', 74, 'i16', 1], ['pixdim', 76, 'f32', 8],
    ['vox_offset', 108, 'f32', 1], ['scl_slope', 112, 'f32', 1],
    ['scl_inter', 116, 'f32', 1], ['slice_end', 120, 'i16', 1],
    ['slice_code', 122, 'u8', 1], ['xyzt_units', 123, 'u8', 1],
    ['cal_max', 124, 'f32', 1], ['cal_min', 128, 'f32', 1],
    ['slice_duration', 132, 'f32', 1], ['toffset', 136, 'f32', 1],
    ['glmax', 140, 'i32', 1], ['glmin', 144, 'i32', 1],
    ['descrip', 148, 'u8', 80], ['aux_file', 228, 'u8', 24],
    ['qform_code', 252, 'i16', 1], ['sform_code', 254, 'i16', 1],
    ['quatern', 256, 'f32', 3], ['qoffset', 268, 'f32', 3],
    ['srow_x', 280, 'f32', 4], ['srow_y', 296, 'f32', 4],
    ['srow_z', 312, 'f32', 4], ['intent_name', 328, 'u8', 16],
    ['magic', 344, 'u8', 4],
];
const N2_FIELDS = [
    ['sizeof_hdr', 0, 'i32', 1], ['magic', 4, 'u8', 8],
    ['datatype', 12, 'i16', 1], ['bitpix', 14, 'i16', 1],
    ['dim', 16, 'i64', 8], ['intent_p1', 80, 'f64', 1],
    ['intent_p2', 88, 'f64', 1], ['intent_p3', 96, 'f64', 1],
    ['pixdim', 104, 'f64', 8], ['vox_offset', 168, 'i64', 1],
    ['scl_slope', 176, 'f64', 1], ['scl_inter', 184, 'f64', 1],
    ['cal_max', 192, 'f64', 1], ['cal_min', 200, 'f64', 1],
    ['slice_duration', 208, 'f64', 1], ['toffset', 216, 'f64', 1],
    ['slice_start', 224, 'i64', 1], ['slice_end', 232, 'i64', 1],
    ['descrip', 240, 'u8', 80], ['aux_file', 320, 'u8', 24],
    ['qform_code', 344, 'i32', 1], ['sform_code', 348, 'i32', 1],
    ['quatern', 352, 'f64', 3], ['qoffset', 376, 'f64', 3],
    ['srow_x', 400, 'f64', 4], ['srow_y', 432, 'f64', 4],
    ['srow_z', 464, 'f64', 4], ['slice_code', 496, 'i32', 1],
    ['xyzt_units', 500, 'i32', 1], ['intent_code', 504, 'i32', 1],
    ['intent_name', 508, 'u8', 16], ['dim_info', 524, 'u8', 1],
    ['unused_str', 525, 'u8', 15],
];
const TYPE_SIZE = { u8: 1, i16: 2, i32: 4, i64: 8, f32: 4, f64: 8 };

function getField(dv, off, type, le) {
    switch (type) {
    case 'u8': return dv.getUint8(off);
    case 'i16': return dv.getInt16(off, le);
    case 'i32': return dv.getInt32(off, le);
    case 'i64': return Number(dv.getBigInt64(off, le));
    case 'f32': return dv.getFloat32(off, le);
    default: return dv.getFloat64(off, le);
    }
}

function setField(dv, off, type, v) {
    switch (type) {
    case 'u8': dv.setUint8(off, v); break;
    case 'i16': dv.setInt16(off, v, true); break;
    case 'i32': dv.setInt32(off, v, true); break;
    case 'i64': dv.setBigInt64(off, BigInt(Math.trunc(v)), true); break;
    case 'f32': dv.setFloat32(off, v, true); break;
    default: dv.setFloat64(off, v, true);
    }
}

function decodeHeader(dv, fields, le) {
    const h = {};
    for (const [name, off, type, n] of fields) {
        const vals = [];
        for (let k = 0; k < n; k++)
            vals.push(getField(dv, off + k * TYPE_SIZE[type], type, le));
        h[name] = n === 1 ? vals[0] : vals;
    }
    return h;
}

function encodeHeader(h, fields, size) {
    const b = Buffer.alloc(size);
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    for (const [name, off, type, n] of fields) {
        const v = h[name];
        for (let k = 0; k < n; k++)
            setField(dv, off + k * TYPE_SIZE[type], type, n === 1 ? v : v[k]);
    }
    return b;
}

// datatype code -> [bytes, reader(dv, off, le)]
const DATATYPES = {
    2: [1, (dv, o) => dv.getUint8(o)],
    256: [1, (dv, o) => dv.getInt8(o)],
    4: [2, (dv, o, le) => dv.getInt16(o, le)],
    512: [2, (dv, o, le) => dv.getUint16(o, le)],
    8: [4, (dv, o, le) => dv.getInt32(o, le)],
    768: [4, (dv, o, le) => dv.getUint32(o, le)],
    1024: [8, (dv, o, le) => Number(dv.getBigInt64(o, le))],
    1280: [8, (dv, o, le) => Number(dv.getBigUint64(o, le))],
    16: [4, (dv, o, le) => dv.getFloat32(o, le)],
    64: [8, (dv, o, le) => dv.getFloat64(o, le)],
};

function strField(bytes) {
    let s = '';
    for (const c of bytes) {
        if (!c) break;
        s += String.fromCharCode(c);
    }
    return s;
}

// -> { version, hdr, dim: [nx, ny, nz], nMod, data: Float32Array [m][z][y][x] }
function readNifti(file) {
    let b;
    try {
        b = fs.readFileSync(file);
    } catch (e) {
        fail('cannot read ' + file + ': ' + e.message);
    }
    if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) {
        try {
            b = zlib.gunzipSync(b);
        } catch (e) {
            fail(file + ': cannot decompress (' + e.message + '); the file ' +
                'is truncated or corrupt');
        }
    }
    if (b.length < 348) fail(file + ': too short for a NIfTI header');
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    let le;
    let version;
    for (const [sz, ver] of [[348, 1], [540, 2]]) {
        if (dv.getInt32(0, true) === sz) [le, version] = [true, ver];
        else if (dv.getInt32(0, false) === sz) [le, version] = [false, ver];
        if (version) break;
    }
    if (!version || b.length < (version === 1 ? 348 : 540))
        fail(file + ' is not a NIfTI-1/NIfTI-2 file (bad header); give a ' +
            '.nii or .nii.gz scan');
    const h = decodeHeader(dv, version === 1 ? N1_FIELDS : N2_FIELDS, le);
    const magic = strField(h.magic);
    if (magic !== (version === 1 ? 'n+1' : 'n+2'))
        fail(file + ': magic "' + magic + '" is not a single-file NIfTI ' +
            '(n+1/n+2); convert .hdr/.img pairs to .nii');
    const d = h.dim;
    if (d[0] < 1 || d[0] > 7) fail(file + ': header dim[0]=' + d[0] +
        ' is outside 1..7; the file is corrupt');
    for (let i = 1; i <= d[0]; i++)
        if (d[i] < 1) fail(file + ': header dim[' + i + ']=' + d[i] +
            ' is not positive; the file is corrupt');
    for (let i = 5; i <= d[0]; i++)
        if (d[i] > 1) fail(file + ' is ' + d[0] + 'D; give a 3D scan or ' +
            '4D with one volume per modality');
    const dim = [1, 1, 1];
    for (let i = 1; i <= Math.min(d[0], 3); i++) dim[i - 1] = d[i];
    const nMod = d[0] >= 4 ? d[4] : 1;
    const dt = DATATYPES[h.datatype];
    if (!dt) fail(file + ' has datatype ' + h.datatype + ', which ' +
        'ort_segment does not read; convert it to a real-valued type');
    const nvox = dim[0] * dim[1] * dim[2] * nMod;
    const off = Math.max(Number(h.vox_offset), version === 1 ? 352 : 544);
    if (off + nvox * dt[0] > b.length)
        fail(file + ': data shorter than the header says; the file is ' +
            'truncated or its header is wrong');
    // libnifti replaces non-finite scl_* by 0; slope 0 means unscaled
    let slope = Number.isFinite(h.scl_slope) ? h.scl_slope : 0;
    let inter = Number.isFinite(h.scl_inter) ? h.scl_inter : 0;
    if (slope === 0) [slope, inter] = [1, 0];
    const data = new Float32Array(nvox);
    const rd = dt[1];
    for (let i = 0, o = off; i < nvox; i++, o += dt[0])
        data[i] = rd(dv, o, le) * slope + inter; // stored as float32
    return { version, hdr: h, dim, nMod, data };
}

// Label map with the scan's geometry, as nio_write_labels (libnifti) does.
function niftiLabelBytes(scan, labels, nClasses) {
    const h = Object.assign({}, scan.hdr);
    const dt = nClasses <= 255 ? 2 : 4;
    const n = scan.dim[0] * scan.dim[1] * scan.dim[2];
    h.dim = h.dim.slice();
    h.pixdim = h.pixdim.slice();
    h.dim[0] = Math.min(h.dim[0], 3);
    for (let i = 4; i < 8; i++) h.dim[i] = 1;
    for (let i = h.dim[0] + 1; i < 4; i++) h.dim[i] = 1;
    h.datatype = dt;
    h.bitpix = dt === 2 ? 8 : 16;
    h.scl_slope = 1;
    h.scl_inter = 0;
    h.cal_min = 0;
    h.cal_max = nClasses > 0 ? nClasses - 1 : 0;
    h.intent_code = 1002; // NIFTI_INTENT_LABEL
    h.intent_name = new Array(16).fill(0);
    h.aux_file = new Array(24).fill(0);
    h.descrip = new Array(80).fill(0);
    Array.from('sauron segment').forEach((c, i) => {
        h.descrip[i] = c.charCodeAt(0);
    });
    // libnifti writes the qform only when qform_code > 0, and zeroes the
    // ANALYZE leftovers
    // (pixdim[0] is then qfac, else 0)
    if (h.qform_code > 0) {
        h.pixdim[0] = h.pixdim[0] < 0 ? -1 : 1;
    } else {
        h.pixdim[0] = 0;
        h.quatern = [0, 0, 0];
        h.qoffset = [0, 0, 0];
    }
    if (!(h.sform_code > 0)) {
        h.srow_x = [0, 0, 0, 0];
        h.srow_y = [0, 0, 0, 0];
        h.srow_z = [0, 0, 0, 0];
    }
    let hb;
    if (scan.version === 2) {
        h.vox_offset = 544;
        h.magic = [0x6e, 0x2b, 0x32, 0, 0x0d, 0x0a, 0x1a, 0x0a];
        hb = encodeHeader(h, N2_FIELDS, 540);
    } else {
        h.data_type = new Array(10).fill(0);
        h.db_name = new Array(18).fill(0);
        h.extents = 0;
        h.session_error = 0;
        h.regular = 0x72; // 'r'
        h.glmax = 0;
        h.glmin = 0;
        h.vox_offset = 352;
        h.magic = [0x6e, 0x2b, 0x31, 0];
        hb = encodeHeader(h, N1_FIELDS, 348);
    }
    const ext = Buffer.alloc(4); // no extensions
    let data;
    if (dt === 2) {
        data = Buffer.alloc(n);
        for (let i = 0; i < n; i++) data[i] = labels[i];
    } else {
        data = Buffer.alloc(2 * n);
        for (let i = 0; i < n; i++) data.writeInt16LE(labels[i], 2 * i);
    }
    return Buffer.concat([hb, ext, data]);
}

function writeAtomic(file, bytes) {
    const gz = file.endsWith('.nii.gz');
    const ext = gz ? '.nii.gz' : '.nii';
    const tmp = file.slice(0, file.length - ext.length) + '.tmp.' +
        process.pid + ext;
    try {
        const body = gz ? zlib.gzipSync(bytes) : bytes;
        const fd = fs.openSync(tmp, 'w');
        try {
            fs.writeSync(fd, body);
            fs.fsyncSync(fd);
        } finally {
            fs.closeSync(fd);
        }
        fs.renameSync(tmp, file);
    } catch (e) {
        try {
            fs.unlinkSync(tmp);
        } catch (e2) {
            // nothing to remove
        }
        fail('cannot write ' + file + ': ' + e.message + '; check the ' +
            'folder exists, is writable and has free space');
    }
}

// ---- model metadata (ONNX ModelProto field 14, metadata_props) ----

// Top-level protobuf fields are walked with small reads, so the graph
// (field 7, the weights) is skipped without loading it.
function readMetadataProps(file) {
    let fd;
    try {
        fd = fs.openSync(file, 'r');
    } catch (e) {
        fail('cannot read ' + file + ': ' + e.message);
    }
    const size = fs.fstatSync(fd).size;
    const small = Buffer.alloc(10);
    let pos = 0;
    const varint = () => {
        const n = fs.readSync(fd, small, 0, 10, pos);
        let v = 0n;
        for (let i = 0; i < n; i++) {
            v |= BigInt(small[i] & 0x7f) << BigInt(7 * i);
            if (!(small[i] & 0x80)) {
                pos += i + 1;
                return Number(v);
            }
        }
        fail(file + ': not an ONNX model (bad protobuf varint)');
        return 0;
    };
    const props = {};
    const parseEntry = (buf) => {
        let p = 0;
        let key = '';
        let val = '';
        while (p < buf.length) {
            let tag = 0;
            let sh = 0;
            while (buf[p] & 0x80) tag += (buf[p++] & 0x7f) * 2 ** (7 * sh++);
            tag += buf[p++] * 2 ** (7 * sh);
            let len = 0;
            sh = 0;
            while (buf[p] & 0x80) len += (buf[p++] & 0x7f) * 2 ** (7 * sh++);
            len += buf[p++] * 2 ** (7 * sh);
            if ((tag & 7) !== 2) break;
            const s = buf.toString('utf8', p, p + len);
            if (tag >> 3 === 1) key = s;
            else if (tag >> 3 === 2) val = s;
            p += len;
        }
        props[key] = val;
    };
    try {
        while (pos < size) {
            const tag = varint();
            const wt = tag & 7;
            if (wt === 0) varint();
            else if (wt === 1) pos += 8;
            else if (wt === 5) pos += 4;
            else if (wt === 2) {
                const len = varint();
                if (tag >>> 3 === 14 && len < 1 << 20) {
                    const buf = Buffer.alloc(len);
                    fs.readSync(fd, buf, 0, len, pos);
                    parseEntry(buf);
                }
                pos += len;
            } else fail(file + ': not an ONNX model (wire type ' + wt + ')');
        }
    } finally {
        fs.closeSync(fd);
    }
    return props;
}

// ModelMeta as segment sees it: metadata or the documented defaults.
function modelMeta(props, file) {
    const m = { dims: 2, axis: 2, order: 'nnunet', nClasses: 0, nMod: 0,
        normalize: null, hasMeta: 'sauron.meta_version' in props };
    if (!m.hasMeta) return m;
    const int = (k, lo, hi) => {
        const v = props[k];
        if (v === undefined || !/^-?[0-9]+$/.test(v) || +v < lo || +v > hi)
            fail(file + ': metadata property ' + k + ' is missing or ' +
                'malformed; re-export the model');
        return +v;
    };
    m.nClasses = int('sauron.n_classes', 1, 65536);
    m.nMod = int('sauron.n_modalities', 1, 1024);
    m.dims = int('sauron.dims', 1, 3);
    m.axis = int('sauron.axis', 0, 2);
    m.order = props['sauron.order'];
    if (m.order !== 'nnunet' && m.order !== 'nibabel')
        fail(file + ': metadata property sauron.order is malformed');
    m.normalize = [];
    for (let k = 0; k < m.nMod; k++) {
        const v = props['sauron.normalize.' + k] || '';
        let z;
        if (v === 'zscore') z = { kind: 'zscore' };
        else if (v === 'zscore-fg') z = { kind: 'zscore-fg', gain: 1, offset: 0 };
        else if (/^zscore-fg:/.test(v)) {
            const [g, o] = v.slice(10).split(',').map(Number);
            if (!(g > 0)) fail(file + ': bad sauron.normalize.' + k);
            // stored as float32 in ModelMeta
            z = { kind: 'zscore-fg', gain: Math.fround(g), offset: Math.fround(o) };
        }
        else if (v === 'none') z = { kind: 'none' };
        else if (/^ct:/.test(v)) {
            const [lo, hi] = v.slice(3).split(',').map(Number);
            if (!(lo < hi)) fail(file + ': bad sauron.normalize.' + k);
            // stored as float32 in ModelMeta
            z = { kind: 'ct', lo: Math.fround(lo), hi: Math.fround(hi) };
        } else fail(file + ': metadata property sauron.normalize.' + k +
            ' is missing or malformed');
        m.normalize.push(z);
    }
    if (m.dims !== 2)
        fail(file + ' is a ' + m.dims + 'D model; ort_segment runs 2D ' +
            'models only');
    return m;
}

// ---- pre/post-processing (runtime/volume.c) ----

// volume_axes: tensor axes [slice, H, W] -> NIfTI axes (0 = i fastest)
function volumeAxes(order, axis) {
    const a = axis === 0 ? 1 : 0;
    const b = axis === 2 ? 1 : 2;
    return order === 'nnunet' ? [axis, b, a] : [axis, a, b];
}

// volume_otsu_threshold: the same histogram and sums, in double, in order
const OTSU_BINS = 256;
function otsuThreshold(x) {
    let mn = Infinity, mx = -Infinity;
    for (let i = 0; i < x.length; i++) {
        mn = Math.min(mn, x[i]);
        mx = Math.max(mx, x[i]);
    }
    if (!(mx > mn)) return -Infinity;
    const h = new Float64Array(OTSU_BINS);
    for (let i = 0; i < x.length; i++) {
        const b = Math.floor((x[i] - mn) / (mx - mn) * OTSU_BINS);
        h[b < 0 ? 0 : b > OTSU_BINS - 1 ? OTSU_BINS - 1 : b] += 1;
    }
    let tot = 0, totM = 0;
    for (let k = 0; k < OTSU_BINS; k++) {
        tot += h[k];
        totM += k * h[k];
    }
    let c0 = 0, m0 = 0, best = -1, bt = 1;
    for (let t = 1; t < OTSU_BINS; t++) {
        c0 += h[t - 1];
        m0 += (t - 1) * h[t - 1];
        const c1 = tot - c0;
        if (c0 <= 0 || c1 <= 0) continue;
        const d = m0 / c0 - (totM - m0) / c1;
        const v = (c0 / tot) * (c1 / tot) * d * d;
        if (v > best) {
            best = v;
            bt = t;
        }
    }
    return mn + bt * (mx - mn) / OTSU_BINS;
}

// volume_norm_affine: {lo, hi, shift, scale} in double
function normAffine(vol, m, z) {
    const out = { lo: -Infinity, hi: Infinity, shift: 0, scale: 1 };
    if (!z || z.kind === 'none') return out;
    if (z.kind === 'ct') {
        out.lo = z.lo;
        out.hi = z.hi;
        out.shift = 0.5 * (z.lo + z.hi);
        out.scale = 2 / (z.hi - z.lo);
        return out;
    }
    const nv = vol.dim[0] * vol.dim[1] * vol.dim[2];
    const x = vol.data.subarray(m * nv, (m + 1) * nv);
    // zscore-fg: the head only (voxels at or above the Otsu threshold)
    const thr = z.kind === 'zscore-fg' ? otsuThreshold(x) : -Infinity;
    let s = 0, n = 0;
    for (let i = 0; i < nv; i++)
        if (x[i] >= thr) {
            s += x[i];
            n++;
        }
    const mean = s / n;
    let ss = 0;
    for (let i = 0; i < nv; i++)
        if (x[i] >= thr) {
            const d = x[i] - mean;
            ss += d * d;
        }
    const sd = Math.sqrt(ss / n);
    out.shift = mean;
    out.scale = 1 / (sd > 1e-8 ? sd : 1e-8);
    if (z.kind === 'zscore-fg') {
        // (v - mean) / sd * gain + offset, as volume_norm_affine
        out.shift = mean - z.offset / (out.scale * z.gain);
        out.scale *= z.gain;
    }
    return out;
}

function axisStrides(dim, ax) {
    const st = [1, dim[0], dim[0] * dim[1]];
    return [st[ax[0]], st[ax[1]], st[ax[2]]];
}

// One slice s0 into dst [C, P0, P1] (zeros beyond box [B0, B1]).
function gatherSlice(dst, vol, na, ax, s0, box, pad) {
    const s = axisStrides(vol.dim, ax);
    const nv = vol.dim[0] * vol.dim[1] * vol.dim[2];
    const plane = pad[0] * pad[1];
    dst.fill(0);
    for (let c = 0; c < vol.nMod; c++) {
        const a = na[c];
        const base = c * nv + s0 * s[0];
        for (let x1 = 0; x1 < box[0]; x1++) {
            let si = base + x1 * s[1];
            const di = c * plane + x1 * pad[1];
            for (let x2 = 0; x2 < box[1]; x2++, si += s[2]) {
                let d = vol.data[si];
                if (d < a.lo) d = a.lo;
                if (d > a.hi) d = a.hi;
                dst[di + x2] = (d - a.shift) * a.scale; // rounds to float32
            }
        }
    }
}

// volume_argmax_scatter for one slice: scores [nc, P0, P1].
function argmaxSlice(labels, dim, scores, so, nc, ax, s0, box, pad) {
    const s = axisStrides(dim, ax);
    const cs = pad[0] * pad[1];
    for (let x1 = 0; x1 < box[0]; x1++) {
        const li = s0 * s[0] + x1 * s[1];
        const sr = so + x1 * pad[1];
        for (let x2 = 0; x2 < box[1]; x2++) {
            let best = -1;
            let bv = 0;
            for (let c = 0; c < nc; c++) {
                const v = scores[sr + c * cs + x2];
                if (v === v && (best < 0 || v > bv)) {
                    best = c;
                    bv = v;
                }
            }
            labels[li + x2 * s[2]] = best < 0 ? 0 : best;
        }
    }
}

// ---- network ----

async function runNet(ort, sess, x, dims) {
    const feeds = {};
    feeds[sess.inputNames[0]] = new ort.Tensor('float32', x, dims);
    const res = await sess.run(feeds);
    return res[sess.outputNames[0]];
}

// Does [1, C, h, w] give an output of the same spatial size?
async function sizeOk(ort, sess, C, h, w) {
    try {
        const y = await runNet(ort, sess, new Float32Array(C * h * w),
            [1, C, h, w]);
        return y.dims.length === 4 && y.dims[2] === h && y.dims[3] === w;
    } catch (e) {
        return false;
    }
}

// valid_sizes in runtime/segment.c, by running the network: the smallest
// accepted square, then each dim grown on its own from there.  Dim 1 is
// probed with dim 0 at the square size (U-Net constraints are per dim),
// which keeps the probes small; the final size is checked by the first
// real batch.
async function validSizes(ort, sess, C, want) {
    let cube = -1;
    for (let c = 1; c <= MAX_PROBE && cube < 0; c++)
        if (await sizeOk(ort, sess, C, c, c)) cube = c;
    if (cube < 0) fail('the model accepts no 2D input up to ' + MAX_PROBE +
        ' voxels per side; check its input shape');
    const got = [0, 0];
    for (let t = 0; t < 2; t++) {
        for (let v = Math.max(want[t], 1); v <= want[t] + PROBE_SPAN; v++) {
            const ok = t === 0 ? await sizeOk(ort, sess, C, v, cube)
                : await sizeOk(ort, sess, C, cube, v);
            if (ok) {
                got[t] = v;
                break;
            }
        }
        if (!got[t]) fail('no input size >= ' + want[t] + ' along spatial ' +
            'dim ' + t + ' suits the model');
    }
    return got;
}

// One whole volume: read, load, normalise, slices, argmax, write.
async function segmentOnce(ort, a, meta, t) {
    const [modelPath, scanPath, outPath] = a.pos;
    const vol = readNifti(scanPath);
    const t0 = process.hrtime.bigint();
    let sess;
    try {
        sess = await ort.InferenceSession.create(modelPath, {
            intraOpNumThreads: a.threads,
            interOpNumThreads: 1,
            executionMode: 'sequential',
            graphOptimizationLevel: 'all',
            logSeverityLevel: 4, // probing fails on purpose
        });
    } catch (e) {
        fail('ONNX Runtime cannot load ' + modelPath + ': ' + e.message);
    }
    t.load = Number(process.hrtime.bigint() - t0) / 1e6;
    const im = sess.inputMetadata && sess.inputMetadata[0];
    const C = meta.nMod || (im && typeof im.shape[1] === 'number' ?
        im.shape[1] : vol.nMod);
    if (vol.nMod !== C)
        fail('model expects ' + C + ' modalities, the scan has ' + vol.nMod);
    const ax = volumeAxes(meta.order, meta.axis);
    const na = [];
    for (let c = 0; c < C; c++)
        na.push(normAffine(vol, c, meta.normalize ? meta.normalize[c] :
            { kind: 'zscore' }));
    const nSl = vol.dim[ax[0]];
    const want = [vol.dim[ax[1]], vol.dim[ax[2]]];
    const hw = await validSizes(ort, sess, C, want);
    const B = Math.min(a.batch, nSl);
    const perIn = C * hw[0] * hw[1];
    const x = new Float32Array(perIn * B);
    const labels = new Int16Array(vol.dim[0] * vol.dim[1] * vol.dim[2]);
    let nc = meta.nClasses;
    for (let s0 = 0; s0 < nSl; s0 += B) {
        const nb = Math.min(B, nSl - s0);
        for (let b = 0; b < nb; b++)
            gatherSlice(x.subarray(b * perIn, (b + 1) * perIn), vol, na, ax,
                s0 + b, want, hw);
        // a short last batch: zeros in the unused slots, as segment
        x.fill(0, nb * perIn);
        let y;
        try {
            y = await runNet(ort, sess, x, [B, C, hw[0], hw[1]]);
        } catch (e) {
            fail('ONNX Runtime failed on ' + modelPath + ': ' + e.message);
        }
        const d = y.dims;
        if (!nc) nc = d[1];
        if (d.length !== 4 || d[0] !== B || d[1] !== nc || d[2] !== hw[0] ||
            d[3] !== hw[1])
            fail('model output [' + d.join(',') + '] does not match input [' +
                [B, C, hw[0], hw[1]].join(',') + '] with ' + nc + ' classes');
        const perOut = nc * hw[0] * hw[1];
        for (let b = 0; b < nb; b++)
            argmaxSlice(labels, vol.dim, y.data, b * perOut, nc, ax, s0 + b,
                want, hw);
    }
    await sess.release();
    writeAtomic(outPath, niftiLabelBytes(vol, labels, nc));
    return { labels, nc };
}

function sameFile(p, q) {
    try {
        const a = fs.statSync(p);
        const b = fs.statSync(q);
        return a.dev === b.dev && a.ino === b.ino;
    } catch (e) {
        return false;
    }
}

function median(v) {
    const s = v.slice().sort((p, q) => p - q);
    const n = s.length;
    return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

function peakRssMb() {
    try {
        const m = /VmHWM:\s*(\d+)\s*kB/.exec(
            fs.readFileSync('/proc/self/status', 'utf8'));
        if (m) return +m[1] / 1024;
    } catch (e) {
        // not Linux
    }
    return process.memoryUsage().rss / (1 << 20);
}

async function main() {
    const a = parseArgs(process.argv.slice(2));
    const ort = loadOrt();
    const baseRss = process.memoryUsage().rss / (1 << 20);
    const [modelPath, scanPath, outPath] = a.pos;
    if (!/\.nii(\.gz)?$/.test(outPath))
        fail('output ' + outPath + ' must end in .nii or .nii.gz');
    if (sameFile(outPath, scanPath) || sameFile(outPath, modelPath) ||
        path.resolve(outPath) === path.resolve(scanPath))
        fail('output ' + outPath + ' is an input; choose another name');
    if (!a.force && fs.existsSync(outPath))
        fail('output ' + outPath + ' exists; pass --force to overwrite it');
    const meta = modelMeta(readMetadataProps(modelPath), modelPath);
    const ms = [];
    const loads = [];
    let res;
    for (let r = 0; r < a.repeat; r++) {
        const t = {};
        const t0 = process.hrtime.bigint();
        res = await segmentOnce(ort, a, meta, t);
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
        loads.push(t.load);
    }
    process.stdout.write('volume_ms ' + median(ms).toFixed(1) + ' runs ' +
        a.repeat + ' load_ms ' + median(loads).toFixed(1) + ' peak_rss_mb ' +
        peakRssMb().toFixed(1) + ' base_rss_mb ' + baseRss.toFixed(1) + '\n');
    if (a.check) {
        const ref = readNifti(a.check);
        const n = res.labels.length;
        if (ref.data.length !== n)
            fail(a.check + ' has ' + ref.data.length + ' voxels, the output ' +
                n + '; give a label map of the same scan');
        let same = 0;
        for (let i = 0; i < n; i++) if (ref.data[i] === res.labels[i]) same++;
        process.stdout.write('agree ' + (same / n).toFixed(8) + ' differ ' +
            (n - same) + ' of ' + n + '\n');
    }
}

main().catch((e) => {
    const msg = e instanceof ToolError ? e.message :
        String(e && e.message ? e.message : e);
    process.stderr.write('error: ' + TOOL + ': ' + msg + '\n');
    process.exit(1);
});
