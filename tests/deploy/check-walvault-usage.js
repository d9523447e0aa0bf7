#!/usr/bin/env node
// Checks that everything deploy/ and README.md ask of walvault exists in the binary.
//   node tests/deploy/check-walvault-usage.js --bin WALVAULT --root REPO [--out-dir DIR]
//
// What walvault offers comes from the binary itself: `walvault --help` lists the commands,
// `walvault COMMAND --help` each command's options (flag, whether it takes a value, its
// WALVAULT_* variable) and its positional arguments. Checked against it:
//   - every walvault invocation: container command/args and shell scripts in the
//     Kubernetes manifests, archive_command/restore_command lines, systemd Exec lines, the
//     Dockerfile's ENTRYPOINT/CMD, and commands in README.md's code blocks: the
//     command exists, every --flag is an option of that command (a value where it takes
//     one), the positional arguments are as many as the command's usage names;
//   - every WALVAULT_* variable a container sets is an option of what the container runs;
//   - every image a manifest names is one deploy/Dockerfile builds (its "# image: NAME
//     target=STAGE" lines, each STAGE a stage of the file), and kustomization.yaml's
//     images name those;
//   - deploy/walvault.conf.example lists every option of every command, and nothing else;
//     the config files of the manifests (walvault-config) name known keys.
// --out-dir DIR receives the config files, for the caller to load with the binary:
// walvault.conf.example with every option uncommented (those the binary does not have yet
// left out), and each walvault*.conf of a ConfigMap as CONFIGMAP-KEY.
//
// A command the design names but the binary does not have yet (PENDING_COMMANDS) is
// reported as pending, not failed, and so are the options only it takes. Exit status: 0
// all good, 1 something failed, 3 nothing failed but something is pending.
"use strict";

const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const YAML = require("yaml");

// Designed in DESIGN.md, being built: until the binary has them, what uses them is pending.
const PENDING_COMMANDS = new Set(["agent"]);
// Config keys of the agent announced for it (issue 7); pending until `agent --help` has them.
const PENDING_AGENT_KEYS = new Set([
  "listen", "archive-mode", "full-every", "incremental-every", "lease-seconds",
  "max-lag-seconds", "max-lag-bytes",
]);
// Keys of a [node NAME] section (coord/cluster.c).
const NODE_KEYS = new Set(["role", "pg", "archive", "pgdata"]);
// Options that make no sense in a config file.
const NOT_IN_CONFIG = new Set(["help", "version", "config"]);

const results = { ok: 0, fail: 0, pending: 0 };
function report(kind, where, what) {
  results[kind]++;
  const tag = { ok: "ok     ", fail: "FAIL   ", pending: "PENDING" }[kind];
  console.log(`${tag} ${where}: ${what}`);
}

// ---- what the binary offers -------------------------------------------------------------

function run(bin, args) {
  try {
    return execFileSync(bin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    return (e.stdout || "") + (e.stderr || "");
  }
}

function parseOptions(text) {
  const options = new Map(); // name -> { value: bool, env }
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    const m = /^ {2}--([a-z0-9-]+)( V)?(\s|$)/.exec(line);
    if (!m) return;
    const env = /env (WALVAULT_[A-Z0-9_]+)/.exec(lines[i + 1] || "");
    options.set(m[1], { value: Boolean(m[2]), env: env ? env[1] : null });
  });
  return options;
}

function helpModel(bin) {
  const top = run(bin, ["--help"]);
  const commands = new Map();
  let inCommands = false;
  for (const line of top.split("\n")) {
    if (/^commands:/.test(line)) {
      inCommands = true;
      continue;
    }
    if (inCommands && line.trim() === "") break;
    const m = inCommands && /^ {2}([a-z][a-z-]*)\b/.exec(line);
    if (m) commands.set(m[1], null);
  }
  if (commands.size === 0) throw new Error(`${bin} --help lists no commands`);
  for (const name of commands.keys()) {
    const text = run(bin, [name, "--help"]);
    const first = text.split("\n")[0];
    const prefix = `usage: walvault [options] ${name}`;
    if (!first.startsWith(prefix)) {
      commands.delete(name);
      continue;
    }
    // Positional arguments: the upper-case words of the synopsis before any option.
    const synopsis = first.slice(prefix.length).split(/ {2,}/)[0].trim().split(/\s+/);
    const positional = [];
    for (const w of synopsis) {
      if (!/^[A-Z][A-Z_]*$/.test(w)) break;
      positional.push(w);
    }
    commands.set(name, { options: parseOptions(text), positional });
  }
  const all = new Map();
  for (const c of commands.values()) for (const [k, v] of c.options) all.set(k, v);
  return { commands, all };
}

