// Find onnxruntime-node for the node tools (ort_run.js, ort_segment.js,
// bench_ort.js): the folders in $ORT_NODE_PATH (colon-separated;
// tools/deps.sh installs the package into $BUILD/node), then the current
// folder.  Returns the module, or null when it is nowhere (the caller says
// what to run).
'use strict';

module.exports = function loadOrt() {
    const dirs = (process.env.ORT_NODE_PATH || '').split(':').filter((d) => d);
    dirs.push(process.cwd());
    for (const d of dirs) {
        try {
            return require(require.resolve('onnxruntime-node', { paths: [d] }));
        } catch (e) {
            // try the next place
        }
    }
    return null;
};
