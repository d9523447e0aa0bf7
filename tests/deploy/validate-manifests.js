#!/usr/bin/env node
// Validates Kubernetes manifests against the Kubernetes API schemas.
//   node tests/deploy/validate-manifests.js FILE.yaml...
// Every YAML document of every file is parsed as Kubernetes parses it (YAML 1.1: 0440 is
// octal, yes/no are booleans; duplicate keys are errors) and validated with the JSON
// schemas of kubernetes-models (the Kubernetes OpenAPI schemas; ServiceMonitor from
// @kubernetes-models/prometheus-operator). Those schemas accept fields they do not know, as
// the OpenAPI documents do; an API server with strict field validation (kubectl's default)
// refuses them, so every field the schema does not name is reported here too. A
// kustomization.yaml is checked for the files it names. Prints one line per document;
// exits 1 if any document fails.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

// apiVersion -> module holding its kinds
function modelModule(apiVersion) {
  if (apiVersion === "monitoring.coreos.com/v1") {
    return "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
  }
  if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)) return null;
  return `kubernetes-models/${apiVersion}`;
}

function modelClass(apiVersion, kind) {
  const mod = modelModule(apiVersion);
  if (!mod) return null;
  let exports;
  try {
    exports = require(mod);
  } catch (e) {
    return null;
  }
  const cls = exports[kind];
  return typeof cls === "function" && cls.apiVersion === apiVersion && cls.kind === kind
    ? cls
    : null;
}

// Wraps value so that every property the validator reads is recorded, by path. The compiled
// validators read each property their schema names (and every key of a map), so a key of
// an object that was never read is a field the schema does not know.
function tracked(value, where, seen) {
  if (value === null || typeof value !== "object") return value;
  const read = new Set();
  seen.push({ where, value, read });
  const children = Array.isArray(value)
    ? value.map((v, i) => tracked(v, `${where}[${i}]`, seen))
    : Object.fromEntries(
        Object.entries(value).map(([k, v]) => [k, tracked(v, `${where}.${k}`, seen)])
      );
  return new Proxy(children, {
    get(target, prop, receiver) {
      if (typeof prop === "string") read.add(prop);
      return Reflect.get(target, prop, receiver);
    },
  });
}

// The unknown fields, outermost only: what lies under an unknown field is unread too.
function unknownFields(seen) {
  const out = [];
  for (const { where, value, read } of seen) {
    if (Array.isArray(value)) continue;
    for (const key of Object.keys(value)) {
      if (!read.has(key)) out.push(`${where}.${key}`);
    }
  }
  return out
    .filter((f) => !out.some((g) => f.startsWith(`${g}.`) || f.startsWith(`${g}[`)))
    .map((f) => f.replace(/^\./, ""));
}

function validateObject(obj) {
  const errors = [];
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return ["not a mapping"];
  const { apiVersion, kind } = obj;
  const cls = modelClass(apiVersion, kind);
  if (!cls) return [`no schema for apiVersion ${apiVersion} kind ${kind}`];
  if (!obj.metadata || !obj.metadata.name) errors.push("metadata.name is missing");
  const seen = [];
  const proxy = tracked(obj, "", seen);
  try {
    cls.prototype.validate.call(proxy);
  } catch (e) {
    errors.push(e.message);
  }
  for (const field of unknownFields(seen)) errors.push(`unknown field ${field}`);
  return errors;
}

const KUSTOMIZATION_KEYS = new Set([
  "apiVersion", "kind", "resources", "images", "namespace", "namePrefix", "nameSuffix",
  "labels", "commonAnnotations", "patches", "configMapGenerator", "secretGenerator",
  "generatorOptions", "components", "replicas",
]);

function validateKustomization(obj, file) {
  const errors = [];
  if (obj.apiVersion !== "kustomize.config.k8s.io/v1beta1" || obj.kind !== "Kustomization") {
    errors.push("a kustomization.yaml must be kustomize.config.k8s.io/v1beta1 Kustomization");
  }
  for (const key of Object.keys(obj)) {
    if (!KUSTOMIZATION_KEYS.has(key)) errors.push(`unknown or deprecated field ${key}`);
  }
  const dir = path.dirname(file);
  for (const r of obj.resources || []) {
    if (!fs.existsSync(path.join(dir, r))) errors.push(`resource ${r} does not exist`);
  }
  for (const img of obj.images || []) {
    if (!img.name) errors.push("an images entry has no name");
  }
  return errors;
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: validate-manifests.js FILE.yaml...");
    return 2;
  }
  let failed = 0;
  let checked = 0;
  for (const file of files) {
    const text = fs.readFileSync(file, "utf8");
    const docs = YAML.parseAllDocuments(text, { version: "1.1", uniqueKeys: true, prettyErrors: true });
    docs.forEach((doc, i) => {
      const label = `${file}#${i + 1}`;
      const problems = [...doc.errors, ...doc.warnings].map((e) => e.message);
      if (problems.length === 0) {
        const obj = doc.toJS({ maxAliasCount: 0 });
        if (obj === null || obj === undefined) return; // an empty document
        const isKustomization = path.basename(file) === "kustomization.yaml";
        problems.push(...(isKustomization ? validateKustomization(obj, file) : validateObject(obj)));
        if (problems.length === 0) {
          checked++;
          console.log(`ok   ${label} ${obj.kind}/${(obj.metadata && obj.metadata.name) || ""}`);
          return;
        }
      }
      failed++;
      for (const p of problems) console.log(`FAIL ${label}: ${p}`);
    });
  }
  console.log(`${checked} documents valid, ${failed} invalid`);
  return failed > 0 || checked === 0 ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
