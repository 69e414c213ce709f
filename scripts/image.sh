#!/usr/bin/env bash
# `make image`: the operator's OCI image, built without a container engine or a registry, holding what the
# Dockerfile's image holds (tests/image.rs checks that the two agree):
#
#   layer 1  a distroless-equivalent Debian 12 base, what gcr.io/distroless/cc-debian12:nonroot gives this binary:
#            libc6 and libgcc-s1 (the release binary links glibc and libgcc_s dynamically), the CA bundle made from
#            ca-certificates (the Azure client's rustls-platform-verifier trusts the system store), os-release from
#            base-files, /etc/passwd and /etc/group with nonroot (65532), /etc/nsswitch.conf, /tmp and /home/nonroot.
#            No shell, no package manager. The .debs are the candidates of the host's apt sources (Debian 12, like
#            the Dockerfile's rust:*-bookworm builder and distroless runtime), checked against apt's SHA256 and
#            cached; their versions go into /var/lib/dpkg/status.d/ (where scanners look in distroless images) and
#            into the `io.hpccache.image.packages` label.
#   layer 2  /hpc-cache-operator from the Dockerfile's own build: cargo build --release --locked
#            --no-default-features --bin hpc-cache-operator (no simulator).
#
# umoci (scripts/umoci.sh) writes both into an OCI image layout and sets the config: user 65532:65532, entrypoint
# ["/hpc-cache-operator", "run"], port 8080, the OCI labels. Every timestamp is the HEAD commit's
# (SOURCE_DATE_EPOCH), so the same commit and packages give the same digest.
#
# Output: target/image/oci (OCI image layout, tagged with the crate version) and
# target/image/hpc-cache-operator-<version>.oci.tar (the same layout as one file, with docker-save's manifest.json:
# `docker load`, `podman load`, `skopeo copy oci-archive:...`). Prints the layout, the archive and the manifest digest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

out="$repo/target/image"
layout="$out/oci"
work="$out/build"
cache_root=${HPCC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hpc-cache-operator}
debs="$cache_root/debs"
mkdir -p "$out" "$debs"

log() { echo "image: $*" >&2; }
die() { echo "image: $*" >&2; exit 1; }

# The build the Dockerfile runs (tests/image.rs compares the two through the io.hpccache.image.build label).
build=(cargo build --release --locked --no-default-features --bin hpc-cache-operator)
# Debian packages of the base layer.
packages=(base-files ca-certificates gcc-12-base libc6 libgcc-s1)
user=65532
port=8080

# One build at a time (make image in two shells, the image test while make test builds it): the second waits.
exec 9>"$out/.lock"
flock 9

# shellcheck disable=SC1091 # the host's
. /etc/os-release
[ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] ||
  die "needs a Debian 12 (bookworm) host: the binary links the host's glibc and the base layer takes Debian 12's" \
    "packages from its apt sources (this is ${PRETTY_NAME:-unknown}); build with the Dockerfile instead"
arch=$(dpkg --print-architecture) # amd64, arm64: Debian's names are OCI's

umoci=$("$here/umoci.sh")

log "${build[*]}"
"${build[@]}" >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release/hpc-cache-operator"

sde=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH=$sde
created=$(date -u -d "@$sde" +%Y-%m-%dT%H:%M:%SZ)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || revision="$revision-dirty"

rm -rf "$work"
mkdir -p "$work/base" "$work/app" "$work/debs"

# --- layer 2 first: fail fast on a binary that is not the image's --------------------------------------------------
cp "$bin" "$work/app/hpc-cache-operator"
chmod 0755 "$work/app/hpc-cache-operator"
# target/release/hpc-cache-operator is shared with `cargo build --release` and `cargo bench` (default features):
# a build with the simulator that replaced it between our build and the copy must not go into the image.
if "$work/app/hpc-cache-operator" simulate --help >/dev/null 2>&1; then
  die "$bin has the simulator (a concurrent default-feature release build replaced it?); run make image again"
fi
version=$("$work/app/hpc-cache-operator" version | sed -n 's/^hpc-cache-operator //p')
[ -n "$version" ] || die "\`hpc-cache-operator version\` printed no version"

