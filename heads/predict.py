"""python -m heads.predict: question type, sentiment and named entities for each text, from one encoder pass.

    python -m heads.predict "Who founded Apple in California?" "What a dull, lifeless film."
    python -m heads.predict --input texts.txt          # one text per line, or .jsonl with "text"
    cat texts.txt | python -m heads.predict -
    python -m heads.predict --model runs/finetuned "..."   # a model saved by python -m heads.train
    python -m heads.predict --with-embedding "..."         # and the sentence embedding, from the same pass

Prints one JSON record per text:
    {"text", "question_type": {"label", "score"}, "sentiment": {"label", "score"},
     "entities": [{"text", "label", "start", "end", "score"}], "embedding": [384 floats] with --with-embedding}
`start`/`end` are character offsets into the text. The embedding is the one `minilm.embed` gives
for the text when the heads sit on the frozen stock backbone (the shipped ones do); a model saved
with a trained backbone gives that backbone's vector instead. The default model is the heads shipped in
weights/heads/, trained on the frozen stock all-MiniLM-L6-v2 (their scores are in its config.json).

Texts longer than the encoder's 256 tokens are read for entities in overlapping windows, each token
taking its label from the window where it has the most context, so no entity past token 256 is
lost. Everything outside the encoder is linear in the text's length. The sentence heads see the first
window, which is exactly the truncated text `minilm.embed` embeds.
"""

from __future__ import annotations

import argparse
import json
import sys

from minilm.base.textio import atomic_output, json_vector
from minilm.cli import ArgumentParser, add_input_arguments, check_output_path, gather_texts, positive_int, run

from .predictor import MultiTaskPredictor


def json_line(record: dict) -> str:
    """One record as a JSON line; an "embedding" (last) is written to 9 significant digits, as minilm.embed's
    jsonl writes it (json_vector): the same float32 values in half the characters of repr."""
    # allow_nan=False: a NaN score would print as NaN, which is not JSON; it is a ValueError (one line) instead
    if "embedding" not in record:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    rest = json.dumps({k: v for k, v in record.items() if k != "embedding"}, ensure_ascii=False, allow_nan=False)
    return f'{rest[:-1]}, "embedding": {json_vector(record["embedding"])}}}'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m heads.predict",
        description="Question type, sentiment and entities for each text, as JSON lines.",
    )
    add_input_arguments(parser)
    parser.add_argument(
        "--model", "-m", default=None, help="a folder saved by python -m heads.train (default: weights/heads)"
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write the JSON lines here (atomically) instead of stdout"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    parser.add_argument("--batch-size", "-b", type=positive_int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--with-embedding",
        action="store_true",
        help='add each text\'s sentence embedding ("embedding": the vector minilm.embed gives) from the same pass',
    )
    return parser.parse_args(argv)


def predict(args: argparse.Namespace) -> int:
    texts = gather_texts(args, default=None)
    output = check_output_path(args.output, args.force)
    predictor = MultiTaskPredictor.from_folder(args.model, args.device)
    records = predictor.predict(texts, args.batch_size, with_embedding=args.with_embedding)
    lines = "".join(json_line(r) + "\n" for r in records)
    if output:
        with atomic_output(output, binary=False) as f:
            f.write(lines)
    else:
        sys.stdout.write(lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: predict(args))


if __name__ == "__main__":
    sys.exit(main())
