#!/usr/bin/env bash
# part-image in CI, in one script to copy into your repository: installs the
# host tools (Debian or Ubuntu), installs part-image from npm, and builds and
# verifies one image with a JUnit file and a JSON report for the CI server.
#
#   bash part-image-ci.sh INPUT OUTPUT [BUILD OPTIONS...]
#
#   INPUT   the root tree: a directory, a .tar/.tar.gz, or a Raptor layer stack
#   OUTPUT  the image to write (accepted images only; a rejected one is kept as OUTPUT.rejected)
#   BUILD OPTIONS are passed to `part-image build`, e.g. --skip diagnose,nspawn for a
#   data partition, --golden golden/root.manifest.json, --format qcow2.
#
# Environment:
#   PART_IMAGE_PACKAGE  what npm installs (default: part-image; a version, a tarball or a git URL)
#   PART_IMAGE_PREFIX   where it is installed (default: ./.part-image, so no global npm is touched)
#   JUNIT               the JUnit file (default: part-image-junit.xml)
#   REPORT_JSON         the JSON report (default: part-image-report.json)
#
# Needs root for the tools and the boot stages (loop mounts, systemd-nspawn):
# it runs apt-get and part-image through sudo when it is not root. The exit
# code is part-image's: 0 accepted, 1 rejected, 2 bad input, 3 this host
# cannot run a stage, 4 a bug in part-image. The JUnit file is written in
# every case, so publish it even when this step fails.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
input=$1 output=$2
shift 2

PART_IMAGE_PACKAGE=${PART_IMAGE_PACKAGE:-part-image}
PART_IMAGE_PREFIX=${PART_IMAGE_PREFIX:-$PWD/.part-image}
JUNIT=${JUNIT:-part-image-junit.xml}
REPORT_JSON=${REPORT_JSON:-part-image-report.json}
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

# The host tools part-image runs, by Debian package (README, "Requirements").
APT_PACKAGES=(
  e2fsprogs mount attr
  systemd-container
  qemu-system-x86 qemu-utils mmdebstrap
)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "part-image-ci: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node 20.19 or later (actions/setup-node, or the distribution's nodejs).
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' || {
  echo "part-image-ci: part-image needs Node 20.19 or later, found $(node --version)" >&2
  exit 3
}

npm install --global --prefix "$PART_IMAGE_PREFIX" --no-audit --no-fund --loglevel=error "$PART_IMAGE_PACKAGE"
part_image=$PART_IMAGE_PREFIX/bin/part-image
"$part_image" --version >&2

status=0
# sudo resets PATH to its secure_path, which does not hold the node of
# actions/setup-node: hand it on, with the sbin folders of mke2fs and losetup.
$SUDO env "PATH=$PATH:/usr/sbin:/sbin" "$part_image" build --input "$input" --output "$output" --junit "$JUNIT" --report-json "$REPORT_JSON" "$@" || status=$?
echo "part-image-ci: exit $status; JUnit in $JUNIT, report in $REPORT_JSON" >&2
exit "$status"