// ---- finding invocations ----------------------------------------------------------------

// Shell-like words of a line: quotes grouped, ; && || | ( ) as words of their own, a #
// at a word's start ends the line.
function shellWords(line) {
  const words = [];
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === "#") break;
    const op = /^(&&|\|\||[;|()&])/.exec(line.slice(i));
    if (op) {
      words.push({ op: op[1] });
      i += op[1].length;
      continue;
    }
    let w = "";
    while (i < line.length && !/\s/.test(line[i]) && !/^(&&|\|\||[;|()&])/.test(line.slice(i))) {
      const q = line[i];
      if (q === "'" || q === '"') {
        const end = line.indexOf(q, i + 1);
        if (end < 0) {
          w += line.slice(i + 1);
          i = line.length;
        } else {
          w += line.slice(i + 1, end);
          i = end + 1;
        }
      } else if (q === "\\" && i + 1 < line.length) {
        w += line[i + 1];
        i += 2;
      } else {
        w += q;
        i++;
      }
    }
    words.push({ w });
  }
  return words;
}

const COMMAND_START = new Set(["exec", "then", "do", "else", "sudo", "time", "nohup", "$"]);
const isWalvault = (w) => w !== undefined && /^(.*\/)?walvault$/.test(w);

// The walvault invocations of a shell line: walvault at a command's position, up to the
// next operator or redirection.
function invocationsInLine(line) {
  const words = shellWords(line);
  const out = [];
  let atStart = true;
  for (let i = 0; i < words.length; i++) {
    const t = words[i];
    if (t.op) {
      atStart = true;
      continue;
    }
    // sudo -u walvault walvault ...: the first walvault is a user name
    if (atStart && i > 0 && words[i - 1].w === "-u") continue;
    // kubectl exec POD -- walvault ..., env -- ...: a command follows
    if (t.w === "--") {
      atStart = true;
      continue;
    }
    if (atStart && isWalvault(t.w)) {
      const argv = [];
      for (i = i + 1; i < words.length && !words[i].op && !/^[0-9]*[<>]/.test(words[i].w); i++) {
        argv.push(words[i].w);
      }
      out.push(argv);
      atStart = false;
      i--;
      continue;
    }
    // sudo -u USER, env VAR=..., a prompt: still at the start of a command
    if (atStart && (COMMAND_START.has(t.w) || /^-/.test(t.w) || /^[A-Z_]+=/.test(t.w))) {
      continue;
    }
    atStart = false;
  }
  return out;
}

function invocationsInScript(text) {
  const out = [];
  text.split("\n").forEach((line, i) => {
    for (const argv of invocationsInLine(line)) out.push({ argv, line: i + 1 });
  });
  return out;
}

// archive_command = '...' and restore_command = '...', commented or not
function invocationsInPostgresConf(text) {
  const out = [];
  text.split("\n").forEach((line, i) => {
    const m = /^\s*#?\s*(archive_command|restore_command)\s*=\s*'(.*)'\s*(#.*)?$/.exec(line);
    if (!m) return;
    for (const argv of invocationsInLine(m[2])) out.push({ argv, line: i + 1 });
  });
  return out;
}

// ---- checking one invocation -------------------------------------------------------------

