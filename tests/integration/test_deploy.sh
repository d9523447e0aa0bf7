#!/usr/bin/env bash
# deploy/ as an operator meets it, checked without a Kubernetes cluster, a Docker engine or a
# running systemd:
#   - the Dockerfile's build stage is the project's install and build scripts, and they run
#     here as they are (idempotent, quiet when everything is installed); its runtime stage
#     installs every library the built binary links;
#   - yamllint is clean on deploy/ (deploy/.yamllint);
#   - every Kubernetes manifest validates against the Kubernetes API schemas (kubernetes-
#     models, tests/deploy), unknown fields included, as written and as kustomize renders
#     it (when kubectl is installed);
#   - the manifests keep their promises (tests/deploy/check-policy.js: probes, limits,
#     read-only root, secrets as files only, replication from the pod only);
#   - every walvault command, flag, WALVAULT_* variable, config key and image that deploy/
#     and README.md use exists in the binary and in the Dockerfile
#     (tests/deploy/check-walvault-usage.js), and the config files load;
#   - the systemd units pass systemd-analyze verify and its offline security review.
# Runs once (not again against s3://: it stores nothing). Exit 77 (skipped) when all of
# that passes but the binary lacks a command deploy/ uses that is still being built.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

root=${WALVAULT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root"
wv_tmpdir

# ---------------------------------------------------------------------------------------
wv_step "Dockerfile: the build stage's steps are the project's scripts"
build_runs=$(awk '
  /^FROM / { in_build = ($0 ~ / AS build$/) }
  in_build && /^RUN / { line = $0; while (line ~ /\\$/ && (getline next_line) > 0) { sub(/\\$/, "", line); line = line " " next_line }
                        sub(/^RUN +/, "", line); gsub(/ +/, " ", line); print line }' deploy/Dockerfile)
wv_assert_eq $'bash scripts/install-deps.sh\nbash scripts/build.sh --release' "$build_runs" \
  "RUN steps of deploy/Dockerfile's build stage"
workdir=$(awk '/^FROM / { in_build = ($0 ~ / AS build$/) } in_build && /^WORKDIR / { print $2 }' deploy/Dockerfile)
grep -q "^COPY --from=build $workdir/build/walvault /usr/local/bin/walvault\$" deploy/Dockerfile ||
  wv_fail "deploy/Dockerfile does not copy $workdir/build/walvault (what scripts/build.sh --release builds) to /usr/local/bin/walvault"

wv_step "run them: bash scripts/install-deps.sh"
out=$(bash scripts/install-deps.sh 2>&1) || wv_fail "scripts/install-deps.sh failed: $out"
if [[ -n $out ]]; then # it installed something: a second run must have nothing left to do
  echo "$out"
  out=$(bash scripts/install-deps.sh 2>&1) || wv_fail "scripts/install-deps.sh failed the second time: $out"
  [[ -z $out ]] || wv_fail "scripts/install-deps.sh is not quiet when everything is installed: $out"
fi

command -v node >/dev/null || wv_fail "node not found: run scripts/install-deps.sh"
[[ -f tests/deploy/node_modules/kubernetes-models/package.json ]] ||
  wv_fail "tests/deploy/node_modules is missing: run scripts/install-deps.sh"

wv_step "run them: bash scripts/build.sh --release"
release=$(bash scripts/build.sh --release | tail -n 1) || wv_fail "scripts/build.sh --release failed"
wv_assert_eq "$root/build/walvault" "$release" "binary scripts/build.sh --release reports"
"$release" --version >/dev/null || wv_fail "$release --version failed"

wv_step "Dockerfile: the runtime stages install every library walvault links"
runtime=$(sed -n 's/^ARG RUNTIME_PACKAGES="\(.*\)"$/\1/p' deploy/Dockerfile)
[[ -n $runtime ]] || wv_fail "deploy/Dockerfile has no ARG RUNTIME_PACKAGES=\"...\""
# shellcheck disable=SC2016 # the Dockerfile's words, not this shell's
[[ $(grep -c 'apt-get install .*\${RUNTIME_PACKAGES}' deploy/Dockerfile) -ge 2 ]] ||
  wv_fail "the walvault and postgres stages of deploy/Dockerfile must install \${RUNTIME_PACKAGES}"
needed=()
while read -r soname; do
  # (awk reads all of its input: a pipe closed early would fail under pipefail)
  lib=$(ldconfig -p | awk -v s="$soname" '$1 == s && !found { print $NF; found = 1 }')
  [[ -n $lib ]] || wv_fail "cannot find $soname, which walvault links"
  pkg=$({ dpkg -S "$lib" || dpkg -S "$(readlink -f "$lib")"; } 2>/dev/null | awk -F: 'NR == 1 { print $1 }')
  [[ -n $pkg ]] || wv_fail "no Debian package holds $lib ($soname)"
  needed+=("$pkg")
done < <(readelf -d "$release" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for pkg in "${needed[@]}"; do
  [[ $pkg == libc6 || " $runtime " == *" $pkg "* ]] ||
    wv_fail "walvault links a library of $pkg, which RUNTIME_PACKAGES in deploy/Dockerfile lacks"
done
for pkg in $runtime; do
  [[ $pkg == ca-certificates || " ${needed[*]} " == *" $pkg "* ]] ||
    echo "   note: RUNTIME_PACKAGES has $pkg, which this walvault does not link (yet)"
done

# ---------------------------------------------------------------------------------------
wv_step "yamllint deploy/"
command -v yamllint >/dev/null || wv_fail "yamllint not found: run scripts/install-deps.sh"
yamllint -s -c deploy/.yamllint deploy/ || wv_fail "yamllint found problems in deploy/"

wv_step "Kubernetes manifests against the API schemas"
node tests/deploy/validate-manifests.js deploy/kubernetes/*.yaml >"$WV_TMP/validate.log" 2>&1 || {
  cat "$WV_TMP/validate.log"
  wv_fail "deploy/kubernetes does not validate"
}
tail -n 1 "$WV_TMP/validate.log"
if command -v kubectl >/dev/null; then
  wv_step "kustomize build deploy/kubernetes, and its output against the schemas"
  kubectl kustomize deploy/kubernetes >"$WV_TMP/rendered.yaml" 2>"$WV_TMP/kustomize.log" || {
    cat "$WV_TMP/kustomize.log"
    wv_fail "kubectl kustomize deploy/kubernetes failed"
  }
  node tests/deploy/validate-manifests.js "$WV_TMP/rendered.yaml" >"$WV_TMP/validate.log" 2>&1 || {
    cat "$WV_TMP/validate.log"
    wv_fail "what kustomize renders from deploy/kubernetes does not validate"
  }
  tail -n 1 "$WV_TMP/validate.log"
else
  echo "   note: kubectl is not installed; kustomization.yaml checked for its files only"
fi

wv_step "Kubernetes manifests keep their promises"
node tests/deploy/check-policy.js deploy/kubernetes >"$WV_TMP/policy.log" 2>&1 || {
  grep -v '^ok' "$WV_TMP/policy.log"
  wv_fail "deploy/kubernetes breaks a rule of tests/deploy/check-policy.js"
}
tail -n 1 "$WV_TMP/policy.log"

# ---------------------------------------------------------------------------------------
bin=${WALVAULT_BIN:-$release}
wv_step "every walvault command, flag, variable, key and image deploy/ uses exists ($bin)"
mkdir "$WV_TMP/conf"
usage_status=0
node tests/deploy/check-walvault-usage.js --bin "$bin" --root "$root" --out-dir "$WV_TMP/conf" \
  >"$WV_TMP/usage.log" 2>&1 || usage_status=$?
grep -v '^ok' "$WV_TMP/usage.log" || true
case $usage_status in
  0 | 3) ;;
  *) wv_fail "deploy/ or README.md use what walvault does not have (see above)" ;;
esac
for conf in "$WV_TMP"/conf/*; do
  "$bin" --config "$conf" --version >/dev/null 2>"$WV_TMP/conf.err" ||
    wv_fail "walvault refuses $(basename "$conf"): $(cat "$WV_TMP/conf.err")"
done

# ---------------------------------------------------------------------------------------
wv_step "systemd units: systemd-analyze verify and security"
command -v systemd-analyze >/dev/null || wv_fail "systemd-analyze not found: run scripts/install-deps.sh"
units=$WV_TMP/units
mkdir "$units"
for unit in deploy/systemd/*.service; do
  name=$(basename "$unit")
  for directive in Restart=on-failure NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes \
    User=walvault Group=walvault 'ReadWritePaths=' 'StateDirectory='; do
    grep -q "^$directive" "$unit" || wv_fail "$name lacks $directive"
  done
  grep -q '^ExecStart=/usr/local/bin/walvault ' "$unit" || wv_fail "$name does not run /usr/local/bin/walvault"
  # The units name the installed binary; verify checks that it exists: use the built one.
  sed "s#/usr/local/bin/walvault#$release#g" "$unit" >"$units/$name"
done
for unit in "$units"/*.service; do
  instance=$(basename "$unit")
  [[ $instance != *@.service ]] || instance=${instance%@.service}@db1.service
  out=$(cd "$units" && systemd-analyze verify --man=no "./$instance" 2>&1) ||
    wv_fail "systemd-analyze verify $instance failed: $out"
  [[ -z $out ]] || wv_fail "systemd-analyze verify $instance warns: $out"
  # Offline review of the sandboxing: 2.0 or less is what systemd calls OK.
  out=$(cd "$units" && systemd-analyze security --offline=true --threshold=20 --no-pager "./$instance" 2>&1) ||
    wv_fail "systemd-analyze security rates $instance above 2.0: $(echo "$out" | tail -n 1)"
  echo "   $instance: exposure $(echo "$out" | sed -n 's/^.*Overall exposure level for [^:]*: \([0-9.]* [A-Z]*\).*$/\1/p')"
done

if ((usage_status == 3)); then
  wv_skip "every check passed, but this walvault lacks a command deploy/ uses (PENDING above): its flags are unchecked"
fi
