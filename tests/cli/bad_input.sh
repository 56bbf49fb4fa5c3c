#!/usr/bin/env bash
# Runs `asgd train` (or another command) on one kind of bad input and checks that it fails with a non-zero exit
# code and a one-line error on stderr that names what was wrong and where.
#   bad_input.sh ASGD_BINARY CASE
set -uo pipefail
asgd=$1 case=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# An IDX image header: magic, count, rows, cols (big-endian 32-bit).
idx_header() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' 0 0 "$1" "$2")"; for v in "${@:3}"; do
  printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((v >> 24 & 255)) $((v >> 16 & 255)) $((v >> 8 & 255)) $((v & 255)))"; done; }

one_line=1
command=(train)
case "$case" in
  missing_file)
    args=(--dataset libsvm:"$dir/absent.svm"); expect="absent.svm" ;;
  missing_idx_dir)
    args=(--dataset idx:"$dir/absent"); expect="$dir/absent" ;;
  idx_wrong_magic)
    mkdir "$dir/idx"
    { idx_header 8 4 2 2 2; head -c 8 /dev/zero; } > "$dir/idx/train-images-idx3-ubyte"
    { idx_header 8 1 2; printf '\x01\x02'; } > "$dir/idx/train-labels-idx1-ubyte"
    args=(--dataset idx:"$dir/idx"); expect="train-images-idx3-ubyte" ;;
  idx_truncated)
    mkdir "$dir/idx"
    { idx_header 8 3 100 28 28; head -c 1000 /dev/urandom; } > "$dir/idx/train-images-idx3-ubyte"
    { idx_header 8 1 100; head -c 100 /dev/zero; } > "$dir/idx/train-labels-idx1-ubyte"
    args=(--dataset idx:"$dir/idx"); expect="train-images-idx3-ubyte" ;;
  libsvm_malformed_line)
    printf '1 1:0.5 2:1.5\n2 1:0.25 x:3\n1 2:1\n' > "$dir/bad.svm"
    args=(--dataset libsvm:"$dir/bad.svm"); expect="bad.svm:2" ;;
  label_out_of_range)
    printf '1 1:0.5\n2 2:1.5\n1 1:1\n2 2:0.1\n' > "$dir/train.svm"
    printf '1 1:0.5\n7 2:1.5\n' > "$dir/test.svm"
    args=(--dataset libsvm:"$dir/train.svm" --test-dataset libsvm:"$dir/test.svm" --batch 2)
    expect="test.svm:2" ;;
  unknown_config_key)
    printf 'lr = 0.1\nlearning_rate = 0.1\n' > "$dir/run.toml"
    args=(--config "$dir/run.toml"); expect="unknown key 'learning_rate'" ;;
  bad_backend)
    args=(--backend tpu); expect="'tpu'" ;;
  bad_hidden)
    args=(--hidden 256,abc); expect="--hidden" ;;
  unknown_flag)
    args=(--learning-rate 0.1); expect="--learning-rate"; one_line=0 ;;
  idx_test_label_unseen)
    # Training labels 0 and 1, a test label 255: a corrupt byte or files that do not belong
    # together, not a model of 256 classes.
    mkdir "$dir/idx"
    { idx_header 8 3 4 2 2; head -c 16 /dev/urandom; } > "$dir/idx/train-images-idx3-ubyte"
    { idx_header 8 1 4; printf '\x00\x01\x00\x01'; } > "$dir/idx/train-labels-idx1-ubyte"
    { idx_header 8 3 2 2 2; head -c 8 /dev/urandom; } > "$dir/idx/t10k-images-idx3-ubyte"
    { idx_header 8 1 2; printf '\x01\xff'; } > "$dir/idx/t10k-labels-idx1-ubyte"
    args=(--dataset idx:"$dir/idx" --batch 2); expect="row 1 has label 255" ;;
  link_latency_inf)
    args=(--dataset blobs:400,2,2 --workers 2 --link-latency inf); expect="--link-latency" ;;
  link_matrix_negative)
    printf 'link-bandwidth = [[0, -5], [1e6, 0]]\n' > "$dir/run.toml"
    args=(--dataset blobs:400,2,2 --workers 2 --config "$dir/run.toml"); expect="link 0->1" ;;
  max_seconds_nan)
    args=(--dataset blobs:400,2,2 --max-seconds nan); expect="--max-seconds" ;;
  direction_margin_out_of_range)
    printf 'direction-margin = 1.5\n' > "$dir/run.toml"
    args=(--dataset blobs:400,2,2 --workers 2 --config "$dir/run.toml")
    expect="--direction-margin must lie in [0, 1]" ;;
  config_is_directory)
    args=(--config "$dir"); expect="not a regular file" ;;
  summary_unwritable)
    # Found before training, not after it.
    args=(--dataset blobs:400,2,2 --summary "$dir/absent/s.json"); expect="--summary" ;;
  csv_continuous_label)
    # A regression file: the label column holds measurements, not classes.
    for i in $(seq 1 40); do echo "$i.25,$((i % 7)),$((i % 5))"; done > "$dir/reg.csv"
    args=(--dataset csv:"$dir/reg.csv" --model softmax)
    expect="data row 1 has the label 1.25, which is not a class"; one_line=0 ;;
  negative_seed)
    args=(--dataset blobs:400,2,2 --seed -1); expect="--seed"; one_line=0 ;;
  hidden_too_large)
    # Known once the data is read (its feature count), after the line that describes it.
    args=(--dataset blobs:400,2,2 --hidden 4000000000,4000000000); expect="use narrower layers"
    one_line=0 ;;
  info_config)
    # `info` takes no config: the flag is refused as such, the file (whatever it holds) unread.
    printf 'learning_rate = 0.1\n' > "$dir/run.toml"
    command=(info); args=(-c "$dir/run.toml"); expect="-c"; one_line=0 ;;
  unknown_command)
    command=(trian); args=(); expect="unknown command 'trian'" ;;
  *)
    echo "unknown case $case" >&2; exit 2 ;;
esac

if [[ ${command[0]} == train ]]; then command+=(--epochs 0.01 --no-progress); fi
"$asgd" "${command[@]}" "${args[@]}" >"$dir/out" 2>"$dir/err"
status=$?
if ((status == 0)); then
  echo "FAIL: asgd exited 0 on bad input ($case)"; cat "$dir/err"; exit 1
fi
if ! grep -qF -- "$expect" "$dir/err"; then
  echo "FAIL: the error does not mention '$expect':"; cat "$dir/err"; exit 1
fi
if grep -qF "unknown key" "$dir/err" && [[ $case != unknown_config_key ]]; then
  echo "FAIL: the config file was read:"; cat "$dir/err"; exit 1
fi
if ((one_line)) && [[ $(grep -c . "$dir/err") -ne 1 ]]; then
  echo "FAIL: expected a one-line error, got:"; cat "$dir/err"; exit 1
fi
echo "ok ($case, exit $status): $(cat "$dir/err")"