function checkInvocation(model, where, argv, envNames) {
  const shown = `walvault ${argv.join(" ")}`;
  const opts = [];
  const positional = [];
  let command = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--")) {
      const [name, inline] = a.slice(2).split(/=(.*)/s);
      const known = model.all.get(name);
      const takes = known ? known.value : inline === undefined && i + 1 < argv.length && !argv[i + 1].startsWith("-");
      let value = inline;
      if (takes && inline === undefined) value = argv[++i];
      opts.push({ name, value, takes });
    } else if (a === "-h") {
      opts.push({ name: "help" });
    } else if (command === null) {
      command = a;
    } else {
      positional.push(a);
    }
  }
  if (command === null) {
    const bad = opts.filter((o) => o.name !== "help" && o.name !== "version");
    if (bad.length === 0) return report("ok", where, shown);
    return report("fail", where, `${shown}: no command`);
  }
  const spec = model.commands.get(command);
  if (!spec) {
    if (PENDING_COMMANDS.has(command)) {
      return report("pending", where, `${shown}: this walvault has no command ${command} yet`);
    }
    return report("fail", where, `${shown}: walvault has no command ${command}`);
  }
  const problems = [];
  for (const o of opts) {
    const known = spec.options.get(o.name);
    if (!known) {
      problems.push(`walvault ${command} has no option --${o.name}`);
    } else if (known.value && (o.value === undefined || o.value === "")) {
      problems.push(`--${o.name} wants a value`);
    } else if (!known.value && o.value !== undefined && o.takes) {
      problems.push(`--${o.name} takes no value`);
    }
  }
  if (!opts.some((o) => o.name === "help") && positional.length !== spec.positional.length) {
    problems.push(`walvault ${command} takes ${spec.positional.length} argument(s)` +
                  `${spec.positional.length ? ` (${spec.positional.join(" ")})` : ""}, given ${positional.length}`);
  }
  for (const env of envNames || []) {
    if (![...spec.options.values()].some((o) => o.env === env)) {
      problems.push(`${env} is not an option of walvault ${command}`);
    }
  }
  if (problems.length) return report("fail", where, `${shown}: ${problems.join("; ")}`);
  return report("ok", where, shown + (envNames && envNames.length ? ` (env ${envNames.join(" ")})` : ""));
}

// ---- sources -------------------------------------------------------------------------------

function readYamlDocs(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1" });
  return docs.map((d) => d.toJS()).filter((d) => d && typeof d === "object");
}

function podSpecs(obj) {
  const s = obj.spec || {};
  if (obj.kind === "Pod") return [s];
  if (s.template && s.template.spec) return [s.template.spec];
  if (s.jobTemplate && s.jobTemplate.spec && s.jobTemplate.spec.template) {
    return [s.jobTemplate.spec.template.spec];
  }
  return [];
}

function dockerfileImages(root) {
  const text = fs.readFileSync(path.join(root, "deploy/Dockerfile"), "utf8");
  const stages = new Set();
  const images = new Map(); // "name:tag" -> stage
  for (const line of text.split("\n")) {
    const from = /^FROM\s+\S+\s+AS\s+(\S+)/i.exec(line);
    if (from) stages.add(from[1]);
    const img = /^#\s*image:\s*(\S+)\s+target=(\S+)/.exec(line);
    if (img) images.set(img[1], img[2]);
  }
  for (const [image, stage] of images) {
    if (stages.has(stage)) report("ok", "deploy/Dockerfile", `image ${image} is built by stage ${stage}`);
    else report("fail", "deploy/Dockerfile", `image ${image}: no stage ${stage}`);
  }
  if (images.size === 0) report("fail", "deploy/Dockerfile", "declares no image (# image: NAME:TAG target=STAGE)");
  // ENTRYPOINT + CMD of the default (last) stage
  const exec = (kw) => {
    const m = [...text.matchAll(new RegExp(`^${kw}\\s+(\\[.*\\])\\s*$`, "gm"))].pop();
    return m ? JSON.parse(m[1]) : [];
  };
  const argv = [...exec("ENTRYPOINT"), ...exec("CMD")];
  return { images, argv };
}

