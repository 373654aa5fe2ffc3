'use strict';
/*
 * Node preload (`node --require loopback.js`, via NODE_OPTIONS) for NNI 3.0's manager.
 *
 * Why: the manager (nni_node/main.js) calls `app.listen(port)` with no host, so its web UI
 * and REST API - unauthenticated, able to change the search space, kill trials and read
 * logs - listen on every interface. NNI has no bind option; this preload gives it one
 * without editing anything inside site-packages. segmodel's .pth hook puts it in
 * NODE_OPTIONS when a Python process of the project's venv starts a manager
 * (segmodel/experiment/loopback_hook.py); `NODE_OPTIONS="--require .../loopback.js"` works by hand.
 *
 * SEGMODEL_BIND (read when the manager starts):
 *   unset or ""   127.0.0.1 only (the default)
 *   all           NNI's own behaviour: every interface (remote and Kubernetes trials need
 *                 to connect back; see docs/security.md for the safe ways)
 *   an address    that address, plus 127.0.0.1 on the same port when it is another one
 *                 (nnictl and the tuner always talk to localhost)
 * Only servers that would listen on every interface (no host, 0.0.0.0 or ::) move; a
 * server given a specific address keeps it. TensorBoard started from the web UI
 * (NNI passes `--bind_all`) gets `--host <address>` instead. Other Node programs are
 * left alone: the preload acts only when the main script is nni_node/main.js.
 */
const childProcess = require('child_process');
const net = require('net');
const path = require('path');

const LOOPBACK = '127.0.0.1';
const WILDCARDS = new Set(['', '0.0.0.0', '::', '::0']);

function isNNIManager(script) {
    return Boolean(script) && path.basename(script) === 'main.js'
        && path.basename(path.dirname(path.resolve(script))) === 'nni_node';
}

/** SEGMODEL_BIND -> the address to listen on, or null for "leave NNI alone". */
function bindAddress(value) {
    const text = (value || '').trim();
    if (text === '') return LOOPBACK;
    if (text.toLowerCase() === 'all') return null;
    if (text === 'localhost') return LOOPBACK;
    if (net.isIP(text)) return text;
    throw new Error(`SEGMODEL_BIND=${JSON.stringify(value)}: expected "all" or an IP address `
        + '(e.g. 127.0.0.1, or the nniManagerIp that trials connect to)');
}

function isLoopback(address) {
    return address === '::1' || /^127\./.test(address) || /^::ffff:127\./.test(address);
}

/** listen()'s arguments with a wildcard or missing host replaced by `address`. */
function rebind(args, address) {
    const [first, second] = args;
    if (typeof first === 'function') return [0, address, ...args];  // listen(callback)
    if (first !== null && typeof first === 'object') {
        const isHandle = first instanceof net.Server || '_handle' in first
            || first.path !== undefined || first.handle !== undefined || first.fd !== undefined;
        if (isHandle) return args;
        if (first.host !== undefined && !WILDCARDS.has(first.host)) return args;
        return [{ ...first, host: address }, ...args.slice(1)];
    }
    const isPort = typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))
        || first === undefined || first === null;
    if (!isPort) return args;  // a unix socket path or a handle
    if (typeof second === 'string') {
        return WILDCARDS.has(second) ? [first, address, ...args.slice(2)] : args;
    }
    return [first ?? 0, address, ...args.slice(1)];
}

/** Also accept connections on 127.0.0.1 for a server moved to another single address.
 * The server's 'listening' event waits for the twin, so whoever waits for it (NNI, then
 * nnictl on localhost) never finds the loopback side closed. */
function addLoopbackTwin(server) {
    const emit = server.emit;
    server.emit = function holdListening(event, ...rest) {
        if (event !== 'listening') return emit.call(this, event, ...rest);
        server.emit = emit;
        const twin = net.createServer((socket) => server.emit('connection', socket));
        twin.once('error', (error) => server.emit('error', error));
        twin.listen(server.address().port, LOOPBACK, () => server.emit('listening', ...rest));
        server.once('close', () => twin.close());
        return true;
    };
}

function patchListen(address) {
    const listen = net.Server.prototype.listen;
    net.Server.prototype.listen = function segmodelListen(...args) {
        const moved = rebind(args, address);
        if (moved !== args && address !== LOOPBACK && !WILDCARDS.has(address)) addLoopbackTwin(this);
        return listen.apply(this, moved);
    };
}

/** NNI's TensorBoard button runs `tensorboard --bind_all ...` through a shell. */
function patchTensorboard(address) {
    const spawn = childProcess.spawn;
    childProcess.spawn = function segmodelSpawn(command, args, ...rest) {
        if (command === 'tensorboard' && Array.isArray(args)) {
            // NNI spawns it through a shell; an IP address (net.isIP) needs no quoting there.
            args = args.map((arg) => (typeof arg === 'string'
                ? arg.replace(/(^|\s)--bind_all(?=\s|$)/, `$1--host ${address}`) : arg));
        }
        return spawn.call(this, command, args, ...rest);
    };
}

function warnIfTrialsCannotConnect(address, argv) {
    const at = argv.indexOf('--mode');
    const mode = at >= 0 ? argv[at + 1] : 'local';
    if (isLoopback(address) && mode && mode !== 'local') {
        process.stderr.write(`segmodel: the NNI manager listens on ${address} only, so ${mode} `
            + 'trials on other machines cannot connect back; start it with SEGMODEL_BIND=all '
            + '(or the address they reach) - docs/security.md\n');
    }
}

function main() {
    if (!isNNIManager(process.argv[1])) return;
    let address;
    try {
        address = bindAddress(process.env.SEGMODEL_BIND);
    } catch (error) {
        process.stderr.write(`error: ${error.message}\n`);
        process.exit(2);
    }
    if (address === null) return;
    patchListen(address);
    patchTensorboard(address);
    warnIfTrialsCannotConnect(address, process.argv);
}

main();
