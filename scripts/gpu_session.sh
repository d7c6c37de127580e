#!/usr/bin/env bash
# One prepared GPU session, in two parts that fit one command each (docs/gpu.md, "measured on a GPU").
#
#   OUT=gpu_out WHEELS=.whl_a bash scripts/gpu_session.sh a   # self-check part 1, then 01 -> 02 -> 03 (cpu profile)
#   OUT=gpu_out WHEELS=.whl_b bash scripts/gpu_session.sh b   # memory plan, 4-bit + LoRA, the speed bench + profiles
#
# Every step runs under `timeout`; every number goes to a file in $OUT; what one step breaks does not stop the
# next. WHEELS: a folder of wheels for a machine that lacks some of requirements.txt and has no network
# (installed with --target into /tmp/site, first on PYTHONPATH). DEVICE=cpu and PROFILE=smoke try the plumbing
# on a machine without a GPU.
set -u
part=${1:?usage: scripts/gpu_session.sh a|b}
out=${OUT:-gpu_out}
device=${DEVICE:-cuda}
profile=${PROFILE:-cpu}
mkdir -p "$out"
log="$out/log-$part.txt"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run it under timeout, log its time and exit status
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "=== $name (limit ${limit}s): $*" >>"$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc in $(($(date +%s) - t0)) s" >>"$log"
  echo "$name exit=$rc seconds=$(($(date +%s) - t0))" >>"$out/steps-$part.txt"
}

if [ -n "${WHEELS:-}" ]; then
  step install 120 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="$PWD:/tmp/site"
fi
step environment 60 "$py" -c "
import torch, transformers, platform
print('python', platform.python_version(), 'torch', torch.__version__, 'transformers', transformers.__version__)
for name in ('trl', 'datasets', 'peft', 'accelerate', 'papermill', 'bitsandbytes', 'pyarrow', 'pandas', 'tokenizers'):
    try:
        print(name, __import__(name).__version__)
    except Exception as e:
        print(name, 'missing:', type(e).__name__, e)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(torch.cuda.get_device_name(0), 'cc', p.major, p.minor, round(p.total_memory / 2**30, 1), 'GiB')
"
command -v nvidia-smi >/dev/null && step nvidia-smi 30 nvidia-smi

case "$part" in
a)
  step selfcheck-a 200 "$py" scripts/gpu_selfcheck.py --device "$device" \
    --only precision smoke_chain fp16_chain trl_parity card_16gb --json "$out/selfcheck-a.json"
  run_dir=runs/gpu-$profile
  step notebooks-01-03 330 "$py" -m dpo_lab run --profile "$profile" --run-dir "$run_dir" --only 01 02 03
  cp "$run_dir/notebooks/timings.json" "$out/notebook-timings.json" 2>/dev/null
  # the run folder comes back in pieces of at most 15 MB (notebook 04 runs on it elsewhere)
  tar -czf - -C runs "gpu-$profile" | split -b 15M -d - "$out/run-$profile.tgz.part"
  ;;
b)
  step selfcheck-b 240 "$py" scripts/gpu_selfcheck.py --device "$device" \
    --only memory_plan four_bit_lora --json "$out/selfcheck-b.json"
  step selfcheck-bench 300 "$py" scripts/gpu_selfcheck.py --device "$device" \
    --only dpo_step_bench --profile-dir /tmp/profiles --json "$out/selfcheck-bench.json"
  tar -czf "$out/profiles.tgz" -C /tmp profiles 2>/dev/null
  ;;
*)
  echo "unknown part $part: a or b" >&2
  exit 2
  ;;
esac
cat "$out/steps-$part.txt"
