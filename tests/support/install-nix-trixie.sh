#!/usr/bin/env bash
# install-nix-trixie.sh [DEST]
#
# Install Debian trixie's `nix-bin` (Nix 2.26.x) into a self-contained
# directory DEST (default /opt/hostctl-nix-trixie) on a Debian 12 (bookworm)
# host, WITHOUT installing anything system-wide, so the test suite can run
# the Nix layer against both the system Nix 2.8 (/usr/bin/nix) and Nix 2.26.
#
# How it works:
#   * a private apt configuration (sources list, lists, cache, an EMPTY dpkg
#     status file, no host apt.conf.d / preferences / sources.list.d) is used
#     to `install --download-only` nix-bin from trixie. Because the status file
#     is empty, apt downloads the whole dependency closure, including trixie's
#     libc6. The host's apt/dpkg state is never read or written.
#   * every downloaded .deb is unpacked with `dpkg -x` into DEST/root.
#   * DEST/bin/<name> wrappers run DEST/root/usr/bin/nix through trixie's own
#     dynamic loader (`ld.so --library-path ... --argv0 <name>`), so the
#     binary sees trixie's glibc/libstdc++/... and never the host libraries.
#     nix is a multi-call binary (nix-store, nix-env, ... are symlinks to it
#     and it dispatches on argv[0]); --argv0 selects the personality.
#
# Layout of DEST afterwards:
#   DEST/bin/{nix,nix-store,nix-env,nix-build,nix-instantiate,...}  wrappers
#   DEST/root/...                        unpacked trixie packages
#   DEST/manifest.txt                    package versions that were unpacked
#   DEST/.hostctl-nix-trixie             marker (lets a re-run replace DEST)
#
# Behaviour of the wrappers worth knowing:
#   * NIX_BIN_DIR=DEST/bin is exported. Nix 2.26 finds "itself" through
#     NIX_BIN_DIR (else /proc/self/exe, which would be ld.so here); the
#     default `build-hook` (`<self> __build-remote`, started for EVERY build
#     even without remote builders) and nix-channel/nix repl rely on it.
#   * SAFETY GUARD: if NIX_REMOTE is unset or empty, the wrappers set
#     NIX_REMOTE=dummy://. Without it, even `nix-store --version` and
#     `nix-env --version` of 2.26 open the default store, i.e. the SYSTEM
#     database /nix/var/nix/db used by Nix 2.8 (2.26 then adds its
#     SchemaMigrations table). Always pass `--store 'local?root=/some/dir'`
#     (or NIX_REMOTE=local?root=..., or `store = ...` in NIX_CONFIG); those
#     all override the guard.
#   * Known limitation: `nix run` / `nix shell` / `nix develop` on a diverted
#     (`local?root=`) store re-exec /proc/self/exe (= ld.so) as a chroot
#     helper, which does not work through this wrapper.
#   * Profiles (nix-env without -p, nix profile, nix-channel) live under
#     NIX_STATE_DIR (default /nix/var/nix/profiles, shared with the system
#     Nix) even with a `local?root=` store; pass an explicit --profile.
#   * Builds in a `local?root=` store are always sandboxed (both 2.8 and
#     2.26 force it for diverted stores, regardless of `sandbox = false` in
#     /etc/nix/nix.conf). Debian's 2.26 defaults to
#     `sandbox-paths = /bin/sh=/usr/bin/bash-static`, which does not exist on
#     bookworm unless bash-static is installed, so a `/bin/sh` builder needs
#     e.g. `sandbox-paths = /bin /lib /lib64 /usr` (works for 2.8 and 2.26)
#     or `sandbox-paths = /bin/sh=DEST/root/usr/bin/bash-static`.
#     `extra-sandbox-paths` is NOT enough for 2.26 (the broken default stays).
#
# Environment knobs:
#   NIX_TRIXIE_SUITE      suite to use (default: trixie)
#   NIX_TRIXIE_MIRROR     Debian archive URL (default: the one this machine's apt
#                         sources use for bookworm main; see apt_mirror below)
#   NIX_TRIXIE_INSECURE=1 allow `[trusted=yes]` as a LAST RESORT if no keyring
#                         with the trixie archive keys can be found (off by
#                         default: the script fails instead).
set -euo pipefail

DEST="${1:-/opt/hostctl-nix-trixie}"
SUITE="${NIX_TRIXIE_SUITE:-trixie}"
MIRROR="${NIX_TRIXIE_MIRROR:-}"
ARCH=amd64
TRIPLET=x86_64-linux-gnu
EXPECTED_VERSION_RE='^nix \(Nix\) 2\.26\.'
MARKER=.hostctl-nix-trixie

