#!/usr/bin/env bash
# Build upstream libwebsockets 4.3.5 into vendor/prefix/lws-4.3.5.
# The source comes from Debian's source archive (suite trixie), fetched with a
# private apt state under vendor/downloads/apt so the machine's apt setup is
# never modified. See vendor/README.md.
set -euo pipefail

LWS_VERSION=4.3.5
LWS_TARBALL="libwebsockets_${LWS_VERSION}.orig.tar.gz"
LWS_SHA256=87f99ad32803ed325fceac5327aae1f5c1b417d54ee61ad36cffc8df5f5ab276
SRC_SUITE=trixie
MACHINE_SOURCES=/etc/apt/sources.list.d/debian.sources
BUILD_DEPS=(cmake make gcc libssl-dev zlib1g-dev pkg-config)
# Bump when the recipe below changes in a way CMAKE_OPTS does not capture.
RECIPE_REV=1

VENDOR_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DL_DIR="$VENDOR_DIR/downloads"
APT_DIR="$DL_DIR/apt"
BUILD_ROOT="$VENDOR_DIR/build"
SRC_DIR="$BUILD_ROOT/libwebsockets-$LWS_VERSION"
OBJ_DIR="$BUILD_ROOT/lws-$LWS_VERSION-obj"
PREFIX="$VENDOR_DIR/prefix/lws-$LWS_VERSION"
STAMP="$PREFIX/.build-stamp"
JOBS="${JOBS:-2}"

# Pinned configuration. Changing anything here changes the stamp hash and
# forces a rebuild.
CMAKE_OPTS=(
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX="$PREFIX"
  -DCMAKE_INSTALL_LIBDIR=lib
  -DCMAKE_INSTALL_RPATH="$PREFIX/lib"
  -DLWS_WITH_SHARED=ON
  -DLWS_WITH_STATIC=OFF
  -DLWS_WITH_SSL=ON
  -DLWS_WITH_HTTP2=ON
  -DLWS_WITHOUT_EXTENSIONS=OFF
  -DLWS_WITH_ZLIB=ON
  -DLWS_WITH_BUNDLED_ZLIB=OFF
  -DLWS_IPV6=ON
  -DLWS_UNIX_SOCK=ON
  -DLWS_WITH_EXTERNAL_POLL=ON
  -DLWS_WITH_CUSTOM_HEADERS=ON
  -DLWS_WITHOUT_TESTAPPS=ON
  -DLWS_WITH_MINIMAL_EXAMPLES=OFF
  -DLWS_REPRODUCIBLE=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_Git=ON
  -DDISABLE_WERROR=ON
)

log() { echo "vendor: $*"; }
die() { echo "vendor: ERROR: $*" >&2; exit 1; }

options_hash() {
  { echo "$RECIPE_REV $LWS_VERSION $LWS_SHA256"; printf '%s\n' "${CMAKE_OPTS[@]}"; } \
    | sha256sum | cut -d' ' -f1
}
HASH="$(options_hash)"

