#!/usr/bin/env bash
# Installs lamm-plugin from this checkout with everything its tests and the Dassl trainers need, then, when asked,
# runs the main job (`demo`) or the README's test command (`test`) with what it installed:
#   0. the environment: the active one (a virtual or conda environment, or PYTHON=...), else .venv in this
#      checkout, created when missing (git-ignored) with the system's packages visible, so that a PyTorch
#      installed there is used rather than downloaded again;
#   1. PyTorch, only when it is missing (the default build from PyPI, or LAMM_TORCH, e.g.
#      "torch==2.14.1 torchvision==0.29.1"; install the build for your CUDA first to choose it: https://pytorch.org);
#   2. this package, editable, with its `test` and `dassl` extras (the `dassl` extra is Dassl's run-time needs);
#   3. Dassl (not on PyPI) at one pinned commit, unless that version is installed: from a folder of Dassl wheels when
#      there is one (--dassl-wheels DIR, LAMM_DASSL_WHEELS=DIR, else ../shared/wheels beside this checkout), without
#      asking GitHub; otherwise from its GitHub repository.
#
# Usage: bash scripts/install.sh [--dassl-wheels DIR] [--reinstall-dassl] [-q] [demo|test]   (-q: quiet pip)
#        bash scripts/install.sh --which-python   (prints the interpreter it installs into, installs nothing)
# Environment: PYTHON, LAMM_TORCH, LAMM_DASSL_WHEELS, LAMM_GITHUB_TIMEOUT (seconds, default 20).
set -euo pipefail

DASSL_REPO="https://github.com/KaiyangZhou/Dassl.pytorch"
DASSL_COMMIT="c61a1b570ac6333bd50fb5ae06aea59002fb20bb"
DASSL_VERSION="0.6.3"
# The README's main job and test command (tests/test_docs.py checks that the README shows the same).
DEMO=(python train.py --root data --seed 1 --trainer LAMM_CoOp
  --dataset-config-file configs/datasets/synthetic_shapes.yaml
  --config-file configs/trainers/LAMM_CoOp/demo_cpu.yaml
  --output-dir output/demo DATASET.NUM_SHOTS 16)
TEST="ruff check . && ruff format --check . && python -m pytest -q"

cd "$(dirname "$0")/.."
wheels="${LAMM_DASSL_WHEELS:-}"
if [ -z "$wheels" ] && [ -d ../shared/wheels ]; then
  wheels="$(cd ../shared/wheels && pwd)"
fi
github_timeout="${LAMM_GITHUB_TIMEOUT:-20}"
reinstall_dassl=0
which_python=0
then_run=""
pip_opts=()

while [ $# -gt 0 ]; do
  case "$1" in
    --dassl-wheels) wheels="${2:?--dassl-wheels needs a folder}"; shift 2 ;;
    --dassl-wheels=*) wheels="${1#*=}"; shift ;;
    --reinstall-dassl) reinstall_dassl=1; shift ;;
    --which-python) which_python=1; shift ;;
    -q|--quiet) pip_opts+=(-q); shift ;;
    demo|test) then_run="$1"; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

# 0. The environment.
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=python
else
  PY="$PWD/.venv/bin/python"
  if [ "$which_python" = 0 ] && [ ! -x "$PY" ]; then
    echo "No active Python environment: creating .venv in $PWD"
    python3 -m venv --system-site-packages .venv
  fi
fi
case "$PY" in */*) ;; *) PY="$(command -v "$PY")" ;; esac
if [ "$which_python" = 1 ]; then
  echo "$PY"
  exit 0
fi
pip_install() { "$PY" -m pip install --disable-pip-version-check ${pip_opts[@]+"${pip_opts[@]}"} "$@"; }

# 1. PyTorch: never replace a build the user chose.
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "PyTorch $("$PY" -c 'import torch; print(torch.__version__)') is installed: kept as it is."
else
  read -r -a torch_spec <<< "${LAMM_TORCH:-torch torchvision}"
  echo "PyTorch is not installed: installing ${torch_spec[*]} (for another CUDA build, install it first)."
  pip_install "${torch_spec[@]}"
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
elif [ -n "$wheels" ]; then
  if [ ! -d "$wheels" ]; then
    echo "install.sh: the Dassl wheel folder $wheels does not exist" >&2
    exit 1
  fi
  echo "Installing Dassl $DASSL_VERSION from the wheels in $wheels"
  pip_install --no-deps --no-index --force-reinstall --find-links "$wheels" "dassl==$DASSL_VERSION"
elif github_reachable; then
  echo "Installing Dassl from $DASSL_REPO at $DASSL_COMMIT"
  # --no-build-isolation: Dassl's setup.py imports numpy; --no-deps: its metadata pins old linters.
  pip_install --no-deps --no-build-isolation --force-reinstall "git+$DASSL_REPO@$DASSL_COMMIT"
else
  cat >&2 <<EOF
install.sh: cannot install Dassl: $DASSL_REPO could not be reached (git ls-remote, timeout ${github_timeout}s) and no wheel
folder was found (--dassl-wheels DIR, LAMM_DASSL_WHEELS=DIR or ../shared/wheels). Build a wheel of commit
$DASSL_COMMIT on a machine with internet
(pip wheel --no-deps --no-build-isolation git+$DASSL_REPO@$DASSL_COMMIT), copy it here and rerun with
--dassl-wheels DIR.
EOF
  exit 1
fi

"$PY" -c "import dassl, lamm_plugin; print(f'Installed: lamm_plugin {lamm_plugin.__version__}, dassl {dassl.__version__}')"

# Then the main job or the tests, with this environment's python and ruff first on PATH.
PATH="$(dirname "$PY"):$PATH"
case "$then_run" in
  demo) exec "${DEMO[@]}" ;;
  test) exec bash -c "$TEST" ;;
esac
