#!/usr/bin/env bash
# Run on the CPU side (Debian 12, with network). Gathers the Debian packages that a model-only build
# (MUSTDROP_VIDEO=OFF) needs and a bare GPU machine lacks into .gpu/deps, made relocatable, so that
# the working tree plus .gpu can be carried there and built offline with scripts/gpu_build.sh.
#   scripts/gpu_prepare.sh
# Then writes .gpu/frames-8.safetensors with the mustdrop of build/ (MUSTDROP_BIN overrides).
# Only .gpu/deps and the frames file are replaced; anything else under .gpu stays.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gpu_dir=$here/.gpu
deps=$gpu_dir/deps
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

packages=(
  # headers and CMake configs (-dev) with the shared libraries they name
  libyaml-cpp-dev libyaml-cpp0.7
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  nlohmann-json3-dev libcli11-dev
  libsentencepiece-dev libsentencepiece0
  # spm_train / spm_encode / spm_decode: the tokenizer tests make their reference with them
  sentencepiece
  # static libgtest + GTestConfig.cmake (the googletest source package is not needed)
  libgtest-dev
  # pkg-config reads sentencepiece.pc; carried for GPU machines that have none
  pkgconf-bin libpkgconf3
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/root  # becomes .gpu/deps
mkdir -p "$work/debs" "$stage"

# apt-get download needs no root; as root, tell apt not to hand the download to the _apt user,
# which cannot write into a private temporary directory.
apt_opts=(-q -o "APT::Sandbox::User=$(id -un)")

# Unpacks the downloaded packages; false if any could not be downloaded.
unpack_downloads() {
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download "${packages[@]}") || return 1
  local deb
  for deb in "$work"/debs/*.deb; do
    dpkg -x "$deb" "$stage" || return 1
    # shellcheck disable=SC2016  # dpkg's own ${field} syntax
    dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb" >>"$work/manifest"
  done
}

# Without the mirror: copies what the installed packages own (files and symlinks, not directories).
copy_installed() {
  local pkg path
  rm -rf "$stage" "$work/manifest" && mkdir -p "$stage"
  for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      echo "gpu_prepare: $pkg is neither downloadable nor installed here" >&2
      return 1
    fi
    dpkg-query -W -f='${Package} ${Version}\n' "$pkg" >>"$work/manifest"
    while IFS= read -r path; do
      if [[ -L $path || -f $path ]]; then
        cp -P --parents "$path" "$stage"
      fi
    done < <(dpkg -L "$pkg")
  done
}

if unpack_downloads; then
  echo "gpu_prepare: unpacked ${#packages[@]} downloaded packages"
else
  echo "gpu_prepare: apt-get download failed; copying the installed packages' files instead" >&2
  copy_installed
fi

# Documentation, sources and packaging metadata are of no use to a build, nor is the static
# yaml-cpp (its CMake config imports the shared library).
rm -rf "$stage"/usr/share/{doc,man,lintian,aclocal} "$stage"/usr/src
rm -f "$stage/usr/lib/$multiarch/libyaml-cpp.a"

# The carried libraries and tools find each other through $ORIGIN-relative RUNPATHs: libspdlog
# needs libfmt, spm_* need libsentencepiece*, pkgconf needs libpkgconf, and the GPU machine's loader
# knows none of these. patchelf only runs here, so it may come from a package into the temp dir.
patchelf=$(command -v patchelf || true)
if [[ -z $patchelf ]] && (cd "$work" && apt-get "${apt_opts[@]}" download patchelf >/dev/null 2>&1); then
  dpkg -x "$work"/patchelf_*.deb "$work/patchelf"
  patchelf=$work/patchelf/usr/bin/patchelf
fi
libdir=$stage/usr/lib/$multiarch
is_elf() { [[ -f $1 && ! -L $1 && $(head -c4 "$1") == $'\x7fELF' ]]; }
needs_carried_lib() {
  local lib
  for lib in $("$patchelf" --print-needed "$1"); do
    [[ -e $libdir/$lib ]] && return 0
  done
  return 1
}
if [[ -n $patchelf ]]; then
  for f in "$libdir"/*.so* "$stage"/usr/bin/*; do
    if is_elf "$f" && needs_carried_lib "$f"; then
      # shellcheck disable=SC2016  # $ORIGIN is for the loader, not the shell
      case $f in
        "$libdir"/*) "$patchelf" --set-rpath '$ORIGIN' "$f" ;;
        *) "$patchelf" --set-rpath "\$ORIGIN/../lib/$multiarch" "$f" ;;
      esac
    fi
  done
else
  echo "gpu_prepare: no patchelf (not installed, not downloadable): the carried spm_* and pkgconf" \
       "will need LD_LIBRARY_PATH=.gpu/deps/usr/lib/$multiarch on the GPU machine" >&2
fi

# pkg-config files name /usr; ${pcfiledir} (pkg-config and pkgconf both define it) makes them
# point at wherever the .pc file lies.
while IFS= read -r -d '' pc; do
  rel=$(realpath --relative-to="$(dirname "$pc")" "$stage/usr")
  sed -E -i "s#(^|[= ]|-I|-L)/usr(/|\$)#\1\${pcfiledir}/$rel\2#g" "$pc"
done < <(find "$stage" -name '*.pc' -print0)

# The CMake package files of these versions derive their prefix from their own location; a /usr
# left outside their "same as the original install" guard would make the build use this
# machine's copy, so stop on one.
if leftovers=$(grep -rn '/usr' --include='*.cmake' "$stage" |
               grep -v -e '_realOrig' -e 'set(_IMPORT_PREFIX "/usr' -e 'set(PACKAGE_PREFIX_DIR "/usr")' -e ':[0-9]*: *#'); then
  echo "gpu_prepare: CMake files still name /usr; fix them up:" >&2
  echo "$leftovers" >&2
  exit 1
fi

sort -o "$stage/PACKAGES" "$work/manifest"
mkdir -p "$gpu_dir"
rm -rf "$deps"
mv "$stage" "$deps"

# The check's frames: the generated sample clip's 8 frames, sampled and preprocessed as `mustdrop
# run` feeds them to LLaVA-1.5 (336 x 336), so the GPU machine needs no video decoding.
mustdrop=${MUSTDROP_BIN:-$here/build/mustdrop}
if [[ ! -x $mustdrop ]]; then
  echo "gpu_prepare: $mustdrop is missing: build first (scripts/setup.sh), then run this again" >&2
  exit 1
fi
clip=$here/build/sample.mp4
[[ -f $clip ]] || "$here/tools/make_sample_video" "$clip"
"$mustdrop" probe "$clip" --frames 8 --size 336 --save-frames "$gpu_dir/frames-8.safetensors" >/dev/null

echo "gpu_prepare: $(du -sh "$deps" | cut -f1) in .gpu/deps, $(du -sh "$gpu_dir" | cut -f1) in .gpu"
tracked_kb=$(cd "$here" && git ls-files -z | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
gpu_kb=$(du -sk "$gpu_dir" | cut -f1)
echo "gpu_prepare: tracked tree ${tracked_kb} KiB + .gpu ${gpu_kb} KiB = $(((tracked_kb + gpu_kb) / 1024)) MiB of the 64 MiB carried"
