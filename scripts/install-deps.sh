#!/usr/bin/env bash
# Installs what Playground needs on Debian 12 (as root). Idempotent and quiet when all is present.
#   scripts/install-deps.sh            system libraries and servers for running a node
#   scripts/install-deps.sh --test     plus test tools: Python clients, Autobahn (Python 2.7 venv), Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
WANT_TEST=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1

need_pkgs=(pkg-config libhiredis-dev libpq-dev libssl-dev redis-server postgresql-15 postgresql-contrib)
[[ $WANT_TEST == 1 ]] && need_pkgs+=(chromium chromium-driver)

missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $WANT_TEST == 1 ]]; then
  py=python3
  # tantivy: a search engine's fuzzy matching, the oracle of the preset search's quality test;
  # kubernetes-validate: the Kubernetes manifests against the API's schemas (with PyYAML).
  $py -c 'import websockets, openai, selenium, pytest, tantivy, kubernetes_validate, yaml' 2>/dev/null || \
    $py -m pip install -q --disable-pip-version-check websockets openai selenium pytest 'tantivy>=0.22,<1' \
      'kubernetes-validate>=1.30,<2' pyyaml >/dev/null
  # Autobahn|Testsuite is Python 2 code; it lives in its own virtualenv under pyenv's 2.7.
  venv=.build-tools/autobahn
  if [[ ! -x $venv/bin/wstest ]]; then
    py27="$(pyenv root 2>/dev/null || echo /root/.pyenv)/versions/2.7.18/bin/python2.7"
    if [[ ! -x $py27 ]]; then
      echo "Python 2.7 not found at $py27 (needed by Autobahn|Testsuite)" >&2; exit 1
    fi
    $py -m pip install -q --disable-pip-version-check 'virtualenv<20.22' >/dev/null
    $py -m virtualenv -q -p "$py27" "$venv" >/dev/null
    "$venv/bin/pip" install -q --disable-pip-version-check autobahntestsuite==25.10.1 >/dev/null 2>&1
  fi
  # schemathesis checks the node against its OpenAPI document; its own virtualenv keeps its
  # dependencies apart from the SDKs the tests use.
  st=.build-tools/schemathesis
  if [[ ! -x $st/bin/st ]]; then
    $py -m venv "$st"
    "$st/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5' >/dev/null
  fi
fi