log() { printf 'install-nix-trixie: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The wrappers embed DEST literally, and ld.so's --library-path is
# colon-separated, so keep DEST to a boring character set.
case "$DEST" in
    /*) ;;
    *) DEST="$(pwd)/$DEST" ;;
esac
DEST="${DEST%/}"
[[ "$DEST" =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "DEST must match [A-Za-z0-9._/+-]+ (got '$DEST')"
[ "$DEST" != / ] || die "refusing DEST=/"

# Does DEST already hold a working installation? The explicit dummy store
# keeps even a foreign/older wrapper away from /nix/var/nix/db.
installed_ok() {
    local out
    [ -x "$1/bin/nix" ] || return 1
    out="$(NIX_REMOTE=dummy:// "$1/bin/nix" --version 2>/dev/null)" || return 1
    [[ "$out" =~ $EXPECTED_VERSION_RE ]]
}

if installed_ok "$DEST"; then
    log "$DEST already provides $(NIX_REMOTE=dummy:// "$DEST/bin/nix" --version); nothing to do"
    exit 0
fi

# Serialise concurrent runs (e.g. parallel test jobs) on DEST's parent
# directory, then re-check: another run may have finished meanwhile.
mkdir -p "$(dirname "$DEST")"
if command -v flock >/dev/null; then
    exec 9<"$(dirname "$DEST")"
    flock 9
    if installed_ok "$DEST"; then
        log "$DEST was installed by a concurrent run; nothing to do"
        exit 0
    fi
fi

# The Debian archive this machine's apt already uses, so that no mirror is named in the
# repository: the first URI ending in /debian of a `deb` source for bookworm's `main`,
# from /etc/apt/sources.list and sources.list.d (one-line `.list` and deb822 `.sources`).
apt_mirror() {
    local f found
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        case "$f" in
            *.sources) found="$(awk "$DEB822_MIRROR" "$f")" ;;
            *) found="$(awk "$LIST_MIRROR" "$f")" ;;
        esac
        if [ -n "$found" ]; then
            printf '%s\n' "$found"
            return 0
        fi
    done
    return 1
}
# shellcheck disable=SC2016 # awk programs, not shell
LIST_MIRROR='
/^[ \t]*deb[ \t]/ {
    line = $0
    sub(/^[ \t]*deb[ \t]+/, "", line)
    sub(/^\[[^]]*\][ \t]*/, "", line)
    n = split(line, w, /[ \t]+/)
    main = 0
    for (i = 3; i <= n; i++) if (w[i] == "main") main = 1
    if (w[2] == "bookworm" && main && w[1] ~ /\/debian\/?$/) { sub(/\/$/, "", w[1]); print w[1]; exit }
}'
# shellcheck disable=SC2016 # awk programs, not shell
DEB822_MIRROR='
function has(list, word) { return (" " list " ") ~ ("[ \t]" word "[ \t]") }
function flush(   n, u, i) {
    if (has(f["types"], "deb") && has(f["suites"], "bookworm") && has(f["components"], "main") \
        && tolower(f["enabled"]) !~ /^[ \t]*no[ \t]*$/) {
        n = split(f["uris"], u, /[ \t]+/)
        for (i = 1; i <= n; i++) if (u[i] ~ /\/debian\/?$/) { sub(/\/$/, "", u[i]); print u[i]; done = 1; exit }
    }
    split("", f); key = ""
}
/^#/ { next }
/^[ \t]*$/ { flush(); next }
/^[ \t]/ { if (key != "") f[key] = f[key] " " $0; next }
{ i = index($0, ":"); if (i == 0) next; key = tolower(substr($0, 1, i - 1)); f[key] = substr($0, i + 1) }
END { if (!done) flush() }'
if [ -z "$MIRROR" ]; then
    MIRROR="$(apt_mirror)" \
        || die "no Debian archive for bookworm main in /etc/apt/sources.list{,.d}; set NIX_TRIXIE_MIRROR=URL"
    log "using the Debian archive of this machine's apt sources: $MIRROR"
fi

[ "$(dpkg --print-architecture)" = "$ARCH" ] || die "only $ARCH hosts are supported"
for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if [ -e "$DEST" ] && [ ! -e "$DEST/$MARKER" ] && [ -n "$(ls -A "$DEST" 2>/dev/null)" ]; then
    die "$DEST exists, is not empty and was not created by this script; refusing to touch it"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/install-nix-trixie.XXXXXXXX")"
STAGE=""
cleanup() {
    rm -rf "$WORK"
    if [ -n "$STAGE" ]; then rm -rf "$STAGE"; fi
}
trap cleanup EXIT
# apt (as root) downloads as user _apt, which must be able to reach the
# partial/ directories below WORK (mktemp creates it 0700).
chmod 0755 "$WORK"