# ---- fast path -------------------------------------------------------------
if [[ -f "$PREFIX/lib/pkgconfig/libwebsockets.pc" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$HASH" ]]; then
  log "libwebsockets $LWS_VERSION already built (options unchanged)"
  echo "$PREFIX"
  exit 0
fi

# ---- build dependencies ----------------------------------------------------
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing build deps: ${missing[*]}"
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# ---- source download -------------------------------------------------------
tarball_ok() {
  [[ -f "$DL_DIR/$LWS_TARBALL" ]] &&
    [[ "$(sha256sum "$DL_DIR/$LWS_TARBALL" | cut -d' ' -f1)" == "$LWS_SHA256" ]]
}

# Print "URI<TAB>SIGNED-BY" of the first deb822 stanza of the machine's
# sources file whose Suites mention bookworm (the -security stanza excluded).
machine_mirror() {
  awk '
    function flush() {
      if (!done && uri != "" && ok) { print uri "\t" key; done = 1 }
      uri = ""; key = ""; ok = 0
    }
    /^[[:space:]]*$/ { flush(); next }
    /^[[:space:]]*#/ { next }
    tolower($1) == "uris:"      { uri = $2 }
    tolower($1) == "signed-by:" { key = $2 }
    tolower($1) == "suites:" {
      for (i = 2; i <= NF; i++)
        if ($i ~ /^bookworm/ && $i !~ /-security$/) ok = 1
    }
    END { flush() }
  ' "$MACHINE_SOURCES"
}

download_source() {
  [[ -r "$MACHINE_SOURCES" ]] || die "cannot read $MACHINE_SOURCES"
  local line uri key
  line="$(machine_mirror)"
  uri="${line%%$'\t'*}"
  key="${line#*$'\t'}"
  [[ -n "$uri" ]] || die "no bookworm URIs: line found in $MACHINE_SOURCES"

  mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" \
           "$APT_DIR/cache/archives/partial"
  rm -f "$APT_DIR"/sources.list.d/*
  {
    echo "Types: deb-src"
    echo "URIs: $uri"
    echo "Suites: $SRC_SUITE"
    echo "Components: main"
    if [[ -n "$key" && -r "$key" ]]; then
      echo "Signed-By: $key"
    else
      echo "Trusted: yes"
    fi
  } > "$APT_DIR/sources.list.d/lws-src.sources"

  # Private config: keep the system's update hooks (packagekit, appstream)
  # from running against this private state.
  cat > "$APT_DIR/apt.conf" <<CONF
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
CONF

  local apt_opts=(
    -c "$APT_DIR/apt.conf"
    -o Dir::Etc::SourceList=/dev/null
    -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d"
    -o Dir::State::Lists="$APT_DIR/lists"
    -o Dir::Cache="$APT_DIR/cache"
    -o APT::Sandbox::User=root
    -q
  )
  apt-get "${apt_opts[@]}" update >"$APT_DIR/update.log" 2>&1 \
    || { cat "$APT_DIR/update.log" >&2; die "private apt-get update failed"; }
  # The Debian packaging tarball may 404 and make this exit non-zero; only
  # the upstream orig tarball matters, and it is checked by the caller.
  (cd "$DL_DIR" && apt-get "${apt_opts[@]}" source --download-only \
      libwebsockets >"$APT_DIR/source.log" 2>&1) || true
}

mkdir -p "$DL_DIR"
if tarball_ok; then
  log "source tarball present, checksum ok"
else
  log "downloading $LWS_TARBALL from Debian $SRC_SUITE sources..."
  download_source
  [[ -f "$DL_DIR/$LWS_TARBALL" ]] ||
    die "$LWS_TARBALL was not downloaded (see $APT_DIR/source.log)"
  tarball_ok ||
    die "$LWS_TARBALL has sha256 $(sha256sum "$DL_DIR/$LWS_TARBALL" | cut -d' ' -f1), expected $LWS_SHA256"
  log "source tarball checksum ok"
fi

# ---- build -----------------------------------------------------------------
log "building libwebsockets $LWS_VERSION..."
rm -rf "$SRC_DIR" "$OBJ_DIR" "$PREFIX"
mkdir -p "$BUILD_ROOT" "$OBJ_DIR"
tar -xzf "$DL_DIR/$LWS_TARBALL" -C "$BUILD_ROOT"
[[ -f "$SRC_DIR/CMakeLists.txt" ]] || die "unexpected tarball layout (no $SRC_DIR)"

# lws appends a build hash to the patch number in the .pc Version field
# ("4.3.5-unknown" outside a git checkout). Write the plain version instead so
# `pkg-config --modversion` and version checks see 4.3.5.
PC_TEMPLATE="$SRC_DIR/lib/CMakeLists.txt"
PC_FIELD='Version: ${CPACK_PACKAGE_VERSION_MAJOR}.${CPACK_PACKAGE_VERSION_MINOR}.${CPACK_PACKAGE_VERSION_PATCH}'
grep -qF "$PC_FIELD" "$PC_TEMPLATE" || die "pkg-config template not found in $PC_TEMPLATE"
sed -i 's/^\(Version: .*\)CPACK_PACKAGE_VERSION_PATCH}$/\1CPACK_PACKAGE_VERSION_PATCH_NUMBER}/' "$PC_TEMPLATE"
! grep -qF "$PC_FIELD" "$PC_TEMPLATE" || die "could not patch the pkg-config Version field"

cmake -S "$SRC_DIR" -B "$OBJ_DIR" "${CMAKE_OPTS[@]}" >"$BUILD_ROOT/cmake.log" 2>&1 \
  || { tail -n 40 "$BUILD_ROOT/cmake.log" >&2; die "cmake configure failed"; }
make -C "$OBJ_DIR" -j"$JOBS" >"$BUILD_ROOT/make.log" 2>&1 \
  || { tail -n 40 "$BUILD_ROOT/make.log" >&2; die "make failed"; }
log "installing into $PREFIX..."
make -C "$OBJ_DIR" install >"$BUILD_ROOT/install.log" 2>&1 \
  || { tail -n 40 "$BUILD_ROOT/install.log" >&2; die "make install failed"; }

# ---- verify ----------------------------------------------------------------
PC_DIR="$PREFIX/lib/pkgconfig"
ver="$(PKG_CONFIG_PATH="$PC_DIR" pkg-config --modversion libwebsockets)" \
  || die "pkg-config cannot find libwebsockets in $PC_DIR"
[[ "$ver" == "$LWS_VERSION" ]] || die "pkg-config reports $ver, expected $LWS_VERSION"

CFG="$PREFIX/include/lws_config.h"
[[ -f "$CFG" ]] || die "missing $CFG"
for sym in LWS_WITH_EXTERNAL_POLL LWS_WITH_HTTP2 LWS_ROLE_H2 LWS_ROLE_WS \
           LWS_WITH_CUSTOM_HEADERS LWS_WITH_TLS LWS_OPENSSL_SUPPORT \
           LWS_WITH_IPV6 LWS_WITH_UNIX_SOCK LWS_WITH_CLIENT LWS_WITH_SERVER; do
  grep -Eq "^#define[[:space:]]+$sym([[:space:]]|$)" "$CFG" \
    || die "$sym is not defined in $CFG"
done
# permessage-deflate: extensions compiled in, zlib linked.
if grep -Eq "^#define[[:space:]]+LWS_WITHOUT_EXTENSIONS([[:space:]]|$)" "$CFG"; then
  die "LWS_WITHOUT_EXTENSIONS is defined in $CFG (no permessage-deflate)"
fi
LIB="$(readlink -f "$PREFIX/lib/libwebsockets.so")"
[[ -f "$LIB" ]] || die "shared library missing under $PREFIX/lib"
# (grep without -q: an early exit would SIGPIPE the producer under pipefail)
nm -D --defined-only "$LIB" | grep -w lws_extension_callback_pm_deflate >/dev/null \
  || die "lws_extension_callback_pm_deflate not exported by $LIB"
readelf -d "$LIB" | grep 'NEEDED.*\[libz\.so' >/dev/null || die "$LIB does not link zlib"
SONAME="$(readelf -d "$LIB" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')"

echo "$HASH" > "$STAMP"
log "libwebsockets $ver installed ($SONAME); pkg-config and feature checks ok"
grep -E "^(#define|/\* #undef)[[:space:]]+(LWS_WITH_EXTERNAL_POLL|LWS_WITH_HTTP2|LWS_ROLE_H2|LWS_WITHOUT_EXTENSIONS|LWS_WITH_CUSTOM_HEADERS)([[:space:]]|$)" "$CFG" \
  | sed 's/^/vendor:   /'

echo "$PREFIX"
