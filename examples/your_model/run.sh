#!/usr/bin/env bash
# Your own model, end to end: train the three user models of tests/fixtures/mymodels.py on mnist-5k,
# then attack, spectral, units, figure5 and curves on each through the CLI. Run it from anywhere:
#   bash examples/your_model/run.sh [WORKDIR]        (default WORKDIR: ./your-model-demo)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-your-model-demo}"
mkdir -p "$work/out" && cd "$work"
cp "$here/../../tests/fixtures/mymodels.py" "$here/train.py" .
python train.py
for spec in lenet:grey_test.npz:digits:1,28,28:fc1 \
            colour_cnn:colour_test.npz:colour_digits:3,32,32:4 \
            resnet:colour_test.npz:colour_digits:3,32,32:block; do
    IFS=: read -r name tensors images shape layer <<< "$spec"
    model=(mymodels:"$name" --weights "$name.safetensors")
    intriguing attack "${model[@]}" --tensors "$tensors" --n 100 --json "out/$name-attack.json" --save "out/$name-adv.safetensors"
    intriguing spectral "${model[@]}" --input-shape "$shape" --json "out/$name-spectral.json"
    intriguing units "${model[@]}" --images "$images" --layer "$layer" --json "out/$name-units.json"
    intriguing figure5 "${model[@]}" --images "$images" --n 4 --out "out/$name-fig5"
    intriguing curves "${model[@]}" --tensors "$tensors" --eps 0.5,1,2 --norm l2 --n 100 \
        --json "out/$name-curves.json" --plot "out/$name-curves.png"
done