# ---------------------------------------------------------------------------
# Private apt setup
# ---------------------------------------------------------------------------
mkdir -p "$WORK/state/lists/partial" "$WORK/cache/archives/partial" \
         "$WORK/etc/apt.conf.d" "$WORK/etc/preferences.d" "$WORK/etc/sources.list.d" \
         "$WORK/log"
: > "$WORK/state/status"    # empty dpkg status => download the full closure

# APT_CONFIG is read before anything else, so it can point Dir::Etc::parts
# at an empty directory: the host's /etc/apt/apt.conf.d is not read at all.
# (On this host it contains e.g. docker-clean's APT::Update::Post-Invoke,
# which would delete /var/cache/apt/archives/*.deb, and appstream's DEP-11
# index targets.) Host preferences (pins) are ignored too.
cat > "$WORK/apt.conf" <<EOF
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$WORK/etc/apt.conf.d";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$WORK/etc/preferences.d";
Dir::State "$WORK/state";
Dir::Log "$WORK/log";
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
export APT_CONFIG="$WORK/apt.conf"
APT_OPTS=(
    -o "Dir::Etc::sourcelist=$WORK/sources.list"
    -o "Dir::Etc::sourceparts=/dev/null"
    -o "Dir::State::Lists=$WORK/state/lists"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::State::status=$WORK/state/status"
)

# Is there a keyring with the trixie archive keys? bookworm's
# debian-archive-keyring >= 2023.3+deb12u1 ships them (also as separate
# debian-archive-trixie-*.gpg files).
keyring_has_trixie() {
    local kr="$1"
    [ -r "$kr" ] || return 1
    if command -v gpg >/dev/null; then
        local keys
        keys="$(gpg --batch --no-default-keyring --keyring "$kr" --list-keys 2>/dev/null)" || true
        grep -q '(13/trixie)' <<<"$keys"
    else
        # Without gpg only the keyring files next to it can be checked.
        [ -e "$(dirname "$kr")/debian-archive-trixie-automatic.gpg" ]
    fi
}

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SIGNED="signed-by=$KEYRING"
if ! keyring_has_trixie "$KEYRING"; then
    # Fallback 1: take the newest debian-archive-keyring of bookworm (+
    # updates/backports). That package is verified by the keys the host
    # already trusts, so the chain of trust is kept.
    log "host keyring lacks the trixie keys; fetching a newer debian-archive-keyring from bookworm"
    cat > "$WORK/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR bookworm main
