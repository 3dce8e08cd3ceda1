// The Node runtime host: embeds one boxlite runtime through the Node SDK and serves the same
// JSON lines as host_main.py, so every scenario runs through it unchanged.
//
// Node's standard library and the SDK only. One request per stdin line, one reply per stdout
// line; requests run concurrently. Runtime errors come back as {"ok": false, "error": {type,
// message, mro, sdk_error}}: the SDK throws a plain Error (code 'GenericFailure', message = the
// core's error text), and `type` is the core's error class read from that text's prefix, named
// as the Python SDK names it (EngineError, InvalidArgumentError, ...), so checks read both
// SDKs' errors alike; `sdk_error` keeps what Node actually threw.
// An operation, or a box option, this release of the SDK lacks answers OpUnsupported naming
// it, as host_main.py's does; the scenarios read that as nothing to judge.
//
// Flags (as host_main.py's):
//   --sdk DIR                     the npm folder holding @boxlite-ai/boxlite (the binding file
//                                 comes from NAPI_RS_NATIVE_LIBRARY_PATH, set by the harness)
//   --runtime options|default     new JsBoxlite({homeDir, imageRegistries}) or
//                                 JsBoxlite.withDefaultConfig() (home from BOXLITE_HOME)
//   --sigterm none|graceful|sdk   none: SIGTERM's default action; graceful: a JS handler runs
//                                 shutdown(--shutdown-timeout) and exits 0, like upstream's
//                                 runner; sdk: whatever the SDK installed (withDefaultConfig's
//                                 native handler; nothing for `options`);
//                                 graceful-early: graceful's handler wired before the
//                                 runtime's first use, as a runner that sets up its signals
//                                 at startup does (Node only: the order matters there)
//   --reaper none                 global is refused: Node has no process-wide waitpid(-1)
//   --registry HOST:PORT          an http image registry on loopback, searched first

import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { constants } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const USAGE = 2;

