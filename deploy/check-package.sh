#!/usr/bin/env bash
# Build the Debian package with cargo-deb and check what it carries (issue 5).
# Run by .ci/run; run it by hand the same way:
#
#   deploy/check-package.sh            build, then inspect the .deb only
#   deploy/check-package.sh --install  also install it with dpkg, check the
#                                      user, the binary and the units
#                                      (systemd-analyze verify), then purge it
#
# --install needs root and changes the machine: it leaves the system user
# `ringcast` behind (Debian keeps system users on purge). It refuses to run
# where a ringcast package is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

install=no
[ "${1:-}" = "--install" ] && install=yes

fail() { echo "check-package: FAIL: $*" >&2; exit 1; }
ok() { echo "check-package: ok: $*"; }

command -v cargo-deb >/dev/null || fail "cargo-deb is not installed (cargo install cargo-deb --locked)"
command -v dpkg-deb >/dev/null || fail "dpkg-deb is not installed"

target=${CARGO_TARGET_DIR:-target}
rm -f "$target"/debian/ringcast_*.deb "$target"/debian/ringcast-dbgsym_*.ddeb
cargo deb --locked --quiet
deb=$(ls "$target"/debian/ringcast_*.deb)
echo "check-package: built $deb ($(du -k "$deb" | cut -f1) KiB)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -c "$deb" > "$work/contents"
dpkg-deb -x "$deb" "$work/root"
dpkg-deb -e "$deb" "$work/control"

# Files and their modes.
want_file() { # mode path
  grep -Eq "^$1 (root/root|0/0) +[0-9]+ .* \\./$2\$" "$work/contents" ||
    fail "$2 with mode $1 is not in the package; contents:
$(cat "$work/contents")"
  ok "$2 ($1)"
}
want_file -rwxr-xr-x usr/bin/ringcast
want_file -rw-r--r-- usr/lib/systemd/system/ringcast.service
want_file -rw-r--r-- usr/lib/systemd/system/ringcast@.service
want_file -rw-r--r-- etc/ringcast/ringcast.toml
want_file -rw-r--r-- usr/share/doc/ringcast/README.deploy.md
want_file -rw-r--r-- usr/share/doc/ringcast/tuning.md
want_file -rw-r--r-- usr/share/doc/ringcast/copyright

# The packaged files are the ones in the repository.
cmp -s deploy/ringcast.service "$work/root/usr/lib/systemd/system/ringcast.service" || fail "packaged ringcast.service differs from deploy/"
cmp -s deploy/ringcast@.service "$work/root/usr/lib/systemd/system/ringcast@.service" || fail "packaged ringcast@.service differs from deploy/"
cmp -s deploy/ringcast.toml "$work/root/etc/ringcast/ringcast.toml" || fail "packaged ringcast.toml differs from deploy/"
ok "packaged units and configuration match deploy/"

# The configuration is a conffile: dpkg keeps the operator's edits.
grep -qx /etc/ringcast/ringcast.toml "$work/control/conffiles" || fail "/etc/ringcast/ringcast.toml is not a conffile"
ok "/etc/ringcast/ringcast.toml is a conffile"

# Control fields and maintainer scripts.
grep -q '^Depends:.*adduser' "$work/control/control" || fail "Depends lacks adduser: $(grep ^Depends "$work/control/control")"
grep -q 'adduser --system' "$work/control/postinst" || fail "postinst does not create the system user"
grep -q 'deb-systemd-helper' "$work/control/postinst" || fail "postinst lacks the systemd helper section"
sh -n "$work/control/postinst" || fail "postinst is not valid sh"
ok "control: $(grep ^Depends "$work/control/control"); postinst creates the user"

# The packaged binary is stripped and runs.
file_info=$(file -b "$work/root/usr/bin/ringcast" 2>/dev/null || true)
case "$file_info" in *"not stripped"*) fail "usr/bin/ringcast is not stripped: $file_info" ;; esac
"$work/root/usr/bin/ringcast" -version >/dev/null || fail "usr/bin/ringcast -version failed"
ok "usr/bin/ringcast runs: $("$work/root/usr/bin/ringcast" -version)"
"$work/root/usr/bin/ringcast" --config "$work/root/etc/ringcast/ringcast.toml" --check-config >/dev/null ||
  fail "the packaged ringcast rejects the packaged configuration"
ok "the packaged configuration passes --check-config"

if [ "$install" = yes ]; then
  [ "$(id -u)" = 0 ] || fail "--install needs root"
  if dpkg-query -W -f='${Status}' ringcast 2>/dev/null | grep -q 'installed'; then
    fail "a ringcast package is already installed here: not touching it"
  fi
  dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb failed"
  trap 'dpkg --purge ringcast >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  ok "installed"
  getent passwd ringcast >/dev/null || fail "postinst did not create the user ringcast"
  shell=$(getent passwd ringcast | cut -d: -f7)
  [ "$shell" = /usr/sbin/nologin ] || fail "user ringcast has shell $shell"
  [ "$(stat -c %U:%G:%a /etc/ringcast)" = root:ringcast:750 ] || fail "/etc/ringcast is $(stat -c %U:%G:%a /etc/ringcast)"
  ok "user ringcast ($(id ringcast)), /etc/ringcast root:ringcast 750"
  /usr/bin/ringcast -version >/dev/null || fail "/usr/bin/ringcast does not run"
  if command -v systemd-analyze >/dev/null; then
    # verify needs the ExecStart binary to exist, hence after the install.
    for unit in ringcast.service ringcast@.service; do
      systemd-analyze verify "/usr/lib/systemd/system/$unit" || fail "systemd-analyze verify $unit"
      ok "systemd-analyze verify $unit"
    done
  else
    echo "check-package: skipped: systemd-analyze is not installed (apt-get install systemd)"
  fi
  dpkg --purge ringcast >/dev/null || fail "dpkg --purge ringcast failed"
  [ ! -e /usr/bin/ringcast ] || fail "/usr/bin/ringcast is still there after purge"
  [ ! -e /etc/ringcast/ringcast.toml ] || fail "/etc/ringcast/ringcast.toml is still there after purge"
  ok "purged"
fi
echo "check-package: all checks passed"
