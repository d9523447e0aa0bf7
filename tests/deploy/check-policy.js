#!/usr/bin/env node
// Checks what deploy/kubernetes promises beyond its schema (issue 7, README.md):
//   node tests/deploy/check-policy.js DIR
//   - every container: CPU and memory requests and limits; no privilege escalation; all
//     capabilities dropped; a read-only root file system with an emptyDir at /tmp;
//   - secrets reach containers as files only: no env from a Secret, no secret-looking
//     option as an argument; WALVAULT_KEY_FILE and AWS_SHARED_CREDENTIALS_FILE name files
//     on a Secret volume the container mounts; a walvault config file comes from a
//     ConfigMap or a Secret;
//   - the walvault agent sidecar and the coordinator: liveness on /healthz, readiness on /readyz at its
//     --listen port, the pod annotated for Prometheus with that port and /metrics;
//   - a restore init container runs walvault restore into the PostgreSQL data volume;
//   - pg_hba.conf allows replication from the pod only (local, 127.0.0.1, ::1) or rejects it;
//   - the coordinator runs as one replica, replaced rather than rolled.
// Prints one line per check; exits 1 if any fails.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

let failed = 0;
let passed = 0;
function check(ok, where, what) {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${where}: ${what}`);
}

function load(dir) {
  const objs = [];
  for (const f of fs.readdirSync(dir).filter((n) => /\.ya?ml$/.test(n) && n !== "kustomization.yaml")) {
    for (const d of YAML.parseAllDocuments(fs.readFileSync(path.join(dir, f), "utf8"), { version: "1.1" })) {
      const o = d.toJS();
      if (o && o.kind) objs.push({ file: f, o });
    }
  }
  return objs;
}

const SECRET_FLAGS = /^--(s3-secret-access-key|s3-session-token|key|password)(=|$)/;

function checkContainer(where, c, volumes, podAnnotations) {
  const r = c.resources || {};
  for (const kind of ["requests", "limits"]) {
    check(r[kind] && r[kind].cpu && r[kind].memory, where, `resources.${kind} set cpu and memory`);
  }
  const sc = c.securityContext || {};
  check(sc.allowPrivilegeEscalation === false, where, "allowPrivilegeEscalation: false");
  check(sc.capabilities && (sc.capabilities.drop || []).includes("ALL"), where, "capabilities drop ALL");
  check(sc.readOnlyRootFilesystem === true, where, "readOnlyRootFilesystem: true");
  const mounts = c.volumeMounts || [];
  const mountOf = (p) => mounts.find((m) => m.mountPath === p);
  const tmp = mountOf("/tmp");
  check(tmp && volumes[tmp.name] && volumes[tmp.name].emptyDir, where, "/tmp is an emptyDir");

  const env = c.env || [];
  const fromSecret = env.filter((e) => e.valueFrom && e.valueFrom.secretKeyRef).map((e) => e.name);
  const envFromSecret = (c.envFrom || []).filter((e) => e.secretRef);
  check(fromSecret.length === 0 && envFromSecret.length === 0, where,
        `no environment variable from a Secret${fromSecret.length ? ` (${fromSecret.join(", ")})` : ""}`);
  const argv = [...(c.command || []), ...(c.args || [])];
  const secretArgs = argv.filter((a) => SECRET_FLAGS.test(a) || /password=|aws_secret/i.test(a));
  check(secretArgs.length === 0, where, `no secret in the arguments${secretArgs.length ? ` (${secretArgs.join(" ")})` : ""}`);

  // A file named by the environment must be on a mounted volume of the right kind.
  const fileOn = (file) => {
    const m = mounts
      .filter((v) => file === v.mountPath || file.startsWith(`${v.mountPath.replace(/\/$/, "")}/`))
      .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    return m ? volumes[m.name] : null;
  };
  for (const e of env) {
    if (!e.value) continue;
    if (e.name === "WALVAULT_KEY_FILE" || e.name === "AWS_SHARED_CREDENTIALS_FILE") {
      const v = fileOn(e.value);
      check(v && v.secret, where, `${e.name}=${e.value} is a file of a mounted Secret`);
    } else if (e.name === "WALVAULT_CONFIG") {
      const v = fileOn(e.value);
      check(v && (v.secret || v.configMap), where, `${e.name}=${e.value} is a file of a mounted ConfigMap or Secret`);
    } else if (/^(WALVAULT_S3_SECRET_ACCESS_KEY|WALVAULT_S3_SESSION_TOKEN|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|PGPASSWORD|POSTGRES_PASSWORD)$/.test(e.name)) {
      check(false, where, `${e.name} holds a secret as an environment value`);
    }
  }

  // The walvault agent and coordinator: probes on the listen port, scrape annotations.
  const words = argv.filter((a) => !/^(.*\/)?walvault$/.test(a));
  const daemon = ["agent", "coordinator"].find((w) => words.includes(w));
  if (daemon && (c.image || "").startsWith("walvault:")) {
    const i = words.indexOf("--listen");
    const listen = i >= 0 ? words[i + 1] : daemon === "agent" ? "127.0.0.1:9187" : "127.0.0.1:9188";
    const port = Number(listen.split(":").pop());
    check(!/^127\.|^localhost:/.test(listen), where, `--listen ${listen} is reachable by the kubelet's probes`);
    const portOf = (p) => (typeof p === "number" ? p : ((c.ports || []).find((x) => x.name === p) || {}).containerPort);
    const probe = (pr, url) => pr && pr.httpGet && pr.httpGet.path === url && portOf(pr.httpGet.port) === port;
    check(probe(c.livenessProbe, "/healthz"), where, `livenessProbe GET /healthz on port ${port}`);
    check(probe(c.readinessProbe, "/readyz"), where, `readinessProbe GET /readyz on port ${port}`);
    const a = podAnnotations || {};
    check(a["prometheus.io/scrape"] === "true" && Number(a["prometheus.io/port"]) === port &&
          a["prometheus.io/path"] === "/metrics", where,
          `pod annotated prometheus.io/scrape, port ${port}, path /metrics`);
  }
}