deb [signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [signed-by=$KEYRING] $MIRROR bookworm-backports main
EOF
    apt-get "${APT_OPTS[@]}" update >&2 || true
    apt-get "${APT_OPTS[@]}" install --download-only -y debian-archive-keyring >&2 || true
    mkdir -p "$WORK/keyring"
    for deb in "$WORK"/cache/archives/debian-archive-keyring_*.deb; do
        [ -e "$deb" ] && dpkg-deb -x "$deb" "$WORK/keyring"
    done
    rm -rf "$WORK/state/lists" "$WORK/cache"
    mkdir -p "$WORK/state/lists/partial" "$WORK/cache/archives/partial"
    KEYRING="$WORK/keyring/usr/share/keyrings/debian-archive-keyring.gpg"
    SIGNED="signed-by=$KEYRING"
    if ! keyring_has_trixie "$KEYRING"; then
        # Fallback 2 (LAST RESORT, opt-in only): no signature verification.
        [ "${NIX_TRIXIE_INSECURE:-}" = 1 ] \
            || die "no keyring with the trixie archive keys found (set NIX_TRIXIE_INSECURE=1 to use [trusted=yes])"
        log "WARNING: using [trusted=yes]: trixie packages will NOT be signature-verified"
        SIGNED="trusted=yes"
    fi
fi
printf 'deb [%s] %s %s main\n' "$SIGNED" "$MIRROR" "$SUITE" > "$WORK/sources.list"

# ---------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------
log "downloading nix-bin and its dependency closure from $SUITE"
t0=$(date +%s)
apt-get "${APT_OPTS[@]}" update >&2
apt-get "${APT_OPTS[@]}" install --download-only -y --no-install-recommends nix-bin >&2
t1=$(date +%s)
shopt -s nullglob
debs=("$WORK"/cache/archives/*.deb)
shopt -u nullglob
[ "${#debs[@]}" -gt 0 ] || die "apt downloaded nothing"
log "downloaded ${#debs[@]} packages ($(du -sh "$WORK/cache/archives" | cut -f1)) in $((t1 - t0))s"

# ---------------------------------------------------------------------------
# Unpack into a staging directory next to DEST, then move into place
# ---------------------------------------------------------------------------
STAGE="$(mktemp -d "$DEST.staging.XXXXXXXX")"
chmod 0755 "$STAGE"
mkdir -p "$STAGE/root" "$STAGE/bin"
for deb in "${debs[@]}"; do
    dpkg-deb -x "$deb" "$STAGE/root"
    # shellcheck disable=SC2016 # dpkg-query format, not shell
    dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >> "$STAGE/manifest.unsorted"
done
sort "$STAGE/manifest.unsorted" > "$STAGE/manifest.txt"
rm "$STAGE/manifest.unsorted"

# Merged /usr: trixie ships everything under usr/; mirror the top-level
# compat symlinks so the tree looks like a real trixie root.
for d in lib lib64 bin sbin; do
    if [ ! -e "$STAGE/root/$d" ] && [ -d "$STAGE/root/usr/$d" ]; then
        ln -s "usr/$d" "$STAGE/root/$d"
    fi
done

[ -x "$STAGE/root/usr/bin/nix" ] || die "usr/bin/nix missing from the unpacked nix-bin"
LDSO_REL=""
for cand in "usr/lib/$TRIPLET/ld-linux-x86-64.so.2" "lib/$TRIPLET/ld-linux-x86-64.so.2" \
            usr/lib64/ld-linux-x86-64.so.2 lib64/ld-linux-x86-64.so.2; do
    if [ -e "$STAGE/root/$cand" ] && [ ! -L "$STAGE/root/${cand%%/*}" ]; then
        LDSO_REL="$cand"; break
    fi
done
[ -n "$LDSO_REL" ] || die "no ld-linux-x86-64.so.2 found in the unpacked libc6"
LIBPATH="$DEST/root/usr/lib/$TRIPLET"
if [ -d "$STAGE/root/lib/$TRIPLET" ] && [ ! -L "$STAGE/root/lib" ]; then
    LIBPATH="$LIBPATH:$DEST/root/lib/$TRIPLET"
fi

# Wrappers: one per multi-call name shipped by nix-bin (the required
# nix, nix-store, nix-env, nix-build, nix-instantiate are among them).
names=(nix)
for link in "$STAGE"/root/usr/bin/nix-*; do
    if [ -L "$link" ] && [ "$(readlink "$link")" = nix ]; then
        names+=("$(basename "$link")")
    fi
done
for required in nix-store nix-env nix-build nix-instantiate; do
    [[ " ${names[*]} " == *" $required "* ]] || die "nix-bin does not provide $required"
done
for name in "${names[@]}"; do
    cat > "$STAGE/bin/$name" <<EOF
#!/bin/sh
# Generated by tests/support/install-nix-trixie.sh: Debian $SUITE nix-bin run
# with its own glibc. See that script for the details.
#
# Guard: never let this Nix open the system store (/nix/var/nix/db, owned by
# the system Nix 2.8) by accident. --store / NIX_CONFIG "store = ..." /
# an explicit NIX_REMOTE all take precedence over this default.
if [ -z "\${NIX_REMOTE:-}" ]; then
    NIX_REMOTE=dummy://
    export NIX_REMOTE
fi
# Lets Nix find its own wrappers (build hook, nix-channel, ...).
NIX_BIN_DIR=$DEST/bin
export NIX_BIN_DIR
exec $DEST/root/$LDSO_REL --library-path $LIBPATH --argv0 $name $DEST/root/usr/bin/nix "\$@"
EOF
    chmod 0755 "$STAGE/bin/$name"
done
: > "$STAGE/$MARKER"

# Swap into place (DEST is either absent, empty, or an earlier install of
# ours that failed the check above).
if [ -e "$DEST" ]; then
    OLD="$(mktemp -d "$DEST.old.XXXXXXXX")"
    mv -T "$DEST" "$OLD/dest"
    mv -T "$STAGE" "$DEST"
    rm -rf "$OLD"
else
    mv -T "$STAGE" "$DEST"
fi
STAGE=""

# ---------------------------------------------------------------------------
# Verify (dummy store only: nothing here may touch /nix/var/nix/db)
# ---------------------------------------------------------------------------
version="$(NIX_REMOTE=dummy:// "$DEST/bin/nix" --version)" || die "$DEST/bin/nix --version failed"
[[ "$version" =~ $EXPECTED_VERSION_RE ]] || die "unexpected version: $version"
for name in "${names[@]}"; do
    out="$(NIX_REMOTE=dummy:// "$DEST/bin/$name" --version)" || die "$name --version failed"
    [[ "$out" == "$name (Nix) "* ]] || die "$name --version printed '$out'"
done
two="$(NIX_REMOTE=dummy:// "$DEST/bin/nix-instantiate" --eval -E '1 + 1')" \
    || die "nix-instantiate --eval failed"
[ "$two" = 2 ] || die "nix-instantiate --eval -E '1 + 1' printed '$two'"

log "installed $version into $DEST (wrappers: ${names[*]})"
printf '%s\n' "$version"
