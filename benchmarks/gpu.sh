#!/usr/bin/env bash
# The GPU benchmark in one short lease (issue 15, item 3): benchmarks/bench_gpu.py on a lent
# H100/H200, with fairlens and the packages that machine lacks installed from wheels carried with
# the working tree (that machine has no network). Installing fairlens there, on its Python 3.12,
# is itself a check: pip refuses a wheel whose Requires-Python excludes 3.12.
#
# Two steps, on two machines:
#
#   1. Here, on the development machine:      bash benchmarks/gpu.sh --build-wheels
#      Builds the fairlens wheel from the working tree (pip wheel --no-deps --no-build-isolation:
#      no network) into benchmarks/wheels/, and puts beside it the wheels of CARRIED (below),
#      pinned to the versions installed in .venv, for CPython 3.12 on x86-64 Linux:
#        a. a wheel of that name and version already in the folder is kept;
#        b. else `pip download --no-deps --only-binary=:all: --python-version 3.12 ...` from PyPI
#           (this machine, the other developers' and CI reach PyPI; the GPU machine does not);
#        c. else, offline, the installed pure-Python (py3-none-any) distribution is repacked from
#           .venv into a wheel (its files as RECORD lists them, with a fresh RECORD). This cannot
#           work for multiprocess: .venv holds its Python-3.11 build (py311-none-any) and 3.12
#           needs its py312 wheel, so a fully offline build needs that wheel put in the folder by
#           hand (multiprocess-<version>-py312-none-any.whl).
#      Anything still missing is named, with where it was looked for, and the step fails.
#      The folder holds about 3 MB. It must not be committed; it travels with `carry`.
#
#   2. On the GPU machine, through the device tool (one call; about 8 minutes on an H100):
#        run(command="bash benchmarks/gpu.sh", carry=["benchmarks/wheels"], timeout_s=600)
#      a. checks the wheel folder (one wheel per CARRIED name, plus fairlens);
#      b. installs every wheel there into $FAIRLENS_SITE (default /tmp/fairlens-site) with
#         `pip install --no-index --no-deps --target` (nothing in the image's environment changes;
#         pip checks fairlens' Requires-Python against that Python) and puts it first on PYTHONPATH;
#      c. imports fairlens and transformer_lens from there (fairlens must come from the wheel, not
#         the checkout) and lists every requirement of fairlens and transformer-lens that the
#         machine does not satisfy (information: e.g. wandb and plotly are declared but neither
#         imported by the benchmark nor carried);
#      d. runs `benchmarks/bench_gpu.py --device cuda` (arguments given to this script are passed
#         on, e.g. `bash benchmarks/gpu.sh --layers 4 --quick` for a smoke run) under
#         `timeout $BENCH_TIMEOUT` (default 450 s); bench_gpu.py rewrites its JSON after every
#         section, so a run cut short still leaves the sections it finished;
#      e. copies the JSON (benchmarks/results/gpu-cuda.json) and the log to $OUT when the device
#         tool sets it.
#
# Other modes:  --check   check the wheel folder only (no install, no GPU needed)
#               --help    this text
# Environment:  PYTHON (default: python3 for the run, .venv/bin/python for --build-wheels),
#               FAIRLENS_WHEELS (default benchmarks/wheels), FAIRLENS_SITE, BENCH_TIMEOUT, OUT.
#
# Verified here (CPU machine, Python 3.11, no GPU; 2026-12-06): --help; --check; --build-wheels
# (9 wheels downloaded, transformers-stream-generator repacked: PyPI has only its sdist); the
# wheels installed by Python 3.12.1's pip with --target (with pyproject's current
# requires-python "<3.12" pip refuses fairlens, as it should; with "<3.14" all 11 install); and
# the whole run step on the CPU with the same script (PYTHON=.venv/bin/python, wheels for 3.11,
# `bash benchmarks/gpu.sh --device cpu --quick --threads 1`: install, report, benchmark, $OUT).
# NOT verified: anything on a GPU machine: whether the image's packages (torch 2.11, transformers
# 5.17, numpy 2.5, pyarrow, as device KINDS.md reads them) import with these wheels, every CUDA
# path of bench_gpu.py (8B build on the device, TL twin, compile + CUDA graphs), its timings and
# the 8-minute budget. The first lent GPU is the first real run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${FAIRLENS_WHEELS:-$ROOT/benchmarks/wheels}"
SITE="${FAIRLENS_SITE:-/tmp/fairlens-site}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-450}"