function checkPgHba(where, text) {
  let lines = 0;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) continue;
    const f = line.split(/\s+/);
    const dbs = f[1] ? f[1].split(",") : [];
    if (!dbs.includes("replication")) continue;
    lines++;
    const method = f[0] === "local" ? f[3] : f[4];
    const local = f[0] === "local" || ["127.0.0.1/32", "::1/128"].includes(f[3]);
    check(local || method === "reject", where, `replication only from the pod: ${line}`);
  }
  check(lines > 0, where, "has replication lines for the sidecar");
}

function main(dir) {
  const objs = load(dir);
  for (const { file, o } of objs) {
    if (o.kind === "ConfigMap") {
      for (const [k, v] of Object.entries(o.data || {})) {
        if (k === "pg_hba.conf") checkPgHba(`${file} ConfigMap/${o.metadata.name} ${k}`, v);
      }
    }
    const pod = o.spec && o.spec.template;
    if (!pod) continue;
    const spec = pod.spec;
    const volumes = Object.fromEntries((spec.volumes || []).map((v) => [v.name, v]));
    for (const t of o.spec.volumeClaimTemplates || []) volumes[t.metadata.name] = { pvc: true };
    const base = `${file} ${o.kind}/${o.metadata.name}`;
    check(spec.automountServiceAccountToken === false, base, "automountServiceAccountToken: false");
    check(spec.securityContext && spec.securityContext.runAsNonRoot === true, base, "runAsNonRoot");
    for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
      checkContainer(`${base} ${c.name}`, c, volumes, (pod.metadata || {}).annotations);
    }
    // Every Secret volume is mounted by some container.
    for (const v of Object.values(volumes).filter((x) => x.secret)) {
      const used = [...(spec.initContainers || []), ...(spec.containers || [])]
        .some((c) => (c.volumeMounts || []).some((m) => m.name === v.name));
      check(used, base, `Secret volume ${v.name} is mounted`);
    }
    if (o.kind === "StatefulSet") {
      const restore = (spec.initContainers || []).find((c) =>
        [...(c.command || []), ...(c.args || [])].some((a) => /walvault restore --to/.test(a)));
      const pgdata = restore && (restore.env || []).find((e) => e.name === "PGDATA");
      const onData = pgdata && (restore.volumeMounts || []).some((m) =>
        volumes[m.name] && volumes[m.name].pvc && pgdata.value.startsWith(`${m.mountPath}/`));
      check(Boolean(onData), base, "an init container runs walvault restore into the data volume");
    }
    if (o.kind === "Deployment" && /coordinator/.test(o.metadata.name)) {
      check(o.spec.replicas === 1, base, "replicas: 1");
      check(o.spec.strategy && o.spec.strategy.type === "Recreate", base, "strategy Recreate: never two at once");
    }
  }
  console.log(`${passed} ok, ${failed} failed`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv[2] || "deploy/kubernetes");