function fail(message, code = USAGE) {
  process.stderr.write(`host_main.mjs: ${message}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const args = { home: null, sdk: null, runtime: "options", sigterm: "none",
                 shutdown_timeout: 25, reaper: "none", registry: [] };
  const choices = { runtime: ["options", "default"], sigterm: ["none", "graceful", "sdk", "graceful-early"],
                    reaper: ["none", "global"] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!flag.startsWith("--") || value === undefined) fail(`bad argument ${flag}`);
    const key = flag.slice(2).replace(/-/g, "_");
    i++;
    if (key === "registry") { args.registry.push(value); continue; }
    if (!(key in args)) fail(`unknown flag ${flag}`);
    if (choices[key] && !choices[key].includes(value)) {
      fail(`${flag} must be one of ${choices[key].join(", ")}, not ${value}`);
    }
    args[key] = key === "shutdown_timeout" ? Number(value) : value;
  }
  if (!args.home || !args.sdk) fail("--home and --sdk are required");
  if (args.reaper !== "none") {
    // Upstream's reverted reaper is a thread calling waitpid(-1) inside the embedding
    // process; Node offers no such call, and libuv reaps only its own children.
    fail(`--reaper ${args.reaper} does not apply to the Node SDK host: Node has no ` +
         "process-wide waitpid(-1) (the reverted reaper of upstream issue 523 is Python-only)");
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(args.sdk, "node_modules", name, "package.json"))).version;
  } catch {
    return "unknown";
  }
}

// The core's version is the binding's; a local .node file's is in the harness's ready marker.
function coreVersion() {
  try {
    return JSON.parse(readFileSync(join(args.sdk, ".boxlite-chaos-ready.json"))).version;
  } catch {
    return packageVersion("@boxlite-ai/boxlite-linux-x64-gnu");
  }
}

const pkg = JSON.parse(readFileSync(join(args.sdk, "node_modules", "@boxlite-ai", "boxlite",
                                         "package.json")));
const sdk = await import(pathToFileURL(join(args.sdk, "node_modules", "@boxlite-ai", "boxlite",
                                            pkg.main || "dist/index.js")).href);
const { JsBoxlite } = sdk;
const VERSION = coreVersion();
const SDK_VERSION = pkg.version;

// The core's error classes by the Display text of BoxliteError (src/shared/src/errors.rs),
// named as the Python SDK's exception classes; the first prefix that matches wins.
const ERROR_PREFIXES = [
  [/^engine reported an error: /, "EngineError"],
  [/^invalid argument: /, "InvalidArgumentError"],
  [/^invalid state: /, "InvalidStateError"],
  [/^(box )?not found: |^[a-z ]+ not found: /, "NotFoundError"],
  [/^already exists: /, "AlreadyExistsError"],
  [/^configuration error: /, "ConfigError"],
  [/^storage error: /, "StorageError"],
  [/^images? error: /, "ImageError"],
  [/^database error: /, "DatabaseError"],
  [/^internal error/, "InternalError"],
  [/^network error: /, "NetworkError"],
  [/^unsupported/, "UnsupportedError"],
  [/^execution/, "ExecutionError"],
];

function errorShape(err) {
  const message = err instanceof Error ? err.message : String(err);
  let type = "BoxliteError";
  let mro;
  if (/panicked at|^panic/i.test(message)) {
    type = "RustPanic";                 // what the Python SDK raises for a panicked future
    mro = ["RustPanic", "Error"];
  } else if (!(err instanceof Error) || err.code === undefined) {
    type = err instanceof Error ? err.name : typeof err;    // the host's own, e.g. ValueError
    mro = [type, "Error"];
  } else {
    for (const [re, name] of ERROR_PREFIXES) {
      if (re.test(message)) { type = name; break; }
    }
    mro = [type, "BoxliteError", "Error"];
  }
  return { type, message, mro,
           sdk_error: { name: err?.constructor?.name ?? typeof err, code: err?.code ?? null },
           traceback: String(err?.stack ?? "").split("\n").slice(0, 4).join("\n") };
}

const LIFECYCLE = [["auto_delete", "autoDelete"], ["auto_stop", "autoStop"],
                   ["auto_resume", "autoResume"]];

function infoDict(info) {
  const state = info.state || {};
  return {
    id: info.id,
    name: info.name ?? null,
    status: String(state.status),
    running: Boolean(state.running),
    pid: state.pid ?? null,
    exit_code: state.exitCode ?? null,          // the Node SDK exposes none (0.10.0)
    created_at: String(info.createdAt),
    // host_main.py writes str(None) for a box never started.
    started_at: info.startedAt == null ? "None" : String(info.startedAt),
    image: String(info.image),
    // The 0.10 lifecycle options as the runtime resolved them (absent where the SDK has none).
    ...Object.fromEntries(LIFECYCLE.filter(([, js]) => info[js] !== undefined)
                                   .map(([py, js]) => [py, info[js]])),
  };
}

// host_main.py's BOX_OPTION_FIELDS, by the Node SDK's name for each (JsBoxOptions); null
// where the SDK has no such option (`tty`: a terminal is per exec in Node), which a create
// naming it answers with OpUnsupported rather than dropping it unseen.
const BOX_OPTION_FIELDS = {
  image: "image", rootfs_path: "rootfsPath", cpus: "cpus", memory_mib: "memoryMib",
  disk_size_gb: "diskSizeGb", working_dir: "workingDir", env: "env", volumes: "volumes",
  ports: "ports", auto_remove: "autoRemove", detach: "detach", entrypoint: "entrypoint",
  cmd: "cmd", user: "user", auto_stop: "autoStop", auto_delete: "autoDelete",
  auto_resume: "autoResume", network: "network", tty: null, advanced: "advanced",
  secrets: "secrets",
};
// Not a box option: `sdk_defaults: true` leaves every unset option to the SDK, as a user gets
// it (autoRemove included), instead of forcing autoRemove=false (host_main.py's SDK_DEFAULTS).
const SDK_DEFAULTS = "sdk_defaults";
// Python's AdvancedBoxOptions holds security and health_check; JsBoxOptions has them beside
// `advanced`, which keeps only capabilities.
const ADVANCED_HOISTED = { security: "security", health_check: "healthCheck" };

const camel = (key) => key.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const snake = (key) => key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
const isDict = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// The JSON shapes of the class-typed options (network, advanced, secrets), keys camelCased at
// every depth and values passed as they are: the SDK judges them, as Python's classes do
// (an unknown key reaches the SDK under its camelCased name).
function camelKeys(value) {
  if (Array.isArray(value)) return value.map(camelKeys);
  if (!isDict(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [camel(k), camelKeys(v)]));
}

function unsupported(message) {
  return Object.assign(new Error(message), { name: "OpUnsupported" });
}

function boxOptions(raw, op = "create") {
  raw = { ...raw };
  const sdkDefaults = Boolean(raw[SDK_DEFAULTS]);
  delete raw[SDK_DEFAULTS];
  const unknown = Object.keys(raw).filter((k) => !(k in BOX_OPTION_FIELDS)).sort();
  if (unknown.length) {
    throw Object.assign(new TypeError(`unknown box options: ${JSON.stringify(unknown)}`),
                        { name: "ValueError" });
  }
  const out = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v === null || v === undefined) continue;
    if (BOX_OPTION_FIELDS[k] === null) {
      throw unsupported(`${op}: @boxlite-ai/boxlite ${SDK_VERSION} has no JsBoxOptions ` +
                        `field for ${k}`);
    }
    out[BOX_OPTION_FIELDS[k]] = v;
  }
  if (out.env) out.env = out.env.map(([key, value]) => ({ key, value }));
  if (out.volumes) {
    out.volumes = out.volumes.map(([hostPath, guestPath, readOnly]) =>
      (readOnly === undefined ? { hostPath, guestPath } : { hostPath, guestPath, readOnly }));
  }
  if (out.ports) {
    out.ports = out.ports.map(([hostPort, guestPort, protocol]) => {
      const p = { guestPort };
      if (hostPort !== null && hostPort !== undefined) p.hostPort = hostPort;
      if (protocol) p.protocol = protocol;
      return p;
    });
  }
  for (const key of ["network", "secrets"]) {
    if (key in out) out[key] = camelKeys(out[key]);
  }
  if (isDict(out.advanced)) {
    const advanced = {};
    for (const [k, v] of Object.entries(out.advanced)) {
      if (v === null) continue;                     // Python's keyword default
      if (k in ADVANCED_HOISTED) out[ADVANCED_HOISTED[k]] = camelKeys(v);
      else advanced[camel(k)] = camelKeys(v);
    }
    if (Object.keys(advanced).length) out.advanced = advanced;
    else delete out.advanced;
  }
  // The SDK default would remove the record on stop, hiding the thing under test.
  if (!sdkDefaults && out.autoRemove === undefined) out.autoRemove = false;
  return out;
}

function makeRuntime() {
  if (args.runtime === "default") return JsBoxlite.withDefaultConfig();
  const registries = args.registry.map((host) => ({ host, transport: "http", search: true }));
  return new JsBoxlite(registries.length ? { homeDir: args.home, imageRegistries: registries }
                                         : { homeDir: args.home });
}

// graceful and graceful-early: SIGTERM -> shutdown(--shutdown-timeout) -> exit 0.
function onSigtermShutDown() {
  process.on("SIGTERM", () => {
    const t0 = performance.now();
    emit({ event: "signal", signal: "SIGTERM" });
    rt.shutdown(args.shutdown_timeout).then(
      () => emit({ event: "shutdown_done", elapsed_s: (performance.now() - t0) / 1000 }),
      (err) => emit({ event: "shutdown_error", error: errorShape(err).message }),
    ).finally(() => process.exit(0));
  });
}

// The runtime refusing to start (a home another runtime holds) ends the host before ready,
// its reason the last line of stderr as host_main.py's traceback leaves it: the harness
// reads the reason there. Node's own report of an uncaught error ends in its version line.
function startFailed(err) {
  const { type, message } = errorShape(err);
  process.stderr.write(`${String(err?.stack ?? err)}\n${type}: ${message}\n`);
  process.exit(1);
}

if (args.sigterm === "graceful-early") onSigtermShutDown();
let rt;
try {
  rt = makeRuntime();
} catch (err) {
  startFailed(err);
}

// Whether this process has a handler for SIGTERM, from the kernel (/proc/self/status).
function catchesSigterm() {
  const m = readFileSync("/proc/self/status", "utf8").match(/^SigCgt:\s*([0-9a-f]+)$/m);
  return m !== null && ((BigInt("0x" + m[1]) >> 14n) & 1n) === 1n;
}

const SDK_HANDLER_WAIT_MS = 5000;
if (args.runtime === "default") {
  // withDefaultConfig() installs its native SIGTERM handler some time after the runtime's
  // first use, not when it is made (measured, 0.10.0 and 0.10.3), where Boxlite.default()
  // installs it at once. The host makes that first use and waits until the kernel shows the
  // handler, so the flavour below replaces or keeps it as host_main.py's order does. A JS
  // handler registered before it lands runs beside it, and the process then dies of SIGSEGV
  // on SIGTERM in 4-6 of 12 tries (an SDK bug; see scenarios/sdk).
  await rt.listInfo().catch(startFailed);
  const t0 = performance.now();
  // graceful-early's handler is already in place, so the kernel cannot show the SDK's.
  const wait = args.sigterm !== "graceful-early";
  while (wait && !catchesSigterm() && performance.now() - t0 < SDK_HANDLER_WAIT_MS) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  // Not seen within the deadline: said, and the host goes on (its flavour may then race).
  emit({ event: "sdk_sigterm_handler", seen: wait ? catchesSigterm() : null,
         waited_s: (performance.now() - t0) / 1000, deadline_s: SDK_HANDLER_WAIT_MS / 1000 });
}
const boxes = new Map();
const children = new Map();

async function boxOf(boxId) {
  let box = boxes.get(boxId);
  if (!box) {
    box = await rt.get(boxId);
    if (!box) { const e = new RangeError(`no box ${boxId}`); e.name = "LookupError"; throw e; }
    boxes.set(boxId, box);
  }
  return box;
}

// What this release of the SDK lacks answers OpUnsupported naming it (host_main.py's _api):
// `obj[name]`, a method bound to obj or a handle (snapshot, volumes, images).
function api(obj, name, op) {
  let value;
  try {
    value = obj[name];
  } catch {
    value = undefined;                              // a native getter this build lacks
  }
  if (value === undefined || value === null) {
    const cls = obj === rt ? "JsBoxlite" : (obj?.constructor?.name ?? typeof obj);
    throw unsupported(`${op}: @boxlite-ai/boxlite ${SDK_VERSION} (core ${VERSION}) has no ` +
                      `${cls}.${name}`);
  }
  return typeof value === "function" ? value.bind(obj) : value;
}

// The public fields of the SDK's info objects under the Python SDK's names (host_main.py's
// _plain): `keys` are the Python class's, present as null where Node leaves an optional
// field out, so both hosts answer the same shape.
const PLAIN_KEYS = {
  snapshot: ["box_id", "container_disk_bytes", "created_at", "id", "name", "size_bytes"],
  volume: ["created_at", "id", "name", "size_bytes"],
  image: ["cached_at", "id", "reference", "repository", "size_bytes", "tag"],
};

function plain(obj, kind) {
  const out = Object.fromEntries(PLAIN_KEYS[kind].map((k) => [k, null]));
  for (const [k, v] of Object.entries(obj ?? {})) {
    if (typeof v === "function") continue;
    const scalar = v == null || ["string", "number", "boolean"].includes(typeof v);
    out[snake(k)] = scalar ? (v ?? null) : JSON.stringify(v);
  }
  return out;
}

const ops = {
  async ping() {
    return { pid: process.pid, boxlite_version: VERSION, sdk: "node", sdk_version: SDK_VERSION,
             node: process.version, flavour: args };
  },
  async create({ options, name = null }) {
    const box = await rt.create(boxOptions(options), name);
    boxes.set(box.id, box);
    return { id: box.id };
  },
  async start({ box_id }) { await (await boxOf(box_id)).start(); return null; },
  async stop({ box_id }) { await (await boxOf(box_id)).stop(); return null; },
  async exec({ box_id, cmd, args: cmdArgs = null, exec_timeout_s = null, stream_as = null }) {
    // Each stdout chunk is also emitted at once with `stream_as`, so acknowledgements
    // survive the host being killed mid-command.
    const box = await boxOf(box_id);
    const execution = await box.exec(cmd, cmdArgs || []);
    const stdout = [];
    const drain = (async () => {
      const out = await execution.stdout();
      for (let chunk = await out.next(); chunk !== null; chunk = await out.next()) {
        stdout.push(chunk);
        if (stream_as) emit({ event: "exec_out", stream: stream_as, chunk });
      }
      return execution.wait();
    })();
    let result;
    if (exec_timeout_s) {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => { const e = new Error(""); e.name = "TimeoutError"; reject(e); },
                           exec_timeout_s * 1000);
      });
      try { result = await Promise.race([drain, timeout]); } finally { clearTimeout(timer); }
    } else {
      result = await drain;
    }
    return { exit_code: result.exitCode, stdout: stdout.join(""), stderr: "" };
  },
  async remove({ box_id, force = false }) {
    await rt.remove(box_id, force);
    boxes.delete(box_id);
    return null;
  },
  async get_info({ box_id }) {
    const info = await rt.getInfo(box_id);
    return info == null ? null : infoDict(info);
  },
  async list_info() { return (await rt.listInfo()).map(infoDict); },
  async shutdown({ grace_s = null }) { await rt.shutdown(grace_s); return null; },
  // -- the 0.10 API beyond a box's lifecycle (older releases answer OpUnsupported) ---------
  async clone({ box_id, name = null }) {
    const box = await boxOf(box_id);
    const clone = await api(box, "cloneBox", "clone")(null, name);
    boxes.set(clone.id, clone);
    return { id: clone.id };
  },
  async export({ box_id, dest }) {
    return { path: String(await api(await boxOf(box_id), "export", "export")(dest)) };
  },
  async import_box({ archive_path, name = null }) {
    const box = await api(rt, "importBox", "import_box")(archive_path, name);
    boxes.set(box.id, box);
    return { id: box.id };
  },
  async snapshot_create({ box_id, name }) {
    const snaps = api(await boxOf(box_id), "snapshot", "snapshot_create");
    return plain(await api(snaps, "create", "snapshot_create")(name), "snapshot");
  },
  async snapshot_restore({ box_id, name }) {
    const snaps = api(await boxOf(box_id), "snapshot", "snapshot_restore");
    await api(snaps, "restore", "snapshot_restore")(name);
    return null;
  },
  async snapshot_remove({ box_id, name }) {
    const snaps = api(await boxOf(box_id), "snapshot", "snapshot_remove");
    await api(snaps, "remove", "snapshot_remove")(name);
    return null;
  },
  async snapshot_list({ box_id }) {
    const snaps = api(await boxOf(box_id), "snapshot", "snapshot_list");
    return (await api(snaps, "list", "snapshot_list")()).map((x) => plain(x, "snapshot"));
  },
  async volume_create({ name = null }) {
    const volumes = api(rt, "volumes", "volume_create");
    return plain(await api(volumes, "create", "volume_create")(name ?? undefined), "volume");
  },
  async volume_remove({ volume_id, force = false }) {
    await api(api(rt, "volumes", "volume_remove"), "remove", "volume_remove")(volume_id, force);
    return null;
  },
  async volume_list() {
    const volumes = api(rt, "volumes", "volume_list");
    return (await api(volumes, "list", "volume_list")()).map((x) => plain(x, "volume"));
  },
  async image_list() {
    const images = api(rt, "images", "image_list");
    return (await api(images, "list", "image_list")()).map((x) => plain(x, "image"));
  },
  async get_or_create({ options, name = null }) {
    const got = await api(rt, "getOrCreate", "get_or_create")(
      boxOptions(options, "get_or_create"), name);
    boxes.set(got.box.id, got.box);
    return { id: got.box.id, created: Boolean(got.created) };
  },
  async close() {
    // JsBoxlite.close() is synchronous in 0.10.0; an awaitable one is awaited.
    await api(rt, "close", "close")();
    return null;
  },
  async spawn_child({ argv }) {
    // Own a child process, as any other code in a daemon would (owner-wait property).
    const child = spawn(argv[0], argv.slice(1), { stdio: "inherit" });
    const exited = new Promise((resolve) => child.on("exit", (code, sig) =>
      resolve(code ?? (sig ? -constants.signals[sig] : null))));   // as waitstatus_to_exitcode
    await new Promise((resolve, reject) => { child.once("spawn", resolve); child.once("error", reject); });
    children.set(child.pid, exited);
    return { pid: child.pid };
  },
  async wait_child({ pid }) {
    const exited = children.get(pid);
    children.delete(pid);
    return { exit_code: await exited, error: null };
  },
  async exit({ code = 0 }) {
    setTimeout(() => process.exit(code), 50);
    return null;
  },
};

if (args.sigterm === "graceful") {
  // Also replaces withDefaultConfig's native handler, as host_main.py's loop handler does.
  onSigtermShutDown();
} else if (args.sigterm === "none") {
  // libuv puts SIG_DFL back when a signal's last listener goes, so this also removes a
  // native handler withDefaultConfig installed (host_main.py: signal.SIG_DFL).
  const noop = () => {};
  process.on("SIGTERM", noop);
  process.removeListener("SIGTERM", noop);
}

emit({ event: "ready", pid: process.pid, boxlite_version: VERSION, sdk: "node",
       sdk_version: SDK_VERSION });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch (err) {
    emit({ id: null, ok: false, error: { type: "ProtocolError",
                                         message: `bad request line: ${err.message}` } });
    return;
  }
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  const fn = Object.hasOwn(ops, req.op) ? ops[req.op] : null;
  const run = fn ? fn(req.args || {}) : Promise.reject(Object.assign(
    new TypeError(`unknown operation ${JSON.stringify(req.op)}`), { name: "ValueError" }));
  Promise.resolve(run).then(
    (result) => emit({ id: req.id, ok: true, result: result ?? null, elapsed_s: elapsed() }),
    (err) => emit({ id: req.id, ok: false, elapsed_s: elapsed(), error: errorShape(err) }),
  );
});
// stdin closed: the harness is gone or done; leave like a daemon losing its supervisor.
lines.on("close", () => process.exit(0));