# --- layer 1: the Debian 12 base ------------------------------------------------------------------------------------
field() { sed -n "s/^$1: //p" <<<"$2" | head -1; }
sandbox=()
[ "$(id -u)" != 0 ] || sandbox=(-o APT::Sandbox::User=root) # root: apt's _apt user cannot write our cache
pkg_versions=()
for pkg in "${packages[@]}"; do
  meta=$(apt-cache show --no-all-versions "$pkg:$arch") || die "apt knows no $pkg:$arch (apt-get update?)"
  ver=$(field Version "$meta")
  sha=$(field SHA256 "$meta")
  deb="$debs/$(basename "$(field Filename "$meta")")"
  if ! [ -f "$deb" ] || ! echo "$sha  $deb" | sha256sum --check --status; then
    log "downloading $pkg=$ver"
    rm -rf "$work/download" && mkdir -p "$work/download"
    (cd "$work/download" && apt-get download -q "${sandbox[@]}" "$pkg:$arch=$ver" >&2) ||
      die "apt-get download $pkg=$ver failed (stale apt lists? apt-get update)"
    mv "$work/download"/*.deb "$deb.tmp" && mv "$deb.tmp" "$deb"
    echo "$sha  $deb" | sha256sum --check --status || die "$deb: SHA256 differs from apt's $sha"
  fi
  dpkg-deb -x "$deb" "$work/debs/$pkg"
  mkdir -p "$work/base/var/lib/dpkg/status.d"
  { dpkg-deb -f "$deb"; } >"$work/base/var/lib/dpkg/status.d/$pkg"
  pkg_versions+=("$pkg=$ver")
done

b="$work/base" d="$work/debs"
mkdir -p "$b/etc/ssl/certs" "$b/usr/lib" "$b/usr/share/doc" "$b/tmp" "$b/root" "$b/home/nonroot"
# libc6: the loader, libc, libm & co. and gconv (everything but its docs); libgcc-s1: libgcc_s (its docs are
# gcc-12-base's, taken for the copyright only).
cp -a "$d/libc6/lib" "$d/libc6/lib64" "$b/"
cp -a "$d/libc6/usr/lib/." "$b/usr/lib/"
cp -a "$d/libgcc-s1/lib/." "$b/lib/"
cp -a "$d/libgcc-s1/usr/share/doc/libgcc-s1" "$b/usr/share/doc/" # -> gcc-12-base
# ca-certificates: the bundle update-ca-certificates would make, Mozilla's roots in name order (`awk 1`: each file
# ends in a newline).
for f in $(cd "$d/ca-certificates/usr/share/ca-certificates/mozilla" && LC_ALL=C ls -- *.crt); do
  awk 1 "$d/ca-certificates/usr/share/ca-certificates/mozilla/$f"
done >"$b/etc/ssl/certs/ca-certificates.crt"
# base-files: os-release (as there: /etc/os-release -> ../usr/lib/os-release) and debian_version.
cp -a "$d/base-files/usr/lib/os-release" "$b/usr/lib/"
cp -a "$d/base-files/etc/os-release" "$d/base-files/etc/debian_version" "$b/etc/"
for pkg in base-files ca-certificates gcc-12-base libc6; do
  mkdir -p "$b/usr/share/doc/$pkg"
  cp -a "$d/$pkg/usr/share/doc/$pkg/copyright" "$b/usr/share/doc/$pkg/"
done
# Users as in distroless: root, nobody and nonroot, none with a login shell (there is none).
cat >"$b/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$user:$user:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$b/etc/group" <<EOF
root:x:0:
nobody:x:65534:
nonroot:x:$user:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$b/etc/nsswitch.conf"
chmod -R go-w "$b"
find "$b" -type d -exec chmod 0755 {} +
chmod 1777 "$b/tmp"
chmod 0700 "$b/root" "$b/home/nonroot"

# --- the layers: reproducible tars (sorted, fixed owners and times) --------------------------------------------------
# shellcheck disable=SC2054 # the commas are pax-option's
tar_flags=(--format=posix --sort=name --numeric-owner --mtime="@$sde"
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
layer() { # dir tar [path owned by nonroot]
  local dir=$1 tar=$2 own=${3:-} top=()
  mapfile -t top < <(cd "$dir" && LC_ALL=C ls -A)
  tar -C "$dir" -cf "$tar" "${tar_flags[@]}" --owner=0 --group=0 ${own:+--exclude="$own"} "${top[@]}"
  if [ -n "$own" ]; then
    tar -C "$dir" -rf "$tar" "${tar_flags[@]}" --owner="$user" --group="$user" --no-recursion "$own"
  fi
}
# /home/nonroot is empty: --no-recursion is the directory alone.
layer "$work/base" "$work/base.tar" home/nonroot
layer "$work/app" "$work/app.tar"

# --- the image ------------------------------------------------------------------------------------------------------
oci="$work/oci"
ref="$oci:$version"
"$umoci" init --layout "$oci"
"$umoci" new --image "$ref"
"$umoci" raw add-layer --image "$ref" --history.created="$created" \
  --history.created_by="Debian 12 base (distroless cc equivalent): ${pkg_versions[*]}, passwd/group (nonroot $user)" \
  "$work/base.tar"
"$umoci" raw add-layer --image "$ref" --history.created="$created" \
  --history.created_by="/hpc-cache-operator: ${build[*]}" "$work/app.tar"
labels=(
  "org.opencontainers.image.title=hpc-cache-operator"
  "org.opencontainers.image.description=Kubernetes operator for Azure HPC Cache with customer-managed encryption keys"
  "org.opencontainers.image.source=https://github.com/hpc-cache-operator/hpc-cache-operator"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
  "io.hpccache.image.build=${build[*]}"
  "io.hpccache.image.packages=${pkg_versions[*]}"
)
label_args=()
for l in "${labels[@]}"; do label_args+=(--config.label "$l"); done
"$umoci" config --image "$ref" --no-history --created "$created" --os linux --architecture "$arch" \
  --config.user "$user:$user" --config.workingdir / \
  --config.entrypoint /hpc-cache-operator --config.entrypoint run \
  --config.exposedports "$port/tcp" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  "${label_args[@]}"
"$umoci" gc --layout "$oci"

rm -rf "$layout.old"
if [ -d "$layout" ]; then mv "$layout" "$layout.old"; fi
mv "$oci" "$layout"
rm -rf "$layout.old"
# The archive is the layout plus docker-save's manifest.json, as `docker save` writes since Docker 25: `docker load`,
# `podman load`, skopeo (oci-archive: or docker-archive:) and crane read it. Tagged as the chart pulls it by default.
digests() { grep -o '"digest":"sha256:[0-9a-f]*"' "$1" | cut -d'"' -f4 | sed 's#^sha256:#blobs/sha256/#'; }
digest=$(digests "$layout/index.json" | head -1 | sed 's#^blobs/sha256/#sha256:#')
mapfile -t blobs < <(digests "$layout/$(digests "$layout/index.json" | head -1)") # the config, then the layers
repository=$(sed -n 's/^  repository: *//p' charts/hpc-cache-operator/values.yaml | head -1)
layer_list=$(printf '"%s",' "${blobs[@]:1}")
printf '[{"Config":"%s","RepoTags":["%s:%s"],"Layers":[%s]}]\n' \
  "${blobs[0]}" "${repository:-hpc-cache-operator}" "$version" "${layer_list%,}" >"$work/manifest.json"
rm -f "$out"/hpc-cache-operator-*.oci.tar
archive="$out/hpc-cache-operator-$version.oci.tar"
cp "$work/manifest.json" "$layout/manifest.json"
tar -C "$layout" -cf "$archive.tmp" "${tar_flags[@]}" --owner=0 --group=0 oci-layout index.json manifest.json blobs
rm "$layout/manifest.json"
mv "$archive.tmp" "$archive"
rm -rf "$work"

size=$(du -sh "$layout/blobs" | cut -f1)
log "built hpc-cache-operator $version ($arch, $size compressed) on ${pkg_versions[*]}"
echo "layout:  ${layout#"$repo"/}:$version"
echo "archive: ${archive#"$repo"/}"
echo "digest:  $digest"
