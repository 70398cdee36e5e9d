# Shared by scripts/demo, scripts/test and scripts/lock: Debian packages and the project's
# virtualenv, installed from the lock (requirements*.txt, every file's hash checked).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    # Daemons from these packages must not start as system services: tests start their own.
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# A virtualenv in $VENV whose pip, setuptools and wheel are the locked ones (requirements-build.txt):
# dutyd itself is then built with them (--no-build-isolation), so nothing unhashed is fetched.
make_venv() {
  local python="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -qq --require-hashes -r requirements-build.txt
}

# Install a lock file (hashes required), then dutyd from this tree without touching its deps.
install_locked() {
  local lock="$1" target="$2"
  "$VENV/bin/pip" install -qq --require-hashes -r "$lock"
  "$VENV/bin/pip" install -qq --no-deps --no-build-isolation $target
}