# What the GPU image lacks (device KINDS.md, package list read 2026-11-17) and fairlens' import,
# transformer-lens' import, or this benchmark needs; the rest of transformer-lens' and fairlens'
# declared requirements are either in the image or not imported here (reported in step c).
CARRIED=(
    transformer-lens             # the TL extraction path
    better-abc                   # imported by transformer_lens
    datasets dill multiprocess   # imported by transformer_lens (utilities, evals)
    fancy-einsum typeguard beartype transformers-stream-generator  # declared by transformer-lens
    gguf                         # declared by fairlens (GGUF loading)
)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

norm() { echo "$1" | tr '[:upper:]' '[:lower:]' | tr -- '-.' '__'; }  # a distribution name as wheel file names spell it

wheel_of() {  # the wheel file(s) of a distribution in the folder
    local n
    n="$(norm "$1")"
    compgen -G "$WHEELS/${n}-[0-9]*.whl" || true
}

check_wheels() {
    local missing=() dup=() name files
    for name in fairlens "${CARRIED[@]}"; do
        files="$(wheel_of "$name")"
        if [[ -z "$files" ]]; then
            missing+=("$name")
        elif [[ "$(echo "$files" | wc -l)" -gt 1 ]]; then
            dup+=("$name")
        fi
    done
    if ((${#missing[@]} + ${#dup[@]})); then
        ((${#missing[@]})) && echo "gpu.sh: missing wheels in $WHEELS: ${missing[*]}" >&2
        ((${#dup[@]})) && echo "gpu.sh: several versions in $WHEELS (keep one): ${dup[*]}" >&2
        echo "gpu.sh: build them on the development machine with 'bash benchmarks/gpu.sh" \
            "--build-wheels' and pass carry=[\"benchmarks/wheels\"] to the device tool." >&2
        return 2
    fi
    echo "wheels in $WHEELS:"
    (cd "$WHEELS" && ls -1s --block-size=K ./*.whl | sed 's/^/  /')
}

repack() {  # repack an installed pure-Python distribution of .venv into a wheel (offline)
    "$PY" - "$1" "$WHEELS" <<'PYEOF'
import base64, hashlib, importlib.metadata as md, sys, zipfile
from pathlib import Path

name, out = sys.argv[1], Path(sys.argv[2])
dist = md.distribution(name)
meta = dist.read_text("WHEEL") or ""
tags = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Tag:")]
pure = "Root-Is-Purelib: true" in meta
ok = pure and tags and all(t.split("-")[1:] == ["none", "any"] and t.split("-")[0] in ("py3", "py2.py3") for t in tags)
if not ok:
    sys.exit(f"  cannot repack {name}: installed as {tags or '?'} (not py3-none-any)")
files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)]
info = next(str(f).split("/")[0] for f in files if str(f).split("/")[0].endswith(".dist-info"))
skip = {f"{info}/{x}" for x in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
stem = info.removesuffix(".dist-info")
path = out / f"{stem}-{tags[0]}.whl"
record = []
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
    for f in sorted(files, key=lambda f: (str(f).startswith(info), str(f))):
        arc = str(f).replace("\\", "/")
        if arc in skip:
            continue
        data = Path(dist.locate_file(f)).read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
        whl.writestr(arc, data)
    record.append(f"{info}/RECORD,,")
    whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
print(f"  repacked {path.name} from {Path(dist.locate_file(info)).parent}")
PYEOF
}

build_wheels() {
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    mkdir -p "$WHEELS"
    echo "building the fairlens wheel from $ROOT (no network) ..."
    rm -f "$WHEELS"/fairlens-*.whl
    local tmp
    tmp="$(mktemp -d)"  # a copy, so that no build/ or egg-info lands in the checkout
    tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md fairlens |
        tar -C "$tmp" -xf -
    "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index --wheel-dir "$WHEELS" "$tmp" ||
        { rm -rf "$tmp"; return 2; }
    rm -rf "$tmp"
    local failed=() name version n
    for name in "${CARRIED[@]}"; do
        version="$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name" 2>/dev/null)" || {
            echo "  $name is not installed in $PY's environment (run make setup first)" >&2
            failed+=("$name")
            continue
        }
        n="$(norm "$name")"
        for f in $(wheel_of "$name"); do  # keep one version: the one .venv has
            [[ "$(basename "$f")" == "$n-$version-"* ]] || rm -f "$f"
        done
        [[ -n "$(wheel_of "$name")" ]] && { echo "  have $(basename "$(wheel_of "$name")")"; continue; }
        if "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any --disable-pip-version-check --retries 1 --timeout 20 \
            -d "$WHEELS" "$name==$version" 2>/dev/null; then
            echo "  downloaded $(basename "$(wheel_of "$name")")"
        elif repack "$name"; then
            :
        else
            failed+=("$name==$version")
        fi
    done
    if ((${#failed[@]})); then
        echo "gpu.sh: could not get wheels for: ${failed[*]}" >&2
        echo "  looked in $WHEELS, on PyPI (pip download, CPython 3.12, x86-64 Linux) and in" \
            "$PY's site-packages (pure-Python repack); put wheels for CPython 3.12 there by hand." >&2
        return 2
    fi
    check_wheels
    echo "total: $(du -sh "$WHEELS" | cut -f1). On the GPU machine:"
    echo '  run(command="bash benchmarks/gpu.sh", carry=["benchmarks/wheels"], timeout_s=600)'
}

report() {  # step c: imports, origin, unmet requirements (information)
    "$PY" -P - "$SITE" <<'PYEOF'  # -P: not the checkout's fairlens (cwd)
import importlib.metadata as md, sys
from packaging.requirements import Requirement

site = sys.argv[1]
import fairlens, transformer_lens  # noqa: E401

print(f"python {sys.version.split()[0]}: fairlens {md.version('fairlens')} from {fairlens.__file__}")
print(f"transformer_lens {md.version('transformer-lens')} from {transformer_lens.__file__}")
if not fairlens.__file__.startswith(site):
    sys.exit(f"gpu.sh: fairlens was imported from {fairlens.__file__}, not from the wheel in {site}")
for dist in ("fairlens", "transformer-lens"):
    unmet = []
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            unmet.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req} (have {have})")
    print(f"{dist}: requirements this machine does not meet: {', '.join(unmet) if unmet else 'none'}")
PYEOF
}

run_bench() {
    PY="${PYTHON:-python3}"
    check_wheels
    "$PY" -c 'import sys, torch, transformers; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, cuda {torch.cuda.is_available()}")'
    nvidia-smi -L 2>/dev/null || true
    rm -rf "$SITE"
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE ..."
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl; then
        echo "gpu.sh: pip could not install the wheels on $("$PY" --version) (if it names" \
            "Requires-Python: fairlens' pyproject.toml must allow this version)" >&2
        return 3
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    report
    mkdir -p "$ROOT/benchmarks/results"
    local json="$ROOT/benchmarks/results/gpu-cuda.json" log="$ROOT/benchmarks/results/gpu-cuda.log"
    local rc=0
    set +e
    timeout --kill-after=30 "$BENCH_TIMEOUT" env PYTHONUNBUFFERED=1 \
        "$PY" "$ROOT/benchmarks/bench_gpu.py" --device cuda --out "$json" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    ((rc == 124)) && echo "gpu.sh: bench_gpu.py ran past $BENCH_TIMEOUT s; the JSON holds the sections it finished" >&2
    if [[ -n "${OUT:-}" ]]; then
        cp -f "$json" "$log" "$OUT"/ 2>/dev/null || true
        echo "copied $(basename "$json") and $(basename "$log") to \$OUT"
    fi
    return "$rc"
}

case "${1:-}" in
-h | --help) usage ;;
--check) check_wheels ;;
--build-wheels) build_wheels ;;
*) run_bench "$@" ;;
esac