function checkManifests(model, root, images, outDir) {
  const dir = path.join(root, "deploy/kubernetes");
  const imageNames = new Map([...images.keys()].map((i) => [i.replace(/:[^:/]*$/, ""), i]));
  for (const f of fs.readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    const file = path.join(dir, f);
    const rel = path.relative(root, file);
    for (const obj of readYamlDocs(file)) {
      if (obj.kind === "Kustomization") {
        for (const img of obj.images || []) {
          const name = `${img.newName || img.name}:${img.newTag || "latest"}`;
          if (imageNames.has(img.name) && images.has(name)) {
            report("ok", rel, `images: ${img.name} -> ${name}`);
          } else {
            report("fail", rel, `images: ${img.name} -> ${name} is not an image deploy/Dockerfile builds`);
          }
        }
        continue;
      }
      if (obj.kind === "ConfigMap") {
        for (const [key, value] of Object.entries(obj.data || {})) {
          const where = `${rel} ConfigMap/${obj.metadata.name} ${key}`;
          const found = key.endsWith(".sh")
            ? invocationsInScript(value)
            : /postgresql|\.conf$/.test(key) ? invocationsInPostgresConf(value) : [];
          for (const { argv, line } of found) checkInvocation(model, `${where}:${line}`, argv);
          if (/^walvault.*\.conf$/.test(key)) {
            const { keep } = checkConfigText(model, where, value, false);
            report("ok", where, `${keep.length} known keys and sections`);
            if (outDir) {
              fs.writeFileSync(path.join(outDir, `${obj.metadata.name}-${key}`), value, { mode: 0o600 });
            }
          }
        }
        continue;
      }
      for (const spec of podSpecs(obj)) {
        for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
          const where = `${rel} ${obj.kind}/${obj.metadata.name} container ${c.name}`;
          const image = c.image || "";
          if (images.has(image)) report("ok", where, `image ${image}`);
          else if (image) report("fail", where, `image ${image} is not built by deploy/Dockerfile (${[...images.keys()].join(", ")})`);
          const env = (c.env || []).map((e) => e.name).filter((n) => n.startsWith("WALVAULT_"));
          let argv = [...(c.command || []), ...(c.args || [])];
          if (!c.command && image.startsWith("walvault:")) argv = ["walvault", ...argv];
          let found = [];
          if (isWalvault(argv[0])) {
            found = [{ argv: argv.slice(1) }];
          } else if (/^(.*\/)?(ba)?sh$/.test(argv[0] || "")) {
            const script = argv[argv.findIndex((a) => /^-[a-z]*c$/.test(a)) + 1] || "";
            found = invocationsInScript(script);
          }
          for (const { argv: a, line } of found) {
            checkInvocation(model, `${where}${line ? `:${line}` : ""}`, a, env);
          }
          if (found.length === 0) {
            // Not running walvault itself (PostgreSQL: archive_command, restore_command):
            // its WALVAULT_* variables must be options of wal-push and wal-fetch.
            for (const name of ["wal-push", "wal-fetch"]) {
              if (env.length) checkInvocation(model, `${where} (environment)`, [name, ...(name === "wal-push" ? ["%p"] : ["%f", "%p"])], env);
            }
          }
        }
      }
    }
  }
}

function checkSystemd(model, root) {
  const dir = path.join(root, "deploy/systemd");
  for (const f of fs.readdirSync(dir).filter((n) => /\.(service|timer)$/.test(n)).sort()) {
    const rel = `deploy/systemd/${f}`;
    const text = fs.readFileSync(path.join(dir, f), "utf8").replace(/\\\n/g, " ");
    let n = 0;
    text.split("\n").forEach((line, i) => {
      const m = /^Exec[A-Za-z]*=[-@:+!]*(.*)$/.exec(line);
      if (!m) return;
      const words = shellWords(m[1]).map((t) => t.w || t.op);
      if (isWalvault(words[0])) {
        n++;
        checkInvocation(model, `${rel}:${i + 1}`, words.slice(1));
      }
    });
    if (n === 0) report("fail", rel, "runs no walvault command");
  }
}

