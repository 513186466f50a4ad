#!/usr/bin/env bash
# Installs lamm-plugin from this checkout with everything its tests and the Dassl trainers need:
#   1. PyTorch, only when it is missing (the default build from PyPI; install the build for your CUDA first
#      to choose it: https://pytorch.org);
#   2. this package, editable, with its `test` and `dassl` extras (the `dassl` extra is Dassl's run-time needs);
#   3. Dassl, pinned to one commit of its GitHub repository (Dassl is not on PyPI), unless that version is
#      already installed. Without access to GitHub, Dassl comes from a folder of wheels given by
#      --dassl-wheels DIR or LAMM_DASSL_WHEELS=DIR (a wheel built from the same commit).
#
# Usage: bash scripts/install.sh [--dassl-wheels DIR] [--reinstall-dassl] [-q]   (-q: quiet pip)
# Environment: PYTHON (default: python), LAMM_DASSL_WHEELS, LAMM_GITHUB_TIMEOUT (seconds, default 20).
set -euo pipefail

DASSL_REPO="https://github.com/KaiyangZhou/Dassl.pytorch"
DASSL_COMMIT="c61a1b570ac6333bd50fb5ae06aea59002fb20bb"
DASSL_VERSION="0.6.3"

PY="${PYTHON:-python}"
wheels="${LAMM_DASSL_WHEELS:-}"
github_timeout="${LAMM_GITHUB_TIMEOUT:-20}"
reinstall_dassl=0
pip_opts=()

while [ $# -gt 0 ]; do
  case "$1" in
    --dassl-wheels) wheels="${2:?--dassl-wheels needs a folder}"; shift 2 ;;
    --dassl-wheels=*) wheels="${1#*=}"; shift ;;
    --reinstall-dassl) reinstall_dassl=1; shift ;;
    -q|--quiet) pip_opts+=(-q); shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
pip_install() { "$PY" -m pip install --disable-pip-version-check ${pip_opts[@]+"${pip_opts[@]}"} "$@"; }

# 1. PyTorch: never replace a build the user chose.
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "PyTorch $("$PY" -c 'import torch; print(torch.__version__)') is installed: kept as it is."
else
  echo "PyTorch is not installed: installing the default build from PyPI (for another CUDA build, install it first)."
  pip_install torch torchvision
fi

# 2. This package with its extras (numpy among them, which Dassl's setup.py imports).
pip_install -e ".[test,dassl]"

# 3. Dassl at the pinned commit.
dassl_installed() {
  # The pinned version is importable, and a git install (pip records its commit) is of the pinned commit.
  "$PY" - "$DASSL_VERSION" "$DASSL_COMMIT" <<'EOF' 2>/dev/null
import json
import sys
from importlib import metadata

import dassl  # noqa: F401

dist = metadata.distribution("dassl")
assert dist.version == sys.argv[1], dist.version
direct = json.loads(dist.read_text("direct_url.json") or "{}")
commit = direct.get("vcs_info", {}).get("commit_id")
assert commit in (None, sys.argv[2]), commit
EOF
}

github_reachable() {
  command -v git >/dev/null 2>&1 || return 1
  GIT_TERMINAL_PROMPT=0 timeout "$github_timeout" git ls-remote --exit-code "$DASSL_REPO" HEAD >/dev/null 2>&1
}

if [ "$reinstall_dassl" = 0 ] && dassl_installed; then
  echo "Dassl $DASSL_VERSION is installed: kept as it is (--reinstall-dassl to install it again)."
elif github_reachable; then
  echo "Installing Dassl from $DASSL_REPO at $DASSL_COMMIT"
  # --no-build-isolation: Dassl's setup.py imports numpy; --no-deps: its metadata pins old linters.
  pip_install --no-deps --no-build-isolation --force-reinstall "git+$DASSL_REPO@$DASSL_COMMIT"
elif [ -n "$wheels" ]; then
  if [ ! -d "$wheels" ]; then
    echo "install.sh: the Dassl wheel folder $wheels does not exist" >&2
    exit 1
  fi
  echo "GitHub is not reachable: installing Dassl $DASSL_VERSION from the wheels in $wheels"
  pip_install --no-deps --no-index --force-reinstall --find-links "$wheels" "dassl==$DASSL_VERSION"
else
  cat >&2 <<EOF
install.sh: cannot install Dassl: $DASSL_REPO could not be reached (git ls-remote, timeout ${github_timeout}s) and no wheel
folder was given. Build a wheel of commit $DASSL_COMMIT on a machine with internet
(pip wheel --no-deps --no-build-isolation git+$DASSL_REPO@$DASSL_COMMIT), copy it here and rerun with
--dassl-wheels DIR (or LAMM_DASSL_WHEELS=DIR).
EOF
  exit 1
fi

"$PY" -c "import dassl, lamm_plugin; print(f'Installed: lamm_plugin {lamm_plugin.__version__}, dassl {dassl.__version__}')"