function checkDocs(model, root) {
  const file = path.join(root, "README.md");
  if (!fs.existsSync(file)) return;
  let inCode = false;
  let pending = ""; // a command continued on the next line with a trailing backslash
  fs.readFileSync(file, "utf8").split("\n").forEach((raw, i) => {
    if (/^\s*```/.test(raw)) {
      inCode = !inCode;
      pending = "";
      return;
    }
    if (!inCode) return;
    if (/\\\s*$/.test(raw)) {
      pending += raw.replace(/\\\s*$/, " ");
      return;
    }
    const line = pending + raw;
    pending = "";
    const pg = /^\s*#?\s*(archive_command|restore_command)\s*=/.test(line);
    const found = pg ? invocationsInPostgresConf(line) : invocationsInLine(line).map((argv) => ({ argv }));
    for (const { argv } of found) checkInvocation(model, `README.md:${i + 1}`, argv);
  });
}

// ---- config files ------------------------------------------------------------------------

// Keys of a config text: [section] headers and key = value lines; with commented, the
// commented-out ones ("# key = value", "# [section]") are taken as lines of the file.
function configEntries(text, commented) {
  const entries = [];
  let section = "";
  text.split("\n").forEach((raw, i) => {
    let line = raw;
    if (commented) {
      const m = /^# (\[[^\]]+\]|[a-z][a-z0-9_-]* = .*)$/.exec(raw);
      if (m) line = m[1];
    }
    const sec = /^\s*\[([^\]]+)\]\s*$/.exec(line);
    if (sec) {
      section = sec[1].trim();
      entries.push({ section, line: i + 1, header: true, text: line });
      return;
    }
    const kv = /^\s*([A-Za-z0-9_-]+)\s*=/.exec(line);
    if (kv) entries.push({ section, key: kv[1].replace(/_/g, "-"), line: i + 1, text: line });
  });
  return entries;
}

function checkConfigText(model, where, text, commented) {
  const used = new Set();
  const keep = [];
  const agentKnown = model.commands.has("agent");
  for (const e of configEntries(text, commented)) {
    if (e.header) {
      const ok = e.section === "walvault" || /^node\s+\S+$/.test(e.section);
      if (!ok) report("fail", `${where}:${e.line}`, `section [${e.section}] is neither [walvault] nor [node NAME]`);
      keep.push(e.text);
      continue;
    }
    if (/^node\s/.test(e.section)) {
      if (NODE_KEYS.has(e.key)) keep.push(e.text);
      else report("fail", `${where}:${e.line}`, `[${e.section}]: unknown key ${e.key} (known: ${[...NODE_KEYS].join(", ")})`);
      continue;
    }
    used.add(e.key);
    if (model.all.has(e.key) && !NOT_IN_CONFIG.has(e.key)) {
      keep.push(e.text);
    } else if (!agentKnown && PENDING_AGENT_KEYS.has(e.key)) {
      report("pending", `${where}:${e.line}`, `key ${e.key}: this walvault has no agent command yet`);
    } else {
      report("fail", `${where}:${e.line}`, `key ${e.key} is not an option of walvault`);
    }
  }
  return { used, keep };
}

function checkConfigExample(model, root, outDir) {
  const rel = "deploy/walvault.conf.example";
  const { used, keep } = checkConfigText(model, rel, fs.readFileSync(path.join(root, rel), "utf8"), true);
  let missing = 0;
  for (const name of model.all.keys()) {
    if (NOT_IN_CONFIG.has(name) || used.has(name)) continue;
    missing++;
    report("fail", rel, `option ${name} of walvault is not in the example`);
  }
  if (missing === 0) report("ok", rel, `lists all ${[...model.all.keys()].filter((k) => !NOT_IN_CONFIG.has(k)).length} options`);
  if (outDir) fs.writeFileSync(path.join(outDir, "walvault.conf.example"), `${keep.join("\n")}\n`, { mode: 0o600 });
}

// ---- main --------------------------------------------------------------------------------

function main(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, "")] = argv[i + 1];
  if (!args.bin || !args.root) {
    console.error("usage: check-walvault-usage.js --bin WALVAULT --root REPO [--out-dir DIR]");
    return 2;
  }
  const model = helpModel(args.bin);
  console.log(`walvault commands: ${[...model.commands.keys()].join(" ")}`);
  const { images, argv: entry } = dockerfileImages(args.root);
  if (isWalvault(entry[0])) checkInvocation(model, "deploy/Dockerfile ENTRYPOINT+CMD", entry.slice(1));
  else report("fail", "deploy/Dockerfile", `ENTRYPOINT is not walvault: ${JSON.stringify(entry)}`);
  checkManifests(model, args.root, images, args["out-dir"]);
  checkSystemd(model, args.root);
  for (const { argv: a, line } of invocationsInPostgresConf(fs.readFileSync(path.join(args.root, "deploy/postgresql.conf.example"), "utf8"))) {
    checkInvocation(model, `deploy/postgresql.conf.example:${line}`, a);
  }
  checkConfigExample(model, args.root, args["out-dir"]);
  checkDocs(model, args.root);
  console.log(`${results.ok} ok, ${results.fail} failed, ${results.pending} pending`);
  if (results.fail) return 1;
  return results.pending ? 3 : 0;
}

process.exitCode = main(process.argv.slice(2));
